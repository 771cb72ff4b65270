//! Security review (issue 22) items 2, 7, 8, 9 and 10, through the real
//! gateway over TLS: unmask counting whatever the response's shape, reason
//! scrubbing, envelopes bound to their account, key hygiene, and
//! certificate identity.

mod common;

use common::*;
use maskgate::audit::Outcome;

const REASON: &str = "COLL-2026-00042 skip trace for agency";

/// SSA-valid, distinct SSNs.
fn ssn(i: usize) -> String {
    format!("50{}-4{}-{:04}", i % 10, i % 10, 1000 + i)
}

fn customer(i: usize) -> String {
    format!(r#"{{"id":"A{i}","ssn":"{}"}}"#, ssn(i))
}

/// A gateway with the audit log on in front of an upstream that answers
/// every request with `body`.
async fn gateway_answering(tag: &str, body: String) -> Env {
    let (upstream, _seen) = scripted_upstream(move |_req| {
        let body = body.clone();
        async move { json_response(200, &body) }
    })
    .await;
    Env::secure(temp_dir(tag), upstream, Options::default(), |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmask_is_bounded_by_its_record_limit_whatever_the_body_shape() {
    let ten: Vec<String> = (0..10).map(customer).collect();
    let shapes = [
        ("array", format!("[{}]", ten.join(","))),
        ("items", format!(r#"{{"items":[{}]}}"#, ten.join(","))),
        (
            "beside",
            format!(
                r#"{{"accounts":[{}],"others":[{}]}}"#,
                customer(0),
                ten[1..].join(",")
            ),
        ),
    ];
    for (tag, body) in shapes {
        let env = gateway_answering(&format!("uncountable-{tag}"), body).await;
        let col = env.client(Some("collections"), false);
        let r = col
            .get_with(
                "/accounts",
                &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)],
            )
            .await;
        assert_eq!(r.status, 403, "{tag}: {}", r.text());
        assert_eq!(r.error_code(), "unmask_uncountable", "{tag}");
        for i in 0..10 {
            assert!(!r.text().contains(&ssn(i)), "{tag}: {}", r.text());
        }
        let records = env.audit_records();
        let rec = records.last().expect("the refusal is recorded");
        assert_eq!(rec.outcome, Outcome::Denied, "{tag}");
        assert!(
            ["records_uncountable", "too_many_values_per_record"].contains(&rec.why.as_str()),
            "{tag}: {}",
            rec.why
        );
        assert_eq!(rec.released, 0);
        env.stop().await;
    }

    // The same values as records the policy counts are released.
    let body = format!(r#"{{"accounts":[{},{}]}}"#, customer(1), customer(2));
    let env = gateway_answering("countable", body).await;
    let col = env.client(Some("collections"), false);
    let r = col
        .get_with(
            "/accounts",
            &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accounts"][1]["ssn"], ssn(2).as_str());
    let rec = env.audit_records().pop().unwrap();
    assert_eq!((rec.outcome, rec.released), (Outcome::Granted, 2));
    env.stop().await;
}

/// Every file under `dir`, recursively, as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_flag_values_in_any_spelling_never_reach_audit_or_grant_records() {
    let env = gateway_answering("reasons", format!(r#"{{"accounts":[{}]}}"#, customer(1))).await;
    let ssn_dotted = "501.41.1001";
    let ssn_slashed = "501/41/1001";
    let ssn_full_width = "５０１－４１－１００１";
    let card_dotted = "4111.1111.1111.1111";
    let values = [ssn_dotted, ssn_slashed, ssn_full_width, card_dotted];
    let col = env.client(Some("collections"), false);
    for value in values {
        let reason = format!("COLL-2026-00042 holder {value} asked");
        let r = col
            .send_raw_headers(
                http::Method::GET,
                "/accounts",
                &[("x-unmask", b"ssn"), ("x-unmask-reason", reason.as_bytes())],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{value}: {}", r.text());
        assert_eq!(r.error_code(), "reason_red_flag_value", "{value}");
    }
    let pmo = env.client(Some("pmo-approver"), false);
    for value in values {
        let body = serde_json::json!({
            "grantee": "it-data-management",
            "scope": {"kind": "accounts", "accounts": ["A1"]},
            "classes": ["card_number"],
            "reason": format!("CHG-1234 dispute for {value}"),
            "validity_minutes": 30,
        })
        .to_string();
        let r = pmo
            .send(
                http::Method::POST,
                "/_maskgate/grants",
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{value}: {}", r.text());
    }
    // A clean reason with full-width digits is kept, folded to ASCII.
    let r = col
        .send_raw_headers(
            http::Method::GET,
            "/accounts",
            &[
                ("x-unmask", b"ssn"),
                (
                    "x-unmask-reason",
                    "COLL-2026-00042 call ２ of ３".as_bytes(),
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let records = env.audit_records();
    assert_eq!(
        records.last().and_then(|r| r.reason.as_deref()),
        Some("COLL-2026-00042 call 2 of 3")
    );
    assert!(
        records
            .iter()
            .filter(|r| r.outcome == Outcome::Denied)
            .count()
            >= values.len(),
        "every refused grant is recorded"
    );
    // Nothing under the data directory (audit log, checkpoints, grants)
    // holds any of the values, as given or with its digits folded.
    let folded = ["501411001", "501-41-1001", "4111111111111111", "4111.1111"];
    let files = files_under(&env.dir.join("data"));
    assert!(files.len() >= 2, "{files:?}");
    for (path, bytes) in files {
        let text = String::from_utf8_lossy(&bytes);
        for needle in values.iter().chain(&folded) {
            assert!(!text.contains(needle), "{} holds {needle}", path.display());
        }
    }
    env.stop().await;
}

const VISA: &str = "4111 1111 1111 1111";
const IT_REASON: &str = "CHG-1234 chargeback dispute";

/// What the scripted card database holds: the account id a path names →
/// (the id its record shows, the stored card value).
type Cards = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (String, String)>>>;

fn put(cards: &Cards, id: &str, card: &str) {
    cards
        .lock()
        .unwrap()
        .insert(id.to_owned(), (id.to_owned(), card.to_owned()));
}

/// A card database that stores what the gateway writes (`POST /accounts`
/// with `{"id", "cards":[{"card_number"}]}`) and serves `GET /accounts/{id}`
/// from `cards`, which the test may change behind the gateway's back.
async fn card_database(cards: Cards) -> Upstream {
    card_database_seen(cards).await.0
}

async fn card_database_seen(cards: Cards) -> (Upstream, Seen) {
    let (upstream, seen) = scripted_upstream(move |req: http::Request<hyper::body::Incoming>| {
        let cards = cards.clone();
        async move {
            use http_body_util::BodyExt;
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if method == http::Method::POST {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let id = v["id"].as_str().unwrap().to_owned();
                let card = v["cards"][0]["card_number"].as_str().unwrap().to_owned();
                cards.lock().unwrap().insert(id.clone(), (id, card));
                return json_response(201, "{}");
            }
            if path == "/accounts" {
                return json_response(200, r#"{"accounts":[]}"#);
            }
            let id = path.trim_start_matches("/accounts/");
            match cards.lock().unwrap().get(id) {
                // The id first, as the demo database writes its records.
                Some((shown, card)) => json_response(
                    200,
                    &format!(
                        r#"{{"id":{},"cards":[{{"card_number":{}}}]}}"#,
                        serde_json::Value::from(shown.as_str()),
                        serde_json::Value::from(card.as_str())
                    ),
                ),
                None => json_response(404, r#"{"error":"no such account"}"#),
            }
        }
    })
    .await;
    (upstream, seen)
}

async fn issue_grant(env: &Env, account: &str) -> String {
    let body = serde_json::json!({
        "grantee": "it-data-management",
        "scope": {"kind": "accounts", "accounts": [account]},
        "classes": ["card_number"],
        "reason": IT_REASON,
        "validity_minutes": 30,
    });
    let r = env
        .client(Some("pmo-approver"), false)
        .send(
            http::Method::POST,
            "/_maskgate/grants",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "grant: {}", r.text());
    r.json()["grant"]["id"].as_str().unwrap().to_owned()
}

async fn decrypt(env: &Env, account: &str) -> Reply {
    let grant = issue_grant(env, account).await;
    env.client(Some("it-data-management"), false)
        .get_with(
            &format!("/accounts/{account}"),
            &[
                ("x-unmask", "card_number"),
                ("x-unmask-reason", IT_REASON),
                ("x-unmask-grant", &grant),
            ],
        )
        .await
}

async fn integrity_errors(env: &Env) -> u64 {
    let r = env
        .client(Some("security-auditor"), false)
        .get("/_maskgate/metrics")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("maskgate_envelope_integrity_errors_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no integrity counter: {}", r.text()))
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_moved_to_another_account_does_not_open() {
    let cards = Cards::default();
    let upstream = card_database(cards.clone()).await;
    let env = Env::secure(temp_dir("moved"), upstream, Options::default(), |_| {}).await;
    let billing = env.client(Some("billing"), false);
    for id in ["ACC-500001", "ACC-500002"] {
        let r = billing
            .send(
                http::Method::POST,
                "/accounts",
                &[("content-type", "application/json")],
                serde_json::json!({"id": id, "cards": [{"card_number": VISA}]})
                    .to_string()
                    .as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let sealed_for_a = cards.lock().unwrap()["ACC-500001"].1.clone();
    assert!(sealed_for_a.starts_with("mg2."), "{sealed_for_a}");

    // In its own record it opens under a grant for its account.
    let r = decrypt(&env, "ACC-500001").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], VISA);

    // Moved into B's record at the database, it does not open for B.
    put(&cards, "ACC-500002", &sealed_for_a);
    let before = integrity_errors(&env).await;
    let r = decrypt(&env, "ACC-500002").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!digits(&r.text()).contains(&digits(VISA)), "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], "****************");
    assert_eq!(integrity_errors(&env).await, before + 1);
    let rec = env.audit_records().pop().unwrap();
    assert_eq!((rec.outcome, rec.released), (Outcome::Granted, 0));
    // Masked display does not vouch for it either.
    let r = env
        .client(Some("customer-service"), false)
        .get("/accounts/ACC-500002")
        .await;
    assert_eq!(r.json()["cards"][0]["card_number"], "****************");

    // A forged last four is shown as damaged, not as the forger's digits.
    let forged = {
        let mut parts: Vec<&str> = sealed_for_a.split('.').collect();
        parts[2] = "9999";
        parts.join(".")
    };
    put(&cards, "ACC-500001", &forged);
    let r = env
        .client(Some("customer-service"), false)
        .get("/accounts/ACC-500001")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], "****************");
    assert!(!r.text().contains("9999"), "{}", r.text());

    // The database answering for B with A's record: refused, recorded.
    cards.lock().unwrap().insert(
        "ACC-500002".to_owned(),
        ("ACC-500001".to_owned(), sealed_for_a.clone()),
    );
    let r = decrypt(&env, "ACC-500002").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!digits(&r.text()).contains(&digits(VISA)), "{}", r.text());
    let rec = env.audit_records().pop().unwrap();
    assert_eq!(
        (rec.outcome, rec.why.as_str()),
        (Outcome::Denied, "account_outside_grant")
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_binds_old_envelopes_to_their_account() {
    let cards = Cards::default();
    let upstream = card_database(cards.clone()).await;
    let env = Env::secure(temp_dir("bind"), upstream, Options::default(), |_| {}).await;
    // An envelope from before accounts were bound.
    let kek = maskgate::crypto::Kek::from_file(&env.dir.join("keys/kek")).unwrap();
    let keyring = maskgate::crypto::Keyring::load(
        &env.dir.join("keys/keyring.mgkr"),
        kek,
        maskgate::crypto::KeyringOptions::default(),
    )
    .unwrap();
    let old = keyring
        .seal(maskgate::class::FieldClass::CardNumber, VISA)
        .unwrap();
    assert!(old.starts_with("mg1."));
    // mg1 still opens, in any account's record.
    put(&cards, "ACC-600001", &old);
    let r = decrypt(&env, "ACC-600001").await;
    assert_eq!(r.json()["cards"][0]["card_number"], VISA, "{}", r.text());

    let r = env
        .client(Some("it-data-management"), false)
        .send(
            http::Method::POST,
            "/_maskgate/rewrap",
            &[("content-type", "application/json")],
            serde_json::json!({"class": "card_number", "account": "ACC-600001", "envelopes": [old]})
                .to_string()
                .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!digits(&r.text()).contains(&digits(VISA)), "{}", r.text());
    let bound = r.json()["results"][0]["envelope"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(bound.starts_with("mg2."), "{bound}");
    for (id, opens) in [("ACC-600001", true), ("ACC-600002", false)] {
        put(&cards, id, &bound);
        let r = decrypt(&env, id).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["cards"][0]["card_number"] == VISA,
            opens,
            "{id}: {}",
            r.text()
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kek_leaves_the_environment_once_read() {
    let var = format!("MASKGATE_TEST_KEK_{}", std::process::id());
    let cards = Cards::default();
    let upstream = card_database(cards.clone()).await;
    let env = Env::secure(temp_dir("kek-env"), upstream, Options::default(), |cfg| {
        let crypto = cfg.crypto.as_mut().unwrap();
        let kek = std::fs::read_to_string(crypto.kek_file.take().unwrap()).unwrap();
        std::env::set_var(&var, kek.trim());
        crypto.kek_env = Some(var.clone());
    })
    .await;
    assert_eq!(
        std::env::var_os(&var),
        None,
        "the KEK is still in the environment"
    );
    // The gateway holds the key all the same: writes are sealed.
    let r = env
        .client(Some("billing"), false)
        .send(
            http::Method::POST,
            "/accounts",
            &[("content-type", "application/json")],
            serde_json::json!({"id": "ACC-800001", "cards": [{"card_number": VISA}]})
                .to_string()
                .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(cards.lock().unwrap()["ACC-800001"].1.starts_with("mg2."));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_blind_index_key_reindexes_through_rewrap() {
    let cards = Cards::default();
    let (upstream, seen) = card_database_seen(cards.clone()).await;
    let env = Env::secure(
        temp_dir("rotate-index"),
        upstream,
        Options::default(),
        |_| {},
    )
    .await;
    let keyring_path = env.dir.join("keys/keyring.mgkr");
    let kek_path = env.dir.join("keys/kek");
    let load = || {
        maskgate::crypto::Keyring::load(
            &keyring_path,
            maskgate::crypto::Kek::from_file(&kek_path).unwrap(),
            maskgate::crypto::KeyringOptions::default(),
        )
        .unwrap()
    };
    let card = maskgate::class::FieldClass::CardNumber;
    let old_index = load().blind_index(card, VISA).unwrap();
    let r = env
        .client(Some("billing"), false)
        .send(
            http::Method::POST,
            "/accounts",
            &[("content-type", "application/json")],
            serde_json::json!({"id": "ACC-900001", "cards": [{"card_number": VISA}]})
                .to_string()
                .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let stored = cards.lock().unwrap()["ACC-900001"].1.clone();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maskgate"))
        .args(["keys", "rotate-index", "--keyring"])
        .arg(&keyring_path)
        .arg("--kek-file")
        .arg(&kek_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_index = load().blind_index(card, VISA).unwrap();
    assert_eq!(load().index_generation(), 2);
    assert_ne!(new_index, old_index);

    // Re-indexing: the stored envelope's new index, never its plaintext.
    let r = env
        .client(Some("it-data-management"), false)
        .send(
            http::Method::POST,
            "/_maskgate/rewrap",
            &[("content-type", "application/json")],
            serde_json::json!({"class": "card_number", "account": "ACC-900001",
                               "envelopes": [stored], "reindex": true})
            .to_string()
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!digits(&r.text()).contains(&digits(VISA)), "{}", r.text());
    assert_eq!(r.json()["index_generation"], 2);
    assert_eq!(r.json()["results"][0]["blind_index"], new_index.as_str());

    // After a reload, searches use the new key.
    let r = env
        .client(Some("security-auditor"), false)
        .send(http::Method::POST, "/_maskgate/reload", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = env
        .client(Some("billing"), false)
        .get(&format!("/accounts?card_number={}", digits(VISA)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, uri, _) = seen.last();
    assert!(uri.contains(&new_index), "{uri}");
    assert!(!uri.contains(&old_index), "{uri}");
    env.stop().await;
}

/// A CA made with rcgen: its certificate PEM, and what signs leaves.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new(common_name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A client certificate with subject CN `cn`, DNS SANs `sans` and
    /// `serial`, written to `<dir>/<file>.pem` and `.key`.
    fn client(
        &self,
        dir: &std::path::Path,
        file: &str,
        cn: &str,
        sans: &[&str],
        serial: u8,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans
            .iter()
            .map(|s| rcgen::SanType::DnsName((*s).try_into().unwrap()))
            .collect();
        params.serial_number = Some(rcgen::SerialNumber::from(vec![serial]));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_named_by_san_pinned_to_their_ca_and_revoked_by_issuer_and_serial() {
    let (upstream, seen) =
        scripted_upstream(|_req| async { json_response(200, r#"{"accounts":[]}"#) }).await;
    let env = Env::start(temp_dir("identity"), upstream, |_| {}).await;
    let pin_ca = TestCa::new("Pin CA A");
    let other_ca = TestCa::new("Other CA B");
    // The gateway trusts both CAs (beside the demo CA) for client certificates.
    let ca_file = env.certs().join("ca.pem");
    let mut cas = std::fs::read_to_string(&ca_file).unwrap();
    cas.push_str(&pin_ca.cert.pem());
    cas.push_str(&other_ca.cert.pem());
    std::fs::write(&ca_file, cas).unwrap();
    // collections is pinned to CA A; one certificate of CA B is revoked by
    // issuer and serial.
    let principals = env.dir.join("policies/principals.toml");
    let text = std::fs::read_to_string(&principals).unwrap().replacen(
        "cert_names = [\"collections\"]\n",
        "cert_names = [\"collections\"]\ncert_issuer = \"CN=Pin CA A\"\n",
        1,
    );
    std::fs::write(
        &principals,
        format!("{text}\n[[revocations.certs]]\nissuer = \"cn = Other CA B\"\nserial = \"7B\"\n"),
    )
    .unwrap();
    let r = env
        .client(Some("security-auditor"), false)
        .send(http::Method::POST, "/_maskgate/reload", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let dir = env.dir.join("rcgen");
    std::fs::create_dir_all(&dir).unwrap();
    let roots = || {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(env.certs().join("ca.pem")).unwrap();
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    };
    let principal_for = |paths: (std::path::PathBuf, std::path::PathBuf)| {
        let client = tls_client(roots(), Some(paths), env.addr, false);
        let seen = seen.clone();
        async move {
            let before = seen.count();
            let r = client.get("/accounts").await;
            if r.status != 200 {
                return Err(r.status.as_u16());
            }
            assert_eq!(seen.count(), before + 1);
            let (_, _, headers) = seen.last();
            Ok(headers["x-maskgate-principal"].to_str().unwrap().to_owned())
        }
    };
    // SAN first: a CN naming another principal does not count.
    let cert = pin_ca.client(&dir, "san", "customer-service", &["collections"], 1);
    assert_eq!(principal_for(cert).await, Ok("collections".to_owned()));
    // Without SANs the CN names the principal.
    let cert = pin_ca.client(&dir, "cn-only", "customer-service", &[], 2);
    assert_eq!(principal_for(cert).await, Ok("customer-service".to_owned()));
    // Pinned: collections from any other trusted CA is refused.
    let cert = other_ca.client(&dir, "other-collections", "x", &["collections"], 3);
    assert_eq!(principal_for(cert).await, Err(401));
    // Not pinned: billing from either CA.
    let cert = other_ca.client(&dir, "other-billing", "x", &["billing"], 4);
    assert_eq!(principal_for(cert).await, Ok("billing".to_owned()));
    // Revoked by issuer and serial: only that CA's certificate with it.
    let cert = other_ca.client(&dir, "revoked", "x", &["billing"], 0x7b);
    assert_eq!(principal_for(cert).await, Err(401));
    let cert = pin_ca.client(&dir, "same-serial", "x", &["billing"], 0x7b);
    assert_eq!(principal_for(cert).await, Ok("billing".to_owned()));
    env.stop().await;
}
