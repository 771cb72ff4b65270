// Compiled only under #[cfg(test)] (see the parent module).
//! Tests of the access-lifecycle keys: `[lockout]`, `[state]`, principals'
//! windows, `[revocations]`, `[admit]`, rates, budgets, page caps and
//! `may_export`. Their errors are in the broken fixtures.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use super::*;

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// Writes `files` (name, text) into a fresh directory and loads its
/// `maskgate.toml`.
fn load_files(files: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("maskgate-access-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let result = load(&dir.join("maskgate.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

const GATEWAY: &str = r#"
[server]
listen = "127.0.0.1:8443"
cert = "server.pem"
key = "server.key"

[upstream]
url = "http://127.0.0.1:9000"
"#;

fn gateway(extra: &str, files: &[&str]) -> String {
    let list: Vec<String> = files.iter().map(|f| format!("{f:?}")).collect();
    format!(
        "{GATEWAY}\n{extra}\n[policy]\nfiles = [{}]\n",
        list.join(", ")
    )
}

fn at(s: &str) -> SystemTime {
    SystemTime::try_from(s.parse::<jiff::Timestamp>().unwrap()).unwrap()
}

fn good() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config/good/maskgate.toml");
    load(&path).unwrap()
}

#[test]
fn lockout_and_state_take_defaults_and_values() {
    let config =
        load_files(&[("maskgate.toml", &gateway("", &["p.toml"])), ("p.toml", "")]).unwrap();
    assert_eq!(config.lockout, LockoutConfig::default());
    assert_eq!(config.lockout.max_failures, 3);
    assert_eq!(config.lockout.window, Duration::from_secs(900));
    assert_eq!(config.lockout.lock, Duration::from_secs(1800));
    assert_eq!(config.lockout.warning(), None);
    assert_eq!(config.state.backend, StateBackend::Local);

    let extra = "[lockout]\nmax_failures = 5\nwindow_secs = 60\nlock_secs = 3600\n\n[state]\nbackend = \"local\"\n";
    let config = load_files(&[
        ("maskgate.toml", &gateway(extra, &["p.toml"])),
        ("p.toml", ""),
    ])
    .unwrap();
    assert_eq!(
        config.lockout,
        LockoutConfig {
            max_failures: 5,
            window: Duration::from_secs(60),
            lock: Duration::from_secs(3600),
        }
    );
}

const POLICY: &str = r#"
[admit]
budget_tz = "Europe/Berlin"
freeze_role = "officer"

[routes.accounts]
path = "/accounts"
max_page_size = 25

[routes.search]
path = "/search"
page_param = "per_page"
max_page_size = 10

[routes.export]
path = "/exports/all.ndjson"
export = true

[roles.officer]
routes = [{ route = "accounts", methods = ["GET"] }]

[roles.clerk]
routes = [
    { route = "accounts", methods = ["GET"] },
    { route = "search", methods = ["GET"] },
    { route = "export", methods = ["GET"] },
]
rate = { per_second = 20, burst = 40 }
role_rate = { per_minute = 600 }
record_budget_per_day = 5000
[roles.clerk.route_rates.export]
rate = { per_minute = 2, burst = 1 }
[roles.clerk.route_rates.search]
role_rate = { per_second = 3 }

[roles.outside]
routes = [{ route = "accounts", methods = ["GET"] }]
allow_fields = ["id"]

[roles.no-export]
routes = [{ route = "accounts", methods = ["GET"] }]
may_export = false

[[principals]]
name = "contractor"
roles = ["outside"]
valid_from = 2026-01-01T00:00:00Z
valid_until = "2026-12-31T23:59:59-08:00"
hours = { tz = "America/Chicago", days = ["MON", "fri"], from = "7:30", until = "24:00" }

[[principals]]
name = "clerk"
roles = ["clerk"]

[revocations]
principals = ["clerk"]
cert_serials = ["01:02"]
"#;

#[test]
fn access_keys_compile_into_the_policy() {
    let revocations = "[revocations]\napi_key_sha256 = [\"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"]\ncert_serials = [\"ABCDEF\"]\n";
    let config = load_files(&[
        ("maskgate.toml", &gateway("", &["p.toml", "r.toml"])),
        ("p.toml", POLICY),
        ("r.toml", revocations),
    ])
    .unwrap();
    let policy = &config.policy;
    let index = |n: &str| policy.routes.iter().position(|r| r.name == n).unwrap();

    // [admit]
    assert_eq!(policy.admit.budget_tz_name, "Europe/Berlin");
    assert_eq!(policy.admit.freeze_role, "officer");

    // page caps: `limit` by default
    let accounts = &policy.routes[index("accounts")];
    assert_eq!(
        accounts.page_cap,
        Some(PageCap {
            param: "limit".to_owned(),
            max: 25
        })
    );
    assert_eq!(
        policy.routes[index("search")]
            .page_cap
            .as_ref()
            .map(|c| c.param.as_str()),
        Some("per_page")
    );
    assert_eq!(policy.routes[index("export")].page_cap, None);

    // rates, route rates and budgets
    let clerk = policy.role("clerk").unwrap();
    let rate = clerk.rate.unwrap();
    assert_eq!((rate.count.get(), rate.burst.get()), (20, 40));
    assert_eq!(rate.period, RatePeriod::Second);
    let role_rate = clerk.role_rate.unwrap();
    assert_eq!(role_rate.period, RatePeriod::Minute);
    assert_eq!(role_rate.burst.get(), 600, "burst defaults to the count");
    let export = clerk.rates(index("export"));
    assert_eq!(export.rate.unwrap().count.get(), 2);
    assert_eq!(export.role_rate, clerk.role_rate);
    let search = clerk.rates(index("search"));
    assert_eq!(search.rate, clerk.rate);
    assert_eq!(search.role_rate.unwrap().count.get(), 3);
    assert_eq!(
        clerk.rates(index("accounts")),
        RouteRate {
            rate: clerk.rate,
            role_rate: clerk.role_rate,
        }
    );
    assert_eq!(clerk.record_budget_per_day, Some(5000));
    assert!(clerk.may_export);
    let officer = policy.role("officer").unwrap();
    assert_eq!((officer.rate, officer.role_rate), (None, None));
    assert_eq!(officer.record_budget_per_day, None);
    assert!(!policy.role("outside").unwrap().may_export);
    assert!(!policy.role("no-export").unwrap().may_export);

    // the window
    let w = &policy.principal("contractor").unwrap().window;
    assert_eq!(w.valid_from, Some(at("2026-01-01T00:00:00Z")));
    assert_eq!(w.valid_until, Some(at("2027-01-01T07:59:59Z")));
    let hours = w.hours.as_ref().unwrap();
    assert_eq!(hours.tz_name, "America/Chicago");
    assert_eq!(
        (hours.from_minute, hours.until_minute),
        (7 * 60 + 30, 24 * 60)
    );
    assert!(hours.days.contains(jiff::civil::Weekday::Monday));
    assert!(hours.days.contains(jiff::civil::Weekday::Friday));
    assert!(!hours.days.contains(jiff::civil::Weekday::Tuesday));
    assert_eq!(format!("{:?}", hours.days), "DaySet(mon,fri)");
    assert!(policy.principal("clerk").unwrap().window.is_unrestricted());

    // revocations of both files together
    let r = &policy.revocations;
    assert!(r.principal("clerk"));
    assert!(!r.principal("contractor"));
    assert!(r.cert_serial("0102"));
    assert!(r.cert_serial("ab:cd:ef"));
    assert!(r.api_key(&crate::identity::api_key_hash(b"foo")));
    assert!(!r.is_empty());
}

#[test]
fn hours_without_days_allow_every_day() {
    let policy = "[roles.r]\nroutes = []\n\n[[principals]]\nname = \"p\"\nroles = [\"r\"]\nhours = { tz = \"UTC\", from = \"22:00\", until = \"06:00\" }\n";
    let config = load_files(&[
        ("maskgate.toml", &gateway("", &["p.toml"])),
        ("p.toml", policy),
    ])
    .unwrap();
    let hours = config
        .policy
        .principal("p")
        .unwrap()
        .window
        .hours
        .clone()
        .unwrap();
    assert_eq!(hours.days, DaySet::ALL);
    assert_eq!((hours.from_minute, hours.until_minute), (22 * 60, 6 * 60));
}

#[test]
fn default_policy_has_the_contract_window_budgets_and_caps() {
    let config = good();
    let policy = &config.policy;
    assert_eq!(policy.admit.budget_tz_name, "America/Los_Angeles");
    assert_eq!(policy.admit.freeze_role, "privacy-officer");
    assert!(policy.revocations.is_empty());

    let gw = &policy.principal("greenwaste").unwrap().window;
    assert_eq!(gw.valid_until, Some(at("2027-07-01T07:00:00Z")));
    let hours = gw.hours.as_ref().unwrap();
    assert_eq!(hours.tz_name, "America/Los_Angeles");
    assert_eq!((hours.from_minute, hours.until_minute), (6 * 60, 18 * 60));
    assert!(hours.days.contains(jiff::civil::Weekday::Saturday));
    assert!(!hours.days.contains(jiff::civil::Weekday::Sunday));
    for p in &policy.principals {
        if p.name != "greenwaste" {
            assert!(p.window.is_unrestricted(), "{}", p.name);
        }
    }

    let budget = |r: &str| policy.role(r).unwrap().record_budget_per_day;
    assert_eq!(budget("greenwaste"), Some(2000));
    assert_eq!(budget("non-utilities"), Some(1000));
    assert_eq!(budget("customer-service"), None);
    for role in policy.roles.values() {
        // Every role that may call a customer route is rate-limited.
        if role.grants().next().is_some() {
            assert!(role.rate.is_some(), "{}", role.name);
        }
        assert_eq!(role.may_export, !role.is_allowlist(), "{}", role.name);
    }

    let accounts = policy.match_route("/accounts").unwrap().1;
    assert_eq!(
        accounts.page_cap,
        Some(PageCap {
            param: "limit".to_owned(),
            max: 100
        })
    );
    let export = policy.match_route("/exports/accounts.csv").unwrap();
    let billing = policy.role("billing").unwrap();
    assert_eq!(
        billing.rates(export.0).rate.unwrap().period,
        RatePeriod::Minute
    );
}
