//! Unmask requests, two-person decrypt grants and the tamper-evident audit
//! log, through the real gateway over TLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::Method;
use maskgate::audit::{Kind, Outcome};

const REASON: &str = "COLL-2026-00042 skip trace for agency";
const IT_REASON: &str = "CHG-1234 chargeback dispute";

async fn secure_demo(tag: &str, options: Options) -> Env {
    let dir = temp_dir(tag);
    let upstream = demo_upstream(&dir, 0).await;
    let env = Env::secure(dir, upstream, options, |_| {}).await;
    // Seed through the gateway: cards are stored as envelopes.
    maskgate::demo::run::seed_through_gateway(
        env.addr,
        &env.certs(),
        maskgate::demo::data::generate(2016, 40),
    )
    .await
    .unwrap();
    env
}

fn last_record(env: &Env) -> maskgate::audit::Record {
    env.audit_records()
        .into_iter()
        .last()
        .expect("no audit record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_unmasks_an_ssn_only_with_a_reason_and_every_try_is_recorded() {
    let env = secure_demo(
        "unmask-ssn",
        Options {
            encrypt_detected_cards: true,
            ..Options::default()
        },
    )
    .await;
    // a residential account: its SSN as written (SSNs are not encrypted at rest)
    let (acct, raw_ssn) = maskgate::demo::data::generate(2016, 40)
        .into_iter()
        .find_map(|a| Some((a["id"].as_str()?.to_owned(), a["ssn"].as_str()?.to_owned())))
        .unwrap();
    let path = format!("/accounts/{acct}");
    for h2 in [false, true] {
        let col = env.client(Some("collections"), h2);
        let before = env.audit_records().len();
        // with a reason: the clear SSN, exactly one granted record
        let r = col
            .get_with(&path, &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["ssn"], raw_ssn.as_str());
        // other classes stay masked
        let dl = r.json()["drivers_license"]["number"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(dl.starts_with("****"), "{dl}");
        let records = env.audit_records();
        assert_eq!(records.len(), before + 1);
        let rec = records.last().unwrap();
        assert_eq!(rec.kind, Kind::Unmask);
        assert_eq!(rec.outcome, Outcome::Granted);
        assert_eq!(rec.principal, "collections");
        assert_eq!(rec.classes, vec!["ssn".to_owned()]);
        assert_eq!(rec.accounts, vec![acct.clone()]);
        assert_eq!(rec.released, 1);
        assert_eq!(rec.route.as_deref(), Some("account"));
        assert_eq!(
            rec.request_id.as_deref(),
            r.headers["x-request-id"].to_str().ok()
        );
        let line = serde_json::to_string(&rec.reason).unwrap();
        assert!(!line.contains(&raw_ssn));
        // without a reason: 403 and a denied record
        let r = col.get_with(&path, &[("x-unmask", "ssn")]).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.error_code(), "unmask_denied");
        assert!(!r.text().contains(&raw_ssn));
        let rec = last_record(&env);
        assert_eq!(
            (rec.outcome, rec.why.as_str()),
            (Outcome::Denied, "reason_missing")
        );
        // a reason that does not name a collection case: 403, recorded
        let r = col
            .get_with(
                &path,
                &[
                    ("x-unmask", "ssn"),
                    ("x-unmask-reason", "just curious about it"),
                ],
            )
            .await;
        assert_eq!(r.status, 403);
        assert_eq!(last_record(&env).outcome, Outcome::Denied);
        // customer service may not unmask at all: 403, recorded
        let cs = env.client(Some("customer-service"), h2);
        let r = cs
            .get_with(&path, &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)])
            .await;
        assert_eq!(r.status, 403);
        let rec = last_record(&env);
        assert_eq!(
            (rec.principal.as_str(), rec.outcome),
            ("customer-service", Outcome::Denied)
        );
        // a list of more records than one request may unmask is refused whole
        let r = col
            .get_with(
                "/accounts?limit=10",
                &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)],
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(!r.text().contains(&raw_ssn));
        let rec = last_record(&env);
        assert_eq!(
            (rec.outcome, rec.why.as_str()),
            (Outcome::Denied, "over_record_limit")
        );
    }
    // the log verifies with only the public key
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maskgate"))
        .args(["audit", "verify", "--dir"])
        .arg(env.audit_dir())
        .arg("--public-key")
        .arg(env.dir.join("keys/audit-signing.pub"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    env.stop().await;
}

fn grant_body(grantee: &str, account: &str, minutes: u32) -> String {
    serde_json::json!({
        "grantee": grantee,
        "scope": {"kind": "accounts", "accounts": [account]},
        "classes": ["card_number"],
        "reason": IT_REASON,
        "validity_minutes": minutes,
    })
    .to_string()
}

async fn issue(env: &Env, grantee: &str, account: &str, minutes: u32) -> Reply {
    env.client(Some("pmo-approver"), false)
        .send(
            Method::POST,
            "/_maskgate/grants",
            &[("content-type", "application/json")],
            grant_body(grantee, account, minutes).as_bytes(),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypting_card_data_takes_a_grant_from_another_person_used_once() {
    let clock = Arc::new(maskgate::unmask::ManualClock::new(
        std::time::SystemTime::now(),
    ));
    let env = secure_demo(
        "grants",
        Options {
            clock: Some(clock.clone()),
            encrypt_detected_cards: true,
            ..Options::default()
        },
    )
    .await;
    let (account, want) = maskgate::demo::data::generate(2016, 40)
        .into_iter()
        .find_map(|a| {
            Some((
                a["id"].as_str()?.to_owned(),
                a["cards"][0]["card_number"].as_str()?.to_owned(),
            ))
        })
        .expect("a demo account with a card");
    let account = account.as_str();
    let it = env.client(Some("it-data-management"), true);
    let decrypt = |grant: String| {
        let it = &it;
        async move {
            it.get_with(
                &format!("/accounts/{account}"),
                &[
                    ("x-unmask", "card_number"),
                    ("x-unmask-reason", IT_REASON),
                    ("x-unmask-grant", grant.as_str()),
                ],
            )
            .await
        }
    };
    // without a grant: refused
    let r = it
        .get_with(
            &format!("/accounts/{account}"),
            &[("x-unmask", "card_number"), ("x-unmask-reason", IT_REASON)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(last_record(&env).why, "grant_required");
    // the approver issues; the grantee decrypts once
    let g = issue(&env, "it-data-management", account, 30).await;
    assert_eq!(g.status, 201, "{}", g.text());
    let id = g.json()["grant"]["id"].as_str().unwrap().to_owned();
    assert_eq!(last_record(&env).kind, Kind::GrantIssued);
    let r = decrypt(id.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cards"][0]["card_number"], want.as_str());
    let rec = last_record(&env);
    assert_eq!((rec.kind, rec.outcome), (Kind::Decrypt, Outcome::Granted));
    assert_eq!(rec.grant_id.as_deref(), Some(id.as_str()));
    assert!(rec.released >= 1);
    // second use: refused (single use), recorded
    let r = decrypt(id.clone()).await;
    assert_eq!(r.status, 403);
    assert!(!r.text().contains(&want));
    assert_eq!(last_record(&env).why, "grant_used_up");
    // the approver may not grant itself
    let r = issue(&env, "pmo-approver", account, 30).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(last_record(&env).kind, Kind::GrantRefused);
    // an expired grant is refused
    let g = issue(&env, "it-data-management", account, 5).await;
    let expiring = g.json()["grant"]["id"].as_str().unwrap().to_owned();
    clock.advance(Duration::from_secs(6 * 60));
    let r = decrypt(expiring).await;
    assert_eq!(r.status, 403);
    assert_eq!(last_record(&env).why, "grant_expired");
    // a revoked grant is refused
    let g = issue(&env, "it-data-management", account, 30).await;
    let revoked = g.json()["grant"]["id"].as_str().unwrap().to_owned();
    let r = env
        .client(Some("pmo-approver"), false)
        .send(
            Method::DELETE,
            &format!("/_maskgate/grants/{revoked}"),
            &[],
            b"",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_record(&env).kind, Kind::GrantRevoked);
    let r = decrypt(revoked).await;
    assert_eq!(r.status, 403);
    assert_eq!(last_record(&env).why, "grant_revoked");
    // someone else holding the grant id gets nothing
    let g = issue(&env, "it-data-management", account, 30).await;
    let other = g.json()["grant"]["id"].as_str().unwrap().to_owned();
    let r = env
        .client(Some("collections"), false)
        .get_with(
            &format!("/accounts/{account}"),
            &[
                ("x-unmask", "card_number"),
                ("x-unmask-reason", IT_REASON),
                ("x-unmask-grant", other.as_str()),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    // the security team reads and verifies the log over the admin API; nobody else may
    let auditor = env.client(Some("security-auditor"), false);
    let v = auditor.get("/_maskgate/audit/verify").await;
    assert_eq!(v.status, 200);
    assert_eq!(v.json()["ok"], true, "{}", v.text());
    let q = auditor
        .get("/_maskgate/audit?kind=decrypt&outcome=granted")
        .await;
    assert_eq!(q.status, 200);
    assert_eq!(q.text().lines().count(), 1);
    assert!(!q.text().contains(&want));
    assert_eq!(
        env.client(Some("collections"), false)
            .get("/_maskgate/audit")
            .await
            .status,
        403
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_that_cannot_be_written_stops_unmasking_but_not_masked_reads() {
    let env = secure_demo(
        "audit-fails",
        Options {
            audit_rotate_bytes: Some(4096),
            encrypt_detected_cards: true,
            ..Options::default()
        },
    )
    .await;
    let col = env.client(Some("collections"), false);
    let unmask = || {
        col.get_with(
            "/accounts/ACC-100003",
            &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)],
        )
    };
    assert_eq!(unmask().await.status, 200);
    // The next log file cannot be created: a directory holds its name.
    for n in 1..=50 {
        let _ = std::fs::create_dir(env.audit_dir().join(format!("audit-{n:06}.log")));
    }
    let mut refused = 0;
    for _ in 0..40 {
        let r = unmask().await;
        match r.status.as_u16() {
            200 => {}
            503 => {
                refused += 1;
                assert_eq!(r.error_code(), "audit_unavailable");
                assert!(!r.text().contains("-**-"), "{}", r.text());
                let masked = env
                    .client(Some("customer-service"), false)
                    .get("/accounts/ACC-100003")
                    .await;
                assert_eq!(masked.status, 200, "masked reads keep flowing");
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert!(refused > 0, "the audit log never failed");
    env.stop().await;
}
