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
