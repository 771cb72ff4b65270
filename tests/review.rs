//! The findings of the security review (issue 22, items 1, 3, 4, 5, 6 and
//! 11), each through the real gateway over TLS: delegation cannot mint
//! buckets, card search is a right, budgets hold through a state-store
//! outage, reloads keep buckets and are recorded, a spent grant always
//! leaves a record, metrics are for the roles named, and the access review
//! reads business hours in the policy's time zone.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::Method;
use maskgate::audit::{Kind, Outcome, Record};
use maskgate::pg::testing::{Cluster, Options as PgOptions};

const COLLECTIONS_REASON: &str = "COLL-2026-00042 skip trace for agency";
const IT_REASON: &str = "CHG-1234 chargeback dispute";

/// Replaces `old` (which must be there) by `new` in a policy file of `env`.
fn edit_policy(env: &Env, file: &str, old: &str, new: &str) {
    let path = env.dir.join("policies").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(old), "{file} has no `{old}`");
    std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
}

fn reload(env: &Env) {
    env.gateway
        .as_ref()
        .expect("gateway running")
        .reload()
        .unwrap_or_else(|e| panic!("{e}"));
}

fn records_of(env: &Env, kind: Kind) -> Vec<Record> {
    env.audit_records()
        .into_iter()
        .filter(|r| r.kind == kind)
        .collect()
}

/// The first demo account (of the default 60) with an SSN.
fn account_with_ssn() -> String {
    maskgate::demo::data::generate(maskgate::demo::run::DEMO_SEED, 60)
        .into_iter()
        .find_map(|a| {
            a["ssn"].as_str()?;
            Some(a["id"].as_str()?.to_owned())
        })
        .expect("a demo account with an SSN")
}

async fn secure_env(tag: &str, clock: Option<Arc<maskgate::unmask::ManualClock>>) -> Env {
    let dir = temp_dir(tag);
    let upstream = demo_upstream(&dir, 60).await;
    let options = Options {
        clock,
        ..Options::default()
    };
    Env::secure(dir, upstream, options, |_| {}).await
}

// ------------------------------------------------------------ item 1

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_with_invented_names_hits_the_principals_limits() {
    let (env, clock) = Env::at_time(
        temp_dir("review-obo"),
        demo_upstream(&temp_dir("review-obo-db"), 60).await,
        WEDNESDAY_NOON_PALO_ALTO,
        false,
    )
    .await;
    edit_policy(
        &env,
        "roles.toml",
        "rate = { per_second = 50, burst = 100 }\n[roles.customer-service.actions]",
        "rate = { per_second = 1, burst = 3 }\n[roles.customer-service.actions]",
    );
    edit_policy(
        &env,
        "principals.toml",
        "max_per_day = 500 }\n\n[[principals]]\nname = \"billing\"",
        "max_per_day = 5 }\n\n[[principals]]\nname = \"billing\"",
    );
    reload(&env);
    let cs = env.client(Some("customer-service"), false);
    let as_person = |name: &'static str| {
        let cs = &cs;
        async move {
            cs.get_with("/accounts/ACC-100001", &[("x-on-behalf-of", name)])
                .await
        }
    };
    // Each invented name used to open a bucket of its own: now they share
    // the application's.
    for name in ["clerk.a", "clerk.b", "clerk.c"] {
        let r = as_person(name).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
    }
    let r = as_person("clerk.d").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));

    // At most 5 distinct persons a day; known ones still pass.
    clock.advance(Duration::from_secs(60));
    for name in ["clerk.d", "clerk.e"] {
        assert_eq!(as_person(name).await.status, 200, "{name}");
    }
    let r = as_person("clerk.f").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.error_code(), "too_many_delegates");
    assert_eq!(as_person("clerk.a").await.status, 200);

    // Names outside the pattern, or holding an SSN- or card-shaped number,
    // are refused without being repeated.
    clock.advance(Duration::from_secs(60));
    for (name, code) in [
        ("Clerk.Upper", "delegate_not_allowed"),
        ("123-45-6789", "delegate_number_shaped"),
        ("clerk 4111 1111 1111 1111", "delegate_number_shaped"),
        ("clerk;drop", "delegate_malformed"),
    ] {
        let r = as_person(name).await;
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        assert_eq!(r.error_code(), code, "{name}");
        assert!(!r.text().contains(name), "{name} echoed: {}", r.text());
    }
    env.stop().await;
}

