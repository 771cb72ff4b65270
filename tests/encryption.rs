//! Card data at rest, through the whole gateway over real TLS: writes reach
//! the customer database only as `mg2.` envelopes (bound to their account), reads show the masked
//! last four, decryption needs a PMO grant, tampered envelopes are masked and
//! counted, keys rotate and retire, the blind index searches without the
//! number, and the gateway refuses to start without its keys.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use maskgate::class::FieldClass;
use maskgate::crypto::{Kek, Keyring, KeyringOptions};
use serde_json::{json, Value};

const IT_REASON: &str = "CHG-1234 chargeback dispute";

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";

// Luhn-valid test card numbers (checked by `the_card_scanner_finds_cards_in_any_spelling`).
const VISA: &str = "4111 1111 1111 1111";
const VISA_13: &str = "4222222222222";
const VISA_2: &str = "4012 8888 8888 1881";
const MASTERCARD: &str = "5500-0000-0000-0004";
const MASTERCARD_2: &str = "5105105105105100";
const AMEX: &str = "3782 822463 10005";
const DISCOVER: &str = "6011111111111117";
const JCB: &str = "3530111333300000";
const DINERS: &str = "30569309025904";

// ---------------------------------------------------------------------------
// helpers

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn luhn_valid(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &c) in d.iter().rev().enumerate() {
        let mut v = u32::from(c - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

/// Every Luhn-valid run of 13–19 digits in `text`. A run may have single
/// spaces or dashes between its digits (`4111 1111 1111 1111`); in a longer
/// run every 13–19 digit window is checked.
fn card_runs(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut run = Vec::new();
        let mut j = i;
        loop {
            if j < b.len() && b[j].is_ascii_digit() {
                run.push(b[j]);
                j += 1;
            } else if j + 1 < b.len() && matches!(b[j], b' ' | b'-') && b[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&run.len()) {
            if luhn_valid(&run) {
                out.push(String::from_utf8(run).unwrap());
            }
        } else if run.len() > 19 {
            'windows: for len in 13..=19 {
                for w in run.windows(len) {
                    if luhn_valid(w) {
                        out.push(String::from_utf8(w.to_vec()).unwrap());
                        break 'windows;
                    }
                }
            }
        }
        i = j;
    }
    out
}

/// The longest run of consecutive ASCII digits.
fn longest_digit_run(text: &str) -> usize {
    let mut best = 0;
    let mut cur = 0;
    for b in text.bytes() {
        if b.is_ascii_digit() {
            cur += 1;
            best = best.max(cur);
        } else {
            cur = 0;
        }
    }
    best
}

/// How a billing read shows an envelope: twelve stars and the last four.
fn masked(card: &str) -> String {
    let d = digits(card);
    format!("************{}", &d[d.len() - 4..])
}

fn store_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("accounts.jsonl")).unwrap()
}

