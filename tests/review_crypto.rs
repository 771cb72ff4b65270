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