// ------------------------------------------------------------ item 3

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_search_is_a_right_rate_limited_charged_and_recorded() {
    let env = secure_env("review-search", None).await;
    const SEARCH: &str = "/accounts?card_number=4111111111111111";
    // The contractor and customer service may not search; both refusals
    // are recorded, without the number.
    for role in ["greenwaste", "customer-service"] {
        let r = env.client(Some(role), false).get(SEARCH).await;
        assert_eq!(r.status, 403, "{role}: {}", r.text());
        assert_eq!(r.error_code(), "card_search_not_allowed");
    }
    let refused = records_of(&env, Kind::CardSearch);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|r| r.outcome == Outcome::Denied
        && r.why == "card_search_not_allowed"
        && r.classes == ["card_number"]));
    assert_eq!(refused[0].principal, "greenwaste");

    // IT data management may, 10 at once, then waits; each search is a record.
    let it = env.client(Some("it-data-management"), false);
    for n in 0..10 {
        let r = it.get(SEARCH).await;
        assert_eq!(r.status, 200, "search {n}: {}", r.text());
    }
    let r = it.get(SEARCH).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let it_records: Vec<Record> = records_of(&env, Kind::CardSearch)
        .into_iter()
        .filter(|r| r.principal == "it-data-management")
        .collect();
    assert_eq!(it_records.len(), 11);
    assert_eq!(
        it_records
            .iter()
            .filter(|r| r.outcome == Outcome::Granted)
            .count(),
        10
    );
    assert_eq!(
        it_records.last().map(|r| r.why.as_str()),
        Some("card_search_rate_limited")
    );
    let log = std::fs::read_dir(env.audit_dir())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(!log.contains("4111111111111111") && !log.contains("bidx"));

    // A search that finds nothing still costs a record of the budget.
    edit_policy(
        &env,
        "roles.toml",
        "card_search_rate = { per_minute = 10, burst = 20 }",
        "card_search_rate = { per_minute = 10, burst = 20 }\nrecord_budget_per_day = 3",
    );
    reload(&env);
    let billing = env.client(Some("billing"), false);
    let mut misses = 0;
    let refused = loop {
        let r = billing.get("/accounts?card_number=6011111111111117").await;
        if r.status != 200 {
            break r;
        }
        assert_eq!(r.json()["accounts"].as_array().map(Vec::len), Some(0));
        misses += 1;
        assert!(misses <= 3, "{misses} misses within a budget of 3 records");
    };
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.error_code(), "record_budget_exceeded");
    assert!(misses >= 1);
    env.stop().await;
}

// ------------------------------------------------------------ item 4