fn store_accounts(dir: &Path) -> Vec<Value> {
    store_text(dir)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stored(dir: &Path, id: &str) -> Value {
    store_accounts(dir)
        .into_iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the database"))
}

/// The stored `cards[i].card_number`.
fn stored_card(dir: &Path, id: &str, i: usize) -> String {
    stored(dir, id)["cards"][i]["card_number"]
        .as_str()
        .unwrap_or_else(|| panic!("{id}: no stored card {i}"))
        .to_owned()
}

/// The keyring the gateway uses, loaded read-only to check what it wrote.
fn keyring(dir: &Path) -> Keyring {
    let kek = Kek::from_file(&dir.join("keys/kek")).unwrap();
    Keyring::load(
        &dir.join("keys/keyring.mgkr"),
        kek,
        KeyringOptions::default(),
    )
    .unwrap()
}

fn keyring_path(dir: &Path) -> PathBuf {
    dir.join("keys/keyring.mgkr")
}

fn kek_path(dir: &Path) -> PathBuf {
    dir.join("keys/kek")
}

/// A secure gateway (fresh keyring, audit log) in front of an empty demo database.
async fn secure_env(tag: &str, options: Options) -> Env {
    let dir = temp_dir(tag);
    let upstream = demo_upstream(&dir, 0).await;
    Env::secure(dir, upstream, options, |_| {}).await
}

/// Stops the gateway and starts a new one on the same directory (keyring,
/// grants, audit log) and the same database: it loads the keyring afresh.
async fn restart(mut env: Env, options: Options) -> Env {
    if let Some(g) = env.gateway.take() {
        g.shutdown().await;
    }
    let Env { dir, upstream, .. } = env;
    Env::secure(dir, upstream, options, |_| {}).await
}

async fn send(client: &TestClient, method: Method, path: &str, ctype: &str, body: &str) -> Reply {
    client
        .send(method, path, &[("content-type", ctype)], body.as_bytes())
        .await
        .unwrap()
}

/// A request straight to the demo database over plain HTTP, bypassing the gateway.
async fn upstream_send(env: &Env, method: Method, path: &str, body: &Value) -> (StatusCode, Value) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", env.upstream.addr))
        .header("content-type", JSON)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `maskgate_envelope_integrity_errors_total`, from `GET /_maskgate/metrics`.
async fn integrity_errors(env: &Env) -> u64 {
    let r = env
        .client(Some("security-auditor"), false)
        .get("/_maskgate/metrics")
        .await;
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("maskgate_envelope_integrity_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("metric maskgate_envelope_integrity_errors_total")
}

/// A grant from pmo-approver to it-data-management for `accounts` and `classes`.
async fn issue_grant(env: &Env, accounts: &[&str], classes: &[&str], uses: u32) -> String {
    let body = json!({
        "grantee": "it-data-management",
        "scope": {"kind": "accounts", "accounts": accounts},
        "classes": classes,
        "reason": IT_REASON,
        "validity_minutes": 30,
        "max_uses": uses,
    });
    let r = send(
        &env.client(Some("pmo-approver"), false),
        Method::POST,
        "/_maskgate/grants",
        JSON,
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "grant: {}", r.text());
    r.json()["grant"]["id"].as_str().unwrap().to_owned()
}

/// it-data-management reads one account asking to decrypt `classes` under `grant`.
async fn granted_read(env: &Env, account: &str, classes: &str, grant: &str) -> Reply {
    env.client(Some("it-data-management"), false)
        .get_with(
            &format!("/accounts/{account}"),
            &[
                ("x-unmask", classes),
                ("x-unmask-reason", IT_REASON),
                ("x-unmask-grant", grant),
            ],
        )
        .await
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_maskgate")
}

fn maskgate<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(bin()).args(args).output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------

#[test]
fn the_card_scanner_finds_cards_in_any_spelling() {
    for card in [
        VISA,
        VISA_13,
        VISA_2,
        MASTERCARD,
        MASTERCARD_2,
        AMEX,
        DISCOVER,
        JCB,
        DINERS,
    ] {
        assert!(luhn_valid(digits(card).as_bytes()), "{card}");
        assert_eq!(
            card_runs(&format!("x\"{card}\"y")),
            vec![digits(card)],
            "{card}"
        );
    }
    // a card run on from other digits is still found (as some window)
    assert!(!card_runs("ACC-200001 4111-1111-1111-1111").is_empty());
    assert!(card_runs("4111111111111112").is_empty());
    assert!(card_runs("\"ACC-200001\",\"555-0100\",\"12/29\"").is_empty());
    assert!(card_runs("mg1.k1.1111.q83vEjRWeJq83vEjRWeJ").is_empty());
}

/// Checklist: writes in JSON, NDJSON and CSV bodies, PATCH and PUT, leave
/// zero Luhn-valid digit runs in the database's file; every stored card is
/// an `mg1.` envelope that opens to exactly what was written; billing reads
/// show the masked last four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_json_ndjson_csv_patch_and_put_reach_the_database_only_as_envelopes() {
    let env = secure_env("at-rest", Options::default()).await;
    let billing = env.client(Some("billing"), false);

    // JSON: a card as a string with spaces, and one as a JSON number
    let r = send(
        &billing,
        Method::POST,
        "/accounts",
        JSON,
        &json!({
            "id": "ACC-200001",
            "name": "Ada Lovelace",
            "notes": "prefers paper bills",
            "cards": [
                {"card_number": VISA, "card_expiry": "12/29", "cardholder": "Ada Lovelace"},
                {"card_number": 4_222_222_222_222u64, "card_expiry": "01/30"},
            ],
        })
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], masked(VISA));
    assert_eq!(r.json()["cards"][1]["card_number"], masked(VISA_13));
    assert!(card_runs(&r.text()).is_empty(), "{}", r.text());
    assert!(
        !r.text().contains("mg1.") && !r.text().contains("mg2."),
        "billing was shown an envelope: {}",
        r.text()
    );

    // NDJSON import
    let nd = format!(
        "{}\n{}\n",
        json!({"id": "ACC-200002", "name": "Grace Hopper", "cards": [{"card_number": AMEX, "card_expiry": "03/28"}]}),
        json!({"id": "ACC-200003", "name": "Alan Turing", "cards": [{"card_number": DISCOVER}]}),
    );
    let r = send(
        &billing,
        Method::POST,
        "/imports/accounts.ndjson",
        NDJSON,
        &nd,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["imported"], 2);

    // CSV import (one card quoted with spaces)
    let csv = format!(
        "id,name,card_number,card_expiry,notes\r\nACC-200004,Edsger Dijkstra,{MASTERCARD},07/27,call after 5pm\r\nACC-200005,Barbara Liskov,\"{VISA_2}\",11/31,\r\n"
    );
    let r = send(&billing, Method::POST, "/imports/accounts.csv", CSV, &csv).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["imported"], 2);

    // PATCH replaces ACC-200001's cards; PUT replaces ACC-200003 whole
    let r = send(
        &billing,
        Method::PATCH,
        "/accounts/ACC-200001",
        JSON,
        &json!({"cards": [{"card_number": JCB, "card_expiry": "09/30"}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], masked(JCB));
    let r = send(
        &billing,
        Method::PUT,
        "/accounts/ACC-200003",
        JSON,
        &json!({"id": "ACC-200003", "name": "Alan Turing", "cards": [{"card_number": DINERS}]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], masked(DINERS));

    // at rest: no clear card anywhere in the file
    let file = store_text(&env.dir);
    assert_eq!(
        card_runs(&file),
        Vec::<String>::new(),
        "clear card numbers at rest"
    );
    for card in [
        VISA,
        VISA_13,
        VISA_2,
        MASTERCARD,
        MASTERCARD_2,
        AMEX,
        DISCOVER,
        JCB,
        DINERS,
    ] {
        assert!(
            !file.contains(&digits(card)) && !file.contains(card),
            "{card} at rest"
        );
    }
    // every stored card is an envelope that opens to exactly what was written
    let ring = keyring(&env.dir);
    let want: [(&str, &str, bool); 5] = [
        ("ACC-200001", JCB, true),
        ("ACC-200002", AMEX, true),
        ("ACC-200003", DINERS, true),
        ("ACC-200004", MASTERCARD, false),
        ("ACC-200005", VISA_2, false),
    ];
    let accounts = store_accounts(&env.dir);
    assert_eq!(accounts.len(), want.len());
    let mut cards_seen = 0;
    for account in &accounts {
        for card in account["cards"].as_array().into_iter().flatten() {
            let env_text = card["card_number"]
                .as_str()
                .expect("card_number is a string");
            assert!(env_text.starts_with("mg2.k1."), "{env_text}");
            maskgate::crypto::envelope::parse(env_text).expect("a well-formed envelope");
            cards_seen += 1;
        }
    }
    assert_eq!(cards_seen, want.len());
    for (id, card, indexed) in want {
        let env_text = stored_card(&env.dir, id, 0);
        let plain = ring
            .open_for(FieldClass::CardNumber, &env_text, Some(id))
            .unwrap();
        assert_eq!(plain.as_str(), card, "{id}");
        let last4 = &digits(card)[digits(card).len() - 4..];
        assert_eq!(
            env_text.split('.').nth(2),
            Some(last4),
            "{id}: envelope's last four"
        );
        if indexed {
            // JSON and NDJSON writes carry the blind index beside the card
            let bidx = stored(&env.dir, id)["cards"][0]["card_number_bidx"].clone();
            assert_eq!(
                bidx.as_str(),
                Some(
                    ring.blind_index(FieldClass::CardNumber, card)
                        .unwrap()
                        .as_str()
                ),
                "{id}"
            );
        }
    }

    // reads: the masked last four, never the number, never the envelope
    for h2 in [false, true] {
        for role in ["billing", "customer-service"] {
            let c = env.client(Some(role), h2);
            for (id, card, _) in want {
                let r = c.get(&format!("/accounts/{id}")).await;
                assert_eq!(r.status, 200, "{}", r.text());
                assert_eq!(
                    r.json()["cards"][0]["card_number"],
                    masked(card),
                    "{role} {id}"
                );
                assert!(
                    !r.text().contains("mg1.") && !r.text().contains("mg2."),
                    "{role}: {}",
                    r.text()
                );
                assert!(card_runs(&r.text()).is_empty(), "{role}: {}", r.text());
            }
            let list = c.get("/accounts?limit=50").await;
            assert_eq!(list.status, 200);
            assert_eq!(list.json()["accounts"].as_array().unwrap().len(), 5);
            assert!(
                card_runs(&list.text()).is_empty()
                    && !list.text().contains("mg1.")
                    && !list.text().contains("mg2.")
            );
        }
        for export in ["/exports/accounts.ndjson", "/exports/accounts.csv"] {
            let r = env.client(Some("billing"), h2).get(export).await;
            assert_eq!(r.status, 200, "{export}: {}", r.text());
            assert!(r.text().contains(&masked(JCB)), "{export}: {}", r.text());
            assert!(card_runs(&r.text()).is_empty(), "{export}: {}", r.text());
            assert!(
                !r.text().contains("mg1.") && !r.text().contains("mg2."),
                "{export}: {}",
                r.text()
            );
        }
    }
    env.stop().await;
}

/// Checklist: the demo database seeded through the gateway holds only envelopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_seed_through_the_gateway_leaves_no_clear_card_at_rest() {
    let env = secure_env(
        "seed",
        Options {
            encrypt_detected_cards: true,
            ..Options::default()
        },
    )
    .await;
    let accounts = maskgate::demo::data::generate(maskgate::demo::run::DEMO_SEED, 300);
    let in_clear: Vec<String> = accounts
        .iter()
        .flat_map(|a| a["cards"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["card_number"].as_str().map(str::to_owned))
        .collect();
    assert!(in_clear.len() > 100, "the demo data has cards");
    assert!(
        !card_runs(&serde_json::to_string(&accounts).unwrap()).is_empty(),
        "the generated data holds clear cards (so the scan below means something)"
    );
    let n = maskgate::demo::run::seed_through_gateway(env.addr, &env.certs(), accounts)
        .await
        .unwrap();
    assert_eq!(n, 300);
    let file = store_text(&env.dir);
    assert_eq!(card_runs(&file), Vec::<String>::new());
    let ring = keyring(&env.dir);
    let stored_cards: Vec<(String, String)> = store_accounts(&env.dir)
        .iter()
        .flat_map(|a| {
            let id = a["id"].as_str().unwrap_or_default().to_owned();
            a["cards"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |c| Some((id.clone(), c["card_number"].as_str()?.to_owned())))
        })
        .collect();
    assert_eq!(stored_cards.len(), in_clear.len());
    for ((id, stored), clear) in stored_cards.iter().zip(&in_clear) {
        assert!(stored.starts_with("mg2."), "{stored}");
        assert_eq!(
            ring.open_for(FieldClass::CardNumber, stored, Some(id))
                .unwrap()
                .as_str(),
            clear
        );
    }
    env.stop().await;
}

/// Checklist: after `maskgate demo` starts, its database file holds no clear card.
#[test]
fn the_demo_binary_stores_its_cards_encrypted() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("demo-bin");
    let mut child = Command::new(bin())
        .args(["demo", "--dir"])
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ready = false;
    while Instant::now() < deadline && !ready {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                ready = line.contains("Ctrl-C");
                lines.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let file = std::fs::read_to_string(dir.join("demo-data/accounts.jsonl"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "the demo did not start: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("seeded 1200")), "{lines:?}");
    let file = file.unwrap();
    assert_eq!(file.lines().count(), 1200);
    assert_eq!(card_runs(&file), Vec::<String>::new());
    let envelopes = file.matches("\"card_number\":\"mg2.").count();
    assert!(envelopes >= 1000, "only {envelopes} envelopes");
    assert!(!file.contains("\"card_number\":\"4") && !file.contains("\"card_number\":\"5"));
}

struct Refusal {
    what: &'static str,
    method: Method,
    path: &'static str,
    ctype: &'static str,
    body: String,
    names: &'static str,
}

fn refusals() -> Vec<Refusal> {
    vec![
        Refusal {
            what: "json note",
            method: Method::POST,
            path: "/accounts",
            ctype: JSON,
            body: json!({"id": "ACC-200010", "name": "N", "notes": format!("paid with {VISA} today")})
                .to_string(),
            names: "/notes",
        },
        Refusal {
            what: "json nested array element",
            method: Method::POST,
            path: "/accounts",
            ctype: JSON,
            body: json!({"id": "ACC-200011", "contact": {"remarks": ["ok", format!("card {MASTERCARD_2}")]}})
                .to_string(),
            names: "/contact/remarks/1",
        },
        Refusal {
            what: "json number",
            method: Method::POST,
            path: "/accounts",
            ctype: JSON,
            body: r#"{"id":"ACC-200012","ref":6011111111111117}"#.to_owned(),
            names: "/ref",
        },
        Refusal {
            what: "json escaped digits",
            method: Method::POST,
            path: "/accounts",
            ctype: JSON,
            body: r#"{"id":"ACC-200013","notes":"\u0034111111111111111"}"#.to_owned(),
            names: "/notes",
        },
        Refusal {
            what: "json pointer escaping",
            method: Method::POST,
            path: "/accounts",
            ctype: JSON,
            body: json!({"id": "ACC-200014", "a/b": {"x~y": DISCOVER}}).to_string(),
            names: "/a~1b/x~0y",
        },
        Refusal {
            what: "ndjson second line",
            method: Method::POST,
            path: "/imports/accounts.ndjson",
            ctype: NDJSON,
            body: format!(
                "{}\n{}\n",
                json!({"id": "ACC-200015", "name": "Fine", "cards": [{"card_number": VISA}]}),
                json!({"id": "ACC-200016", "notes": format!("backup card {AMEX}")}),
            ),
            names: "/notes",
        },
        Refusal {
            what: "csv notes column",
            method: Method::POST,
            path: "/imports/accounts.csv",
            ctype: CSV,
            body: format!(
                "id,name,card_number,card_expiry,notes\r\nACC-200017,Fine,{VISA},12/29,ok\r\nACC-200018,Leak,,,\"old card {JCB}\"\r\n"
            ),
            names: "notes",
        },
        Refusal {
            what: "patch note",
            method: Method::PATCH,
            path: "/accounts/ACC-200020",
            ctype: JSON,
            body: json!({"notes": format!("new card {VISA_2}")}).to_string(),
            names: "/notes",
        },
        Refusal {
            what: "plain text body",
            method: Method::POST,
            path: "/accounts",
            ctype: "text/plain",
            body: format!("please store {VISA}"),
            names: "text body",
        },
    ]
}

/// Checklist: a card number in a field nobody named is refused with 422
/// naming the field (JSON pointer, CSV column), for JSON, NDJSON and CSV;
/// the database receives nothing; with `encrypt_detected_cards` it is
/// sealed in place instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_number_in_an_unnamed_field_is_refused_naming_the_field() {
    let env = secure_env("refuse", Options::default()).await;
    let billing = env.client(Some("billing"), false);
    // an account without a card, for the PATCH case
    let r = send(
        &billing,
        Method::POST,
        "/accounts",
        JSON,
        r#"{"id":"ACC-200020","name":"Patch Target","notes":"nothing here"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let before = store_text(&env.dir);
    for case in refusals() {
        let r = send(
            &billing,
            case.method.clone(),
            case.path,
            case.ctype,
            &case.body,
        )
        .await;
        assert_eq!(r.status, 422, "{}: {}", case.what, r.text());
        assert_eq!(
            r.error_code(),
            "clear_card_number",
            "{}: {}",
            case.what,
            r.text()
        );
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(case.names),
            "{}: the message must name {}: {message}",
            case.what,
            case.names
        );
        assert!(
            card_runs(&r.text()).is_empty(),
            "{}: {}",
            case.what,
            r.text()
        );
        assert!(
            longest_digit_run(&message) < 8,
            "{}: the message echoes digits: {message}",
            case.what
        );
        // nothing reached the database, not even the valid first NDJSON/CSV record
        assert_eq!(
            store_text(&env.dir),
            before,
            "{}: the database changed",
            case.what
        );
    }
    assert_eq!(card_runs(&store_text(&env.dir)), Vec::<String>::new());
    env.stop().await;

    // The same writes against a scripted upstream: it sees no request at all.
    let (upstream, seen) = scripted_upstream(|_req| async { json_response(201, "{}") }).await;
    let env = Env::secure(
        temp_dir("refuse-scripted"),
        upstream,
        Options::default(),
        |_| {},
    )
    .await;
    let billing = env.client(Some("billing"), true);
    for case in refusals() {
        let r = send(
            &billing,
            case.method.clone(),
            case.path,
            case.ctype,
            &case.body,
        )
        .await;
        assert_eq!(r.status, 422, "{}: {}", case.what, r.text());
    }
    assert_eq!(seen.count(), 0, "a refused write reached the upstream");
    // a compressed write could hide a card: refused, never forwarded
    let r = billing
        .send(
            Method::POST,
            "/accounts",
            &[("content-type", JSON), ("content-encoding", "gzip")],
            b"\x1f\x8b\x08\x00",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 415, "{}", r.text());
    // a write without a content type cannot be inspected: refused
    let r = billing
        .send(
            Method::POST,
            "/accounts",
            &[],
            format!("{{\"notes\":\"{VISA}\"}}").as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 415, "{}", r.text());
    assert_eq!(
        seen.count(),
        0,
        "an uninspectable write reached the upstream"
    );
    env.stop().await;

    // Policy may encrypt such numbers instead: stored as envelopes in place.
    let env = secure_env(
        "refuse-encrypt",
        Options {
            encrypt_detected_cards: true,
            ..Options::default()
        },
    )
    .await;
    let billing = env.client(Some("billing"), false);
    for case in refusals().into_iter().filter(|c| {
        matches!(
            c.what,
            "json note" | "ndjson second line" | "csv notes column"
        )
    }) {
        let r = send(
            &billing,
            case.method.clone(),
            case.path,
            case.ctype,
            &case.body,
        )
        .await;
        assert_eq!(r.status, 201, "{}: {}", case.what, r.text());
    }
    let file = store_text(&env.dir);
    assert_eq!(card_runs(&file), Vec::<String>::new(), "{file}");
    let ring = keyring(&env.dir);
    for (id, card) in [
        ("ACC-200010", VISA),
        ("ACC-200016", AMEX),
        ("ACC-200018", JCB),
    ] {
        let note = stored(&env.dir, id)["notes"].as_str().unwrap().to_owned();
        let token = note
            .split_whitespace()
            .find(|w| w.starts_with("mg1."))
            .unwrap_or_else(|| panic!("{id}: no envelope in the note {note:?}"));
        let plain = ring.open(FieldClass::CardNumber, token).unwrap();
        assert_eq!(digits(&plain), digits(card), "{id}");
        let r = billing.get(&format!("/accounts/{id}")).await;
        assert_eq!(r.status, 200);
        assert!(card_runs(&r.text()).is_empty(), "{}", r.text());
    }
    env.stop().await;
}

/// Checklist: write → read as billing (masked) → a PMO grant → decrypt by
/// it-data-management returns exactly the written value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_round_trips_masked_for_billing_and_clear_only_under_a_grant() {
    let env = secure_env("round-trip", Options::default()).await;
    let billing = env.client(Some("billing"), true);
    for (id, card) in [("ACC-200030", DISCOVER), ("ACC-200031", VISA_2)] {
        let r = send(
            &billing,
            Method::POST,
            "/accounts",
            JSON,
            &json!({"id": id, "name": "Round Trip", "cards": [{"card_number": card, "card_expiry": "10/29"}]})
                .to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    for (id, card) in [("ACC-200030", DISCOVER), ("ACC-200031", VISA_2)] {
        let r = billing.get(&format!("/accounts/{id}")).await;
        assert_eq!(r.json()["cards"][0]["card_number"], masked(card));
        assert!(!r.text().contains(&digits(card)) && !r.text().contains(card));
        // it-data-management without a grant: refused, nothing released
        let r = env
            .client(Some("it-data-management"), false)
            .get_with(
                &format!("/accounts/{id}"),
                &[("x-unmask", "card_number"), ("x-unmask-reason", IT_REASON)],
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(!r.text().contains(&digits(card)));
        // …and its plain read is masked
        let r = env
            .client(Some("it-data-management"), false)
            .get(&format!("/accounts/{id}"))
            .await;
        assert_eq!(r.json()["cards"][0]["card_number"], masked(card));
        // with a grant: exactly the written text
        let grant = issue_grant(&env, &[id], &["card_number"], 1).await;
        let r = granted_read(&env, id, "card_number", &grant).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["cards"][0]["card_number"], card, "{id}");
        // the expiry was not asked for: masked still
        assert_ne!(r.json()["cards"][0]["card_expiry"], "10/29");
        // a grant for one account does not open another
        let other = if id == "ACC-200030" {
            "ACC-200031"
        } else {
            "ACC-200030"
        };
        let grant = issue_grant(&env, &[id], &["card_number"], 1).await;
        let r = granted_read(&env, other, "card_number", &grant).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(card_runs(&r.text()).is_empty());
    }
    env.stop().await;
}

/// Checklist: a flipped character in nonce, ciphertext, tag, key id or last
/// four; an envelope moved to another class; a truncated one; a forgery
/// under another keyring's key — each is masked, never shown raw, never
/// decrypted, and the granted decrypt counts an integrity error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_envelopes_are_masked_and_counted_never_shown_raw() {
    let clock = Arc::new(maskgate::unmask::ManualClock::new(
        std::time::SystemTime::now(),
    ));
    let options = Options {
        clock: Some(clock.clone()),
        ..Options::default()
    };
    // Two keys, so that a key id can be swapped for another real key's.
    let dir = temp_dir("tamper");
    maskgate::demo::run::ensure_keys(&dir).unwrap();
    assert_eq!(keyring(&dir).rotate().unwrap().id, "k2");
    let upstream = demo_upstream(&dir, 0).await;
    let env = Env::secure(dir, upstream, options, |_| {}).await;
    let billing = env.client(Some("billing"), false);
    let r = send(
        &billing,
        Method::POST,
        "/accounts",
        JSON,
        &json!({"id": "ACC-200100", "name": "Good", "cards": [{"card_number": "4111111111111111"}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let good = stored_card(&env.dir, "ACC-200100", 0);
    assert!(good.starts_with("mg2.k2.1111."), "{good}");
    let body = good.rsplit('.').next().unwrap().to_owned();
    let head = &good[..good.len() - body.len()];
    let flip_at = |i: usize| {
        let mut b: Vec<char> = body.chars().collect();
        b[i] = if b[i] == 'A' { 'B' } else { 'A' };
        format!("{head}{}", b.into_iter().collect::<String>())
    };
    // a forgery: same key id and last four, sealed under another keyring's k2
    let other = temp_dir("tamper-foreign");
    let foreign_kek = Kek::generate().unwrap();
    let foreign = Keyring::create(
        &other.join("ring.mgkr"),
        &foreign_kek,
        KeyringOptions::default(),
    )
    .unwrap();
    foreign.rotate().unwrap();
    let forged = foreign
        .seal(FieldClass::CardNumber, "4111111111111111")
        .unwrap();
    assert!(forged.starts_with("mg1.k2.1111."), "{forged}");

    let n = body.len();
    let variants: Vec<(&str, &str, String)> = vec![
        ("nonce", "card_number", flip_at(2)),
        ("ciphertext", "card_number", flip_at(20)),
        ("tag", "card_number", flip_at(n - 5)),
        (
            "unknown key id",
            "card_number",
            good.replacen("mg2.k2.", "mg2.k9.", 1),
        ),
        (
            "other key's id",
            "card_number",
            good.replacen("mg2.k2.", "mg2.k1.", 1),
        ),
        (
            "last four",
            "card_number",
            good.replacen(".1111.", ".1112.", 1),
        ),
        ("moved to card_expiry", "card_expiry", good.clone()),
        (
            "truncated body",
            "card_number",
            good[..good.len() - 7].to_owned(),
        ),
        ("truncated to the header", "card_number", head.to_owned()),
        ("forged under another key", "card_number", forged),
    ];
    let mut accounts = Vec::new();
    for (i, (what, field, value)) in variants.iter().enumerate() {
        assert!(
            *field != "card_number" || value != &good,
            "{what}: the variant must differ"
        );
        let id = format!("ACC-2002{i:02}");
        let mut card = serde_json::Map::new();
        card.insert((*field).to_owned(), Value::String(value.clone()));
        let (status, _) = upstream_send(
            &env,
            Method::POST,
            "/accounts",
            &json!({"id": id, "name": format!("Tampered {what}"), "cards": [card]}),
        )
        .await;
        assert_eq!(status, 201, "{what}");
        accounts.push(id);
    }
    // the good envelope decrypts under a grant (so the failures below are the tampering)
    clock.advance(Duration::from_secs(7 * 60));
    let before = integrity_errors(&env).await;
    let grant = issue_grant(&env, &["ACC-200100"], &["card_number", "card_expiry"], 1).await;
    let r = granted_read(&env, "ACC-200100", "card_number, card_expiry", &grant).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], "4111111111111111");
    assert_eq!(integrity_errors(&env).await, before);

    let cs = env.client(Some("customer-service"), false);
    for ((what, field, value), id) in variants.iter().zip(&accounts) {
        let tail: String = value.rsplit('.').next().unwrap().chars().take(12).collect();
        let shows_nothing_raw = |r: &Reply, who: &str| {
            let t = r.text();
            assert!(
                !t.contains(value.as_str()),
                "{who} {what}: the raw envelope was shown: {t}"
            );
            assert!(
                tail.len() < 8 || !t.contains(&tail),
                "{who} {what}: ciphertext was shown: {t}"
            );
            assert!(
                !t.contains("4111111111111111"),
                "{who} {what}: plaintext: {t}"
            );
            assert!(card_runs(&t).is_empty(), "{who} {what}: {t}");
            let shown = r.json()["cards"][0][*field]
                .as_str()
                .unwrap_or("")
                .to_owned();
            assert!(
                shown.starts_with("************") && shown.len() == 16,
                "{who} {what}: {shown:?} is not a masked display"
            );
        };
        // customer service: masked, no key touched
        let r = cs.get(&format!("/accounts/{id}")).await;
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        shows_nothing_raw(&r, "customer-service");
        // granted decrypt: masked, and counted as an integrity error
        clock.advance(Duration::from_secs(7 * 60));
        let before = integrity_errors(&env).await;
        let grant = issue_grant(&env, &[id.as_str()], &["card_number", "card_expiry"], 1).await;
        let r = granted_read(&env, id, "card_number, card_expiry", &grant).await;
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        shows_nothing_raw(&r, "it-data-management");
        assert_eq!(
            integrity_errors(&env).await,
            before + 1,
            "{what}: the granted decrypt must count one integrity error"
        );
    }
    env.stop().await;
}

/// billing writes one account with one card.
async fn billing_write(env: &Env, id: &str, card: &str) {
    let r = send(
        &env.client(Some("billing"), false),
        Method::POST,
        "/accounts",
        JSON,
        &json!({"id": id, "name": "Rotation", "cards": [{"card_number": card}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Checklist: data under k1, rotate, data under k2, both decrypt; rewrap
/// moves k1 envelopes to k2 without plaintext; retire k1 → a remaining k1
/// envelope is masked and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_rewrap_and_retirement() {
    let env = secure_env("rotate", Options::default()).await;
    let keyring_arg = keyring_path(&env.dir);
    let kek_arg = kek_path(&env.dir);
    // k1: two cards (one will be rewrapped, one left behind)
    billing_write(&env, "ACC-200301", VISA).await;
    billing_write(&env, "ACC-200303", AMEX).await;
    let a_k1 = stored_card(&env.dir, "ACC-200301", 0);
    let c_k1 = stored_card(&env.dir, "ACC-200303", 0);
    assert!(a_k1.starts_with("mg2.k1.") && c_k1.starts_with("mg2.k1."));

    let out = maskgate([
        OsStr::new("keys"),
        OsStr::new("rotate"),
        OsStr::new("--keyring"),
        keyring_arg.as_os_str(),
        OsStr::new("--kek-file"),
        kek_arg.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("k2"), "{}", text(&out.stdout));

    let env = restart(env, Options::default()).await;
    billing_write(&env, "ACC-200302", MASTERCARD).await;
    let b_k2 = stored_card(&env.dir, "ACC-200302", 0);
    assert!(
        b_k2.starts_with("mg2.k2."),
        "new writes use the new key: {b_k2}"
    );

    // both decrypt under a grant
    for (id, card) in [("ACC-200301", VISA), ("ACC-200302", MASTERCARD)] {
        let grant = issue_grant(&env, &[id], &["card_number"], 1).await;
        let r = granted_read(&env, id, "card_number", &grant).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["cards"][0]["card_number"], card, "{id}");
    }

    // rewrap: only it-data-management; k1 → k2, k2 unchanged, junk an error
    let rewrap_body =
        json!({"class": "card_number", "envelopes": [a_k1, b_k2, "mg1.k1.1111.notbase64!!"],
               "accounts": ["ACC-200301", "ACC-200302", "ACC-200301"]})
        .to_string();
    for role in ["billing", "customer-service", "pmo-approver"] {
        let r = send(
            &env.client(Some(role), false),
            Method::POST,
            "/_maskgate/rewrap",
            JSON,
            &rewrap_body,
        )
        .await;
        assert_eq!(r.status, 403, "{role}: {}", r.text());
    }
    let it = env.client(Some("it-data-management"), false);
    let r = send(&it, Method::POST, "/_maskgate/rewrap", JSON, &rewrap_body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        card_runs(&r.text()).is_empty(),
        "rewrap returned plaintext: {}",
        r.text()
    );
    for card in [VISA, MASTERCARD] {
        assert!(!r.text().contains(&digits(card)) && !r.text().contains(card));
    }
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    let a_k2 = results[0]["envelope"]
        .as_str()
        .expect("rewrapped")
        .to_owned();
    assert!(a_k2.starts_with("mg2.k2.1111."), "{a_k2}");
    assert_ne!(a_k2, a_k1);
    assert_eq!(results[1]["envelope"].as_str(), Some(b_k2.as_str()));
    assert!(results[2]["error"].is_string(), "{}", results[2]);
    assert!(results[2].get("envelope").is_none());
    assert_eq!(
        keyring(&env.dir)
            .open_for(FieldClass::CardNumber, &a_k2, Some("ACC-200301"))
            .unwrap()
            .as_str(),
        VISA
    );
    // the migration writes the new envelope back to the database
    let (status, _) = upstream_send(
        &env,
        Method::PATCH,
        "/accounts/ACC-200301",
        &json!({"cards": [{"card_number": a_k2}]}),
    )
    .await;
    assert_eq!(status, 200);

    // retire k1 (ACC-200303 still holds a k1 envelope)
    let out = maskgate([
        OsStr::new("keys"),
        OsStr::new("retire"),
        OsStr::new("--keyring"),
        keyring_arg.as_os_str(),
        OsStr::new("--kek-file"),
        kek_arg.as_os_str(),
        OsStr::new("--key-id"),
        OsStr::new("k1"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = maskgate([
        OsStr::new("keys"),
        OsStr::new("list"),
        OsStr::new("--keyring"),
        keyring_arg.as_os_str(),
        OsStr::new("--kek-file"),
        kek_arg.as_os_str(),
    ]);
    let listed = text(&list.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("k1") && l.contains("retired")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("k2") && l.contains("active")),
        "{listed}"
    );

    let env = restart(env, Options::default()).await;
    // the migrated card still decrypts
    let grant = issue_grant(&env, &["ACC-200301"], &["card_number"], 1).await;
    let r = granted_read(&env, "ACC-200301", "card_number", &grant).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], VISA);
    // the k1 envelope left behind: masked, counted, never decrypted
    let before = integrity_errors(&env).await;
    let grant = issue_grant(&env, &["ACC-200303"], &["card_number"], 1).await;
    let r = granted_read(&env, "ACC-200303", "card_number", &grant).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], masked(AMEX));
    assert!(!r.text().contains(&digits(AMEX)) && !r.text().contains(AMEX));
    assert!(!r.text().contains(&c_k1));
    assert_eq!(integrity_errors(&env).await, before + 1);
    let r = env
        .client(Some("billing"), false)
        .get("/accounts/ACC-200303")
        .await;
    assert_eq!(r.json()["cards"][0]["card_number"], masked(AMEX));
    // and a retired key's envelope can no longer be rewrapped
    let r = send(
        &env.client(Some("it-data-management"), false),
        Method::POST,
        "/_maskgate/rewrap",
        JSON,
        &json!({"class": "card_number", "envelopes": [c_k1]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["results"][0]["error"].is_string(), "{}", r.text());
    assert!(!r.text().contains(&digits(AMEX)));
    env.stop().await;
}

/// A directory with certificates, policy, keys and a config with `[crypto]`.
fn serve_dir(tag: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(tag);
    maskgate::demo::certs::generate(&dir.join("certs"), &["billing"]).unwrap();
    let policy = dir.join("policies");
    maskgate::demo::run::ensure_policy(&policy).unwrap();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = maskgate::demo::run::write_full_config(
        &dir,
        "127.0.0.1:0".parse().unwrap(),
        upstream,
        &policy,
    )
    .unwrap();
    (dir, config)
}

/// Runs `maskgate serve`: `Some((code, stderr))` when it exits within 20 s,
/// `None` when it is still serving after 3 s (then it is stopped).
fn serve(config: &Path, envs: &[(&str, &str)]) -> Option<(Option<i32>, String)> {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("MASKGATE_KEK");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return Some((out.status.code(), text(&out.stderr)));
        }
        if started.elapsed() > Duration::from_secs(3) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checklist: startup refuses with a clear message when the KEK is missing
/// or wrong, or the keyring (or KEK) file is readable by others.
#[test]
fn serve_refuses_to_start_without_the_right_keys() {
    // control: the same setup with its keys starts and keeps serving
    let (_, config) = serve_dir("serve-ok");
    assert_eq!(serve(&config, &[]), None, "a good config must start");

    let refused = |config: &Path, envs: &[(&str, &str)], want: &[&str], secret: &str| {
        let (code, stderr) =
            serve(config, envs).expect("the gateway started although it must refuse");
        assert!(code.is_some_and(|c| c != 0), "exit code {code:?}: {stderr}");
        for w in want {
            assert!(stderr.contains(w), "missing {w:?} in:\n{stderr}");
        }
        assert!(
            secret.is_empty() || !stderr.contains(secret),
            "a key was printed: {stderr}"
        );
    };

    // KEK file missing
    let (dir, config) = serve_dir("serve-no-kek");
    std::fs::remove_file(kek_path(&dir)).unwrap();
    refused(
        &config,
        &[],
        &["key-encryption key file", "does not exist"],
        "",
    );

    // a different, valid KEK
    let (dir, config) = serve_dir("serve-wrong-kek");
    let right = std::fs::read_to_string(kek_path(&dir)).unwrap();
    std::fs::remove_file(kek_path(&dir)).unwrap();
    Kek::create_file(&kek_path(&dir)).unwrap();
    let wrong = std::fs::read_to_string(kek_path(&dir)).unwrap();
    assert_ne!(right, wrong);
    refused(
        &config,
        &[],
        &["wrong key-encryption key", "keyring.mgkr"],
        wrong.trim(),
    );

    // keyring world-readable
    let (dir, config) = serve_dir("serve-open-ring");
    set_mode(&keyring_path(&dir), 0o644);
    refused(
        &config,
        &[],
        &["keyring file", "accessible to group or others", "chmod 600"],
        "",
    );
    // group-readable too
    set_mode(&keyring_path(&dir), 0o640);
    refused(&config, &[], &["accessible to group or others"], "");
    // fixed: it starts
    set_mode(&keyring_path(&dir), 0o600);
    assert_eq!(serve(&config, &[]), None);

    // KEK file world-readable
    let (dir, config) = serve_dir("serve-open-kek");
    set_mode(&kek_path(&dir), 0o644);
    refused(
        &config,
        &[],
        &["key-encryption key file", "accessible to group or others"],
        "",
    );

    // KEK from an environment variable that is not set; then set right
    let (dir, config) = serve_dir("serve-kek-env");
    let kek = std::fs::read_to_string(kek_path(&dir)).unwrap();
    let toml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("kek_file = \"keys/kek\"", "kek_env = \"MASKGATE_TEST_KEK\"");
    assert!(toml.contains("MASKGATE_TEST_KEK"));
    std::fs::write(&config, toml).unwrap();
    refused(&config, &[], &["MASKGATE_TEST_KEK", "not set"], "");
    assert_eq!(serve(&config, &[("MASKGATE_TEST_KEK", kek.trim())]), None);
}

/// Checklist: `maskgate keys init|list` in a fresh directory; list never
/// prints key bytes.
#[test]
fn keys_init_and_list_work_and_never_print_key_bytes() {
    let dir = temp_dir("keys-cli");
    let ring = dir.join("keyring.mgkr");
    let kek = dir.join("kek");
    let args = |sub: &[&str]| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec!["keys".into()];
        v.extend(sub.iter().map(|s| (*s).into()));
        v.push("--keyring".into());
        v.push(ring.clone().into());
        v
    };
    let mut init = args(&["init"]);
    init.extend(["--new-kek-file".into(), kek.clone().into()]);
    let out = maskgate(&init);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("k1"), "{}", text(&out.stdout));
    assert_eq!(mode(&ring), 0o600, "keyring mode");
    assert_eq!(mode(&kek), 0o600, "KEK mode");
    let kek_text = std::fs::read_to_string(&kek).unwrap();
    assert!(!text(&out.stdout).contains(kek_text.trim()));

    // never overwrites
    let out = maskgate(&init);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("exists"),
        "{}",
        text(&out.stderr)
    );

    let with_kek = |sub: &[&str]| {
        let mut v = args(sub);
        v.extend(["--kek-file".into(), kek.clone().into()]);
        v
    };
    let out = maskgate(with_kek(&["rotate"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = maskgate(with_kek(&["list"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(listed.contains("id") && listed.contains("state") && listed.contains("encryptions"));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("k1") && l.contains("active")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("k2") && l.contains("active") && l.contains("new writes")),
        "{listed}"
    );
    // no key material: not the KEK, no long hex or base64 runs
    assert!(!listed.contains(kek_text.trim()));
    let longest_token = listed
        .split(|c: char| {
            !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '+' || c == '/')
        })
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest_token < 24,
        "list printed something key-like:\n{listed}"
    );
    // the file itself holds no key bytes in the clear: 0600 and sealed
    let file = std::fs::read_to_string(&ring).unwrap();
    assert!(file.starts_with("mgkr1."), "keyring file format");

    // the KEK from the environment works the same
    let out = Command::new(bin())
        .args(args(&["list"]))
        .env("MASKGATE_KEK", kek_text.trim())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), listed);

    // the wrong KEK: refused, clearly
    let wrong = dir.join("wrong-kek");
    Kek::create_file(&wrong).unwrap();
    let mut v = args(&["list"]);
    v.extend(["--kek-file".into(), wrong.into()]);
    let out = maskgate(v);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("wrong key-encryption key"),
        "{}",
        text(&out.stderr)
    );
}

/// Checklist: a search by card number finds the account through the blind
/// index; spaces and dashes in the number do not matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_by_card_number_finds_the_account_by_blind_index() {
    let env = secure_env("bidx", Options::default()).await;
    let billing = env.client(Some("billing"), false);
    for (id, card) in [("ACC-200400", VISA), ("ACC-200401", MASTERCARD)] {
        let r = send(
            &billing,
            Method::POST,
            "/accounts",
            JSON,
            &json!({"id": id, "name": "Searchable", "cards": [{"card_number": card}]}).to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // control: unfiltered, both come back
    let all = billing.get("/accounts").await;
    assert_eq!(all.json()["accounts"].as_array().unwrap().len(), 2);
    for h2 in [false, true] {
        // Searching by card number is a right of its own: customer service
        // does not have it (tests/review.rs covers the refusals).
        let r = env
            .client(Some("customer-service"), h2)
            .get("/accounts?card_number=4111111111111111")
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.error_code(), "card_search_not_allowed");
        for role in ["billing"] {
            let c = env.client(Some(role), h2);
            for q in [
                "card_number=4111111111111111",
                "card_number=4111%201111%201111%201111",
                "card_number=4111+1111+1111+1111",
                "card_number=4111-1111-1111-1111&limit=10",
            ] {
                let r = c.get(&format!("/accounts?{q}")).await;
                assert_eq!(r.status, 200, "{role} {q}: {}", r.text());
                let found = r.json()["accounts"].as_array().unwrap().clone();
                assert_eq!(found.len(), 1, "{role} {q}: {}", r.text());
                assert_eq!(found[0]["id"], "ACC-200400");
                assert_eq!(found[0]["cards"][0]["card_number"], masked(VISA));
                assert!(card_runs(&r.text()).is_empty());
            }
            let r = c.get("/accounts?card_number=5500000000000004").await;
            assert_eq!(r.json()["accounts"][0]["id"], "ACC-200401");
            // a number nobody has
            let r = c.get("/accounts?card_number=6011111111111117").await;
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["accounts"].as_array().unwrap().len(), 0);
        }
    }
    // a card number in any other parameter is refused
    let r = billing.get("/accounts?q=4111111111111111").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "card_number_in_query");
    env.stop().await;
}

/// Checklist: the upstream never sees the searched number, only its blind index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_only_the_blind_index_of_a_searched_card() {
    let (upstream, seen) =
        scripted_upstream(|_req| async { json_response(200, r#"{"accounts":[],"total":0}"#) })
            .await;
    let env = Env::secure(
        temp_dir("bidx-scripted"),
        upstream,
        Options::default(),
        |_| {},
    )
    .await;
    let ring = keyring(&env.dir);
    let want = ring
        .blind_index(FieldClass::CardNumber, "4111111111111111")
        .unwrap();
    let mut uris = Vec::new();
    for q in [
        "card_number=4111111111111111",
        "card_number=4111%201111%201111%201111&limit=5",
        "limit=5&card_number=4111-1111-1111-1111",
    ] {
        let r = env
            .client(Some("billing"), false)
            .get(&format!("/accounts?{q}"))
            .await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        let (_, uri, headers) = seen.last();
        let decoded = percent_encoding::percent_decode_str(&uri)
            .decode_utf8_lossy()
            .replace('+', " ");
        assert!(uri.contains("card_number_bidx=bidx1."), "{uri}");
        assert!(!decoded.contains("card_number="), "{uri}");
        assert!(longest_digit_run(&decoded) < 13, "{uri}");
        assert!(card_runs(&decoded).is_empty(), "{uri}");
        let index = decoded
            .split('&')
            .find_map(|p| p.split_once("card_number_bidx=").map(|(_, v)| v.to_owned()))
            .unwrap();
        assert_eq!(index, want, "the index is the keyring's HMAC of the number");
        for (name, value) in &headers {
            let v = value.to_str().unwrap_or("");
            assert!(card_runs(v).is_empty(), "header {name}: {v}");
        }
        uris.push(
            uri.split('?')
                .nth(1)
                .unwrap()
                .split('&')
                .find(|p| p.starts_with("card_number_bidx"))
                .unwrap()
                .to_owned(),
        );
    }
    // spelling does not change the index
    assert!(uris.windows(2).all(|w| w[0] == w[1]), "{uris:?}");
    assert_eq!(seen.count(), 3);
    env.stop().await;
}

// ---------------------------------------------------------------------------
// Gaps found while testing: each puts a card number where the database or
// the upstream (or its logs) can see it. Ignored until fixed in src/.

/// A request-writing billing client.
async fn billing_post(env: &Env, path: &str, ctype: &str, body: &str) -> Reply {
    send(
        &env.client(Some("billing"), false),
        Method::POST,
        path,
        ctype,
        body,
    )
    .await
}

/// An envelope-shaped value whose "ciphertext" is the card number itself
/// passes the write path, which checks only the envelope's shape
/// (`envelope_view`), in a card field and in a note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_fake_envelope_carrying_a_clear_card_is_not_stored() {
    let env = secure_env("fake-envelope", Options::default()).await;
    let fake = format!("mg1.k1.1111.{}{}", digits(VISA), "A".repeat(28));
    let bodies = [
        json!({"id": "ACC-200500", "cards": [{"card_number": fake}]}),
        json!({"id": "ACC-200501", "notes": fake}),
    ];
    for body in bodies {
        let r = billing_post(&env, "/accounts", JSON, &body.to_string()).await;
        let file = store_text(&env.dir);
        assert!(
            r.status == 422 || card_runs(&file).is_empty(),
            "{} stored a clear card in a fake envelope: {file}",
            r.status
        );
    }
    env.stop().await;
}

/// A card number as a JSON member name is stored as it is: the write path
/// inspects values only (the response path masks keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_card_number_as_a_json_key_is_not_stored() {
    let env = secure_env("card-key", Options::default()).await;
    let r = billing_post(
        &env,
        "/accounts",
        JSON,
        r#"{"id":"ACC-200510","notes":{"4111111111111111":"on file"}}"#,
    )
    .await;
    let file = store_text(&env.dir);
    assert!(
        r.status == 422 || card_runs(&file).is_empty(),
        "{}: {file}",
        r.status
    );
    env.stop().await;
}

/// A card number written into a field named for another, unencrypted class
/// (an expiry, an SSN, a bank account; or CSV columns swapped by mistake)
/// is stored in the clear: only unnamed fields are scanned for cards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_card_number_in_another_classes_field_is_not_stored_in_the_clear() {
    let env = secure_env("card-other-class", Options::default()).await;
    let cases = [
        (
            JSON,
            "/accounts",
            json!({"id": "ACC-200520", "cards": [{"card_expiry": VISA}]}).to_string(),
        ),
        (
            JSON,
            "/accounts",
            json!({"id": "ACC-200521", "ssn": DISCOVER}).to_string(),
        ),
        (
            JSON,
            "/accounts",
            json!({"id": "ACC-200522", "bank": {"account_number": JCB}}).to_string(),
        ),
        // card_number and card_expiry swapped in a CSV import
        (
            CSV,
            "/imports/accounts.csv",
            format!(
                "id,name,card_expiry,card_number\r\nACC-200523,Swapped,{MASTERCARD_2},12/29\r\n"
            ),
        ),
    ];
    for (ctype, path, body) in cases {
        let r = billing_post(&env, path, ctype, &body).await;
        let file = store_text(&env.dir);
        assert!(
            r.status == 422 || card_runs(&file).is_empty(),
            "{} {body}: stored in the clear: {file}",
            r.status
        );
    }
    env.stop().await;
}

/// CSV imports get no blind-index column, so a card imported as CSV cannot
/// be found by `?card_number=` (JSON and NDJSON imports can).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_imported_as_csv_is_found_by_blind_index() {
    let env = secure_env("bidx-csv", Options::default()).await;
    let r = billing_post(
        &env,
        "/imports/accounts.csv",
        CSV,
        &format!("id,name,card_number\r\nACC-200530,Csv Import,{MASTERCARD_2}\r\n"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = env
        .client(Some("billing"), false)
        .get(&format!("/accounts?card_number={MASTERCARD_2}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accounts"][0]["id"], "ACC-200530", "{}", r.text());
    env.stop().await;
}

/// A card number in a path segment reaches the upstream (and its access
/// log); in a query parameter it would be refused or blind-indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_card_number_in_the_path_never_reaches_the_upstream() {
    let (upstream, seen) =
        scripted_upstream(|_req| async { json_response(404, r#"{"error":{}}"#) }).await;
    let env = Env::secure(temp_dir("card-path"), upstream, Options::default(), |_| {}).await;
    let r = env
        .client(Some("billing"), false)
        .get("/accounts/4111111111111111")
        .await;
    let leaked = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|(_, uri, _)| !card_runs(uri).is_empty());
    assert!(
        !leaked,
        "the upstream saw the card number in the path (status {})",
        r.status
    );
    env.stop().await;
}

/// What a scripted upstream received in request bodies.
type Bodies = Arc<std::sync::Mutex<Vec<String>>>;

async fn body_recording_upstream() -> (Upstream, Seen, Bodies) {
    let bodies: Bodies = Arc::default();
    let record = bodies.clone();
    let (upstream, seen) = scripted_upstream(move |req| {
        let record = record.clone();
        async move {
            use http_body_util::BodyExt;
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&bytes).into_owned());
            json_response(200, r#"{"accounts":[]}"#)
        }
    })
    .await;
    (upstream, seen, bodies)
}

/// The body of a GET (any non-write method) is forwarded unprotected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_card_number_in_a_get_body_never_reaches_the_upstream() {
    let (upstream, _seen, bodies) = body_recording_upstream().await;
    let env = Env::secure(temp_dir("get-body"), upstream, Options::default(), |_| {}).await;
    let r = env
        .client(Some("billing"), false)
        .send(
            Method::GET,
            "/accounts",
            &[("content-type", JSON)],
            json!({"notes": VISA}).to_string().as_bytes(),
        )
        .await
        .unwrap();
    let got = bodies.lock().unwrap().clone();
    assert!(
        got.iter().all(|b| card_runs(b).is_empty()),
        "status {}: the upstream received {got:?}",
        r.status
    );
    env.stop().await;
}

/// A card number in a request header is forwarded to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_card_number_in_a_request_header_never_reaches_the_upstream() {
    let (upstream, seen, _bodies) = body_recording_upstream().await;
    let env = Env::secure(
        temp_dir("card-header"),
        upstream,
        Options::default(),
        |_| {},
    )
    .await;
    let r = env
        .client(Some("billing"), false)
        .get_with("/accounts", &[("x-card", VISA)])
        .await;
    for (_, _, headers) in seen.0.lock().unwrap().iter() {
        for (name, value) in headers {
            let v = value.to_str().unwrap_or("");
            assert!(
                card_runs(v).is_empty(),
                "status {}: header {name}: {v} reached the upstream",
                r.status
            );
        }
    }
    env.stop().await;
}