/// A gateway on the shared database at `url`; the contractor's budget
/// lowered to 30 records a day.
async fn gateway_on(tag: &str, url: &str, clock: Arc<maskgate::unmask::ManualClock>) -> Env {
    let dir = temp_dir(tag);
    let upstream = demo_upstream(&dir, 60).await;
    let url = url.to_owned();
    let options = Options {
        clock: Some(clock),
        ..Options::default()
    };
    let env = Env::start_with(dir, upstream, options, move |cfg| {
        let mut pg = maskgate::config::PostgresConfig::new(url);
        pg.connect_timeout = Duration::from_millis(500);
        pg.statement_timeout = Duration::from_millis(1000);
        cfg.state.backend = maskgate::config::StateBackend::Postgres;
        cfg.state.postgres = Some(pg);
    })
    .await;
    edit_policy(
        &env,
        "roles.toml",
        "record_budget_per_day = 2000",
        "record_budget_per_day = 30",
    );
    reload(&env);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_store_outage_keeps_budgets_and_pushes_the_counts_after() {
    let mut cluster = Cluster::start(PgOptions::default());
    let url = cluster.new_database().await;
    let clock = Arc::new(maskgate::unmask::ManualClock::at_unix(
        WEDNESDAY_NOON_PALO_ALTO,
    ));
    let env = gateway_on("review-outage", &url, clock.clone()).await;
    let contractor = env.client(Some("greenwaste"), false);
    const PAGE: &str = "/accounts?limit=10";
    let r = contractor.get(PAGE).await;
    assert_eq!(r.status, 200, "{}", r.text());

    cluster.stop_server();
    // Masked reads keep flowing, but only within the budget this gateway
    // knows of: the store's last total plus what it counted since.
    let mut served = 0;
    let refused = loop {
        clock.advance(Duration::from_secs(1));
        let r = contractor.get(PAGE).await;
        match r.status.as_u16() {
            200 => served += 1,
            403 => break r,
            other => panic!("{other}: {}", r.text()),
        }
        assert!(
            served < 5,
            "30 records a day, yet {served} pages of 10 served in the outage"
        );
    };
    assert_eq!(refused.error_code(), "record_budget_exceeded");
    assert!(served >= 1, "no masked read served during the outage");

    cluster.start_server();
    // Once the store is back, the counts kept meanwhile are pushed: another
    // instance sharing it sees the budget used up.
    let other = gateway_on("review-outage-b", &url, clock.clone()).await;
    let contractor_b = other.client(Some("greenwaste"), false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        clock.advance(Duration::from_secs(1));
        let r = contractor_b.get("/accounts?limit=1").await;
        if r.status == 403 {
            assert_eq!(r.error_code(), "record_budget_exceeded");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other instance still serves: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The first instance agrees, from the store.
    assert_eq!(contractor.get(PAGE).await.status, 403);
    other.stop().await;
    env.stop().await;
}

// ------------------------------------------------------------ item 5

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_is_recorded_with_its_caller_and_keeps_the_buckets() {
    let env = secure_env("review-reload", None).await;
    edit_policy(
        &env,
        "roles.toml",
        "rate = { per_second = 50, burst = 100 }\n[roles.customer-service.actions]",
        "rate = { per_second = 1, burst = 2 }\n[roles.customer-service.actions]",
    );
    reload(&env);
    let cs = env.client(Some("customer-service"), false);
    for _ in 0..2 {
        assert_eq!(cs.get("/accounts/ACC-100001").await.status, 200);
    }
    assert_eq!(cs.get("/accounts/ACC-100001").await.status, 429);

    // A reload that changes nothing for customer service refills nothing.
    let it = env.client(Some("it-data-management"), false);
    let r = it
        .send(Method::POST, "/_maskgate/reload", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(cs.get("/accounts/ACC-100001").await.status, 429);

    // A changed limit starts full.
    edit_policy(
        &env,
        "roles.toml",
        "rate = { per_second = 1, burst = 2 }",
        "rate = { per_second = 1, burst = 3 }",
    );
    let r = it
        .send(Method::POST, "/_maskgate/reload", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(cs.get("/accounts/ACC-100001").await.status, 200);

    // A refused reload is recorded too.
    edit_policy(
        &env,
        "roles.toml",
        "[roles.billing]",
        "[roles.billing]\nbogus = 1",
    );
    let r = it
        .send(Method::POST, "/_maskgate/reload", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());

    let reloads = records_of(&env, Kind::Admin);
    let seen: Vec<(&str, &str, Outcome)> = reloads
        .iter()
        .map(|r| (r.principal.as_str(), r.why.as_str(), r.outcome))
        .collect();
    assert_eq!(
        seen,
        [
            ("handle", "reload", Outcome::Granted),
            ("it-data-management", "reload", Outcome::Granted),
            ("it-data-management", "reload", Outcome::Granted),
            ("it-data-management", "reload_refused", Outcome::Denied),
        ]
    );
    assert!(reloads[1].request_id.is_some());
    env.stop().await;
}

// ------------------------------------------------------------ item 6

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_spent_by_a_head_request_leaves_a_record() {
    let env = secure_env("review-head", None).await;
    let account = "ACC-100001";
    let g = env
        .client(Some("pmo-approver"), false)
        .send(
            Method::POST,
            "/_maskgate/grants",
            &[("content-type", "application/json")],
            serde_json::json!({
                "grantee": "it-data-management",
                "scope": {"kind": "accounts", "accounts": [account]},
                "classes": ["card_number"],
                "reason": IT_REASON,
                "validity_minutes": 30,
            })
            .to_string()
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(g.status, 201, "{}", g.text());
    let grant = g.json()["grant"]["id"].as_str().unwrap().to_owned();
    let it = env.client(Some("it-data-management"), false);
    let headers = [
        ("x-unmask", "card_number"),
        ("x-unmask-reason", IT_REASON),
        ("x-unmask-grant", grant.as_str()),
    ];
    let path = format!("/accounts/{account}");
    let r = it.send(Method::HEAD, &path, &headers, b"").await.unwrap();
    assert!(r.body.is_empty());
    let used: Vec<Record> = records_of(&env, Kind::GrantUsed);
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0].grant_id.as_deref(), Some(grant.as_str()));
    assert_eq!(used[0].principal, "it-data-management");
    assert_eq!(used[0].accounts, [account]);
    // The use is spent: the single-use grant opens nothing more.
    let r = it.get_with(&path, &headers).await;
    assert_eq!(r.status, 403, "{}", r.text());
    env.stop().await;
}

// ------------------------------------------------------------ item 11

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_for_the_roles_named_and_a_rewrap_is_recorded() {
    let env = secure_env("review-metrics", None).await;
    for (role, status) in [
        ("greenwaste", 403),
        ("customer-service", 403),
        ("pmo-approver", 403),
        ("security-auditor", 200),
        ("it-data-management", 200),
    ] {
        let r = env
            .client(Some(role), false)
            .get("/_maskgate/metrics")
            .await;
        assert_eq!(r.status, status, "{role}: {}", r.text());
    }
    let r = env
        .client(Some("it-data-management"), false)
        .send(
            Method::POST,
            "/_maskgate/rewrap",
            &[("content-type", "application/json")],
            br#"{"class":"card_number","envelopes":[]}"#,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let admin = records_of(&env, Kind::Admin);
    let rewrap = admin
        .iter()
        .find(|r| r.why == "rewrap")
        .expect("a rewrap record");
    assert_eq!(rewrap.principal, "it-data-management");
    assert_eq!(rewrap.classes, ["card_number"]);
    env.stop().await;
}

/// 2026-07-15T23:42:00Z: 16:42 in Palo Alto (PDT), a Wednesday.
const WEDNESDAY_1642_PALO_ALTO: u64 = 1_784_158_920;

fn report_json(audit_dir: &Path, config: Option<&Path>) -> serde_json::Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_maskgate"));
    cmd.args([
        "audit",
        "report",
        "--quarter",
        "2026Q3",
        "--format",
        "json",
        "--dir",
    ])
    .arg(audit_dir);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_review_reads_business_hours_in_the_policys_time_zone() {
    let clock = Arc::new(maskgate::unmask::ManualClock::at_unix(
        WEDNESDAY_1642_PALO_ALTO,
    ));
    let env = secure_env("review-report", Some(clock)).await;
    let r = env
        .client(Some("collections"), false)
        .get_with(
            &format!("/accounts/{}", account_with_ssn()),
            &[("x-unmask", "ssn"), ("x-unmask-reason", COLLECTIONS_REASON)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let config = env.dir.join(maskgate::demo::config::CONFIG_FILE);
    let report = report_json(&env.audit_dir(), Some(&config));
    assert!(
        report["business_hours"]
            .as_str()
            .is_some_and(|h| h.contains("America/Los_Angeles")),
        "{}",
        report["business_hours"]
    );
    assert_eq!(
        report["unusual"]["off_hours"],
        serde_json::json!([]),
        "{report}"
    );
    // Read in UTC (no policy given), 23:42 is off-hours: the zone matters.
    let utc = report_json(&env.audit_dir(), None);
    assert_eq!(
        utc["unusual"]["off_hours"][0]["principal"], "collections",
        "{utc}"
    );
    env.stop().await;
}
