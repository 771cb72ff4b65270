// Compiled only under #[cfg(test)] (see the parent module).
//! Tests of admission: lockouts, windows, rate limits, budgets, freezes,
//! page caps, export denial and revocations, with a manual clock and real
//! files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::{self, AccessWindow, Config, DailyHours, DaySet, LockoutConfig, Policy};
use crate::identity::PeerCertificate;
use crate::unmask::{Clock, ManualClock};

// ------------------------------------------------------------ helpers

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("maskgate-admit-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GATEWAY: &str = r#"
[server]
listen = "127.0.0.1:8443"
cert = "server.pem"
key = "server.key"

[upstream]
url = "http://127.0.0.1:9000"

[policy]
files = ["policy.toml"]
"#;

/// Loads GATEWAY (plus `extra` gateway sections) with `policy` as its policy.
fn load(extra: &str, policy: &str) -> Config {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let path = dir.path().join("maskgate.toml");
    std::fs::write(&path, format!("{GATEWAY}\n{extra}")).unwrap();
    match config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("the test config does not load:\n{e}"),
    }
}

fn default_config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config/good/maskgate.toml");
    match config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("the good config does not load:\n{e}"),
    }
}

/// An RFC 3339 instant.
fn at(s: &str) -> SystemTime {
    SystemTime::try_from(s.parse::<jiff::Timestamp>().unwrap()).unwrap()
}

fn store(dir: &TempDir) -> Arc<dyn StateStore> {
    Arc::new(LocalStateStore::open(dir.path()).unwrap())
}

fn ip(s: &str) -> IdentityKey {
    IdentityKey::source(s.parse::<IpAddr>().unwrap())
}

// ------------------------------------------------------------ lockout

fn lockout(dir: &TempDir) -> Lockout {
    Lockout::new(
        store(dir),
        LockoutConfig::default(),
        Arc::new(Shadow::new()),
    )
}

#[tokio::test]
async fn third_failure_within_the_window_locks() {
    let dir = TempDir::new();
    let lock = lockout(&dir);
    let clock = ManualClock::new(at("2026-03-02T10:00:00Z"));
    let id = IdentityKey::api_key(b"wrong key");
    for n in 1..=2 {
        assert_eq!(
            lock.record_failure(&id, clock.now()).await.unwrap(),
            LockState::Counting {
                failures: n,
                max_failures: 3
            }
        );
        assert_eq!(lock.check(&id, clock.now()).await, Ok(()));
        clock.advance(Duration::from_secs(60));
    }
    let third = clock.now();
    // The default lock: 30 minutes (PCI DSS v4.0 8.3.4).
    let until = third + Duration::from_secs(1800);
    assert_eq!(
        lock.record_failure(&id, third).await.unwrap(),
        LockState::Locked { until, new: true }
    );
    assert_eq!(
        lock.check(&id, third).await,
        Err(LockError::Locked {
            identity: id.clone(),
            until
        })
    );
    // Further failures neither start a new lock nor extend it.
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        lock.record_failure(&id, clock.now()).await.unwrap(),
        LockState::Locked { until, new: false }
    );
    // Other identities are not affected.
    assert_eq!(lock.check(&ip("192.0.2.1"), clock.now()).await, Ok(()));
    let locks = lock.locks(clock.now()).await.unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].identity, id);
    assert_eq!(locks[0].since, third);
}

#[tokio::test]
async fn failures_spread_wider_than_the_window_do_not_lock() {
    let dir = TempDir::new();
    let lock = lockout(&dir);
    let clock = ManualClock::new(at("2026-03-02T10:00:00Z"));
    let id = ip("198.51.100.7");
    lock.record_failure(&id, clock.now()).await.unwrap();
    clock.advance(Duration::from_secs(600));
    lock.record_failure(&id, clock.now()).await.unwrap();
    // The first failure is 900 s old now: out of the window.
    clock.advance(Duration::from_secs(300));
    assert_eq!(
        lock.record_failure(&id, clock.now()).await.unwrap(),
        LockState::Counting {
            failures: 2,
            max_failures: 3
        }
    );
    assert_eq!(lock.check(&id, clock.now()).await, Ok(()));
}

#[tokio::test]
async fn a_success_forgets_the_failures() {
    let dir = TempDir::new();
    let lock = lockout(&dir);
    let now = at("2026-03-02T10:00:00Z");
    let id = IdentityKey::Cert("billing".to_owned());
    lock.record_failure(&id, now).await.unwrap();
    lock.record_failure(&id, now).await.unwrap();
    lock.record_success(&id).await.unwrap();
    assert_eq!(
        lock.record_failure(&id, now).await.unwrap(),
        LockState::Counting {
            failures: 1,
            max_failures: 3
        }
    );
}

#[tokio::test]
async fn a_lock_ends_after_lock_secs() {
    let dir = TempDir::new();
    let config = LockoutConfig {
        max_failures: 3,
        window: Duration::from_secs(900),
        lock: Duration::from_secs(600),
    };
    let lock = Lockout::new(store(&dir), config, Arc::new(Shadow::new()));
    let clock = ManualClock::new(at("2026-03-02T10:00:00Z"));
    let id = ip("203.0.113.9");
    for _ in 0..3 {
        lock.record_failure(&id, clock.now()).await.unwrap();
    }
    clock.advance(Duration::from_secs(599));
    assert!(matches!(
        lock.check(&id, clock.now()).await,
        Err(LockError::Locked { .. })
    ));
    clock.advance(Duration::from_secs(1));
    assert_eq!(lock.check(&id, clock.now()).await, Ok(()));
    assert!(lock.locks(clock.now()).await.unwrap().is_empty());
    // Counting starts again from zero.
    assert_eq!(
        lock.record_failure(&id, clock.now()).await.unwrap(),
        LockState::Counting {
            failures: 1,
            max_failures: 3
        }
    );
}

#[tokio::test]
async fn unlock_lifts_the_lock_and_the_failures() {
    let dir = TempDir::new();
    let lock = lockout(&dir);
    let now = at("2026-03-02T10:00:00Z");
    let id = IdentityKey::Cert("greenwaste".to_owned());
    for _ in 0..3 {
        lock.record_failure(&id, now).await.unwrap();
    }
    let lifted = lock.unlock(&id, now).await.unwrap().unwrap();
    assert_eq!(lifted.identity, id);
    assert_eq!(lifted.until, now + Duration::from_secs(1800));
    assert_eq!(lock.check(&id, now).await, Ok(()));
    assert_eq!(lock.unlock(&id, now).await.unwrap(), None);
    // The failures before the lock do not count any more.
    assert!(matches!(
        lock.record_failure(&id, now).await.unwrap(),
        LockState::Counting { failures: 1, .. }
    ));
}

#[tokio::test]
async fn locks_survive_a_restart_and_so_do_unlocks() {
    let dir = TempDir::new();
    let now = at("2026-03-02T10:00:00Z");
    let key = IdentityKey::api_key(b"guessed");
    let addr = ip("::ffff:192.0.2.10");
    {
        let lock = lockout(&dir);
        for _ in 0..3 {
            lock.record_failure(&key, now).await.unwrap();
            lock.record_failure(&addr, now).await.unwrap();
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let file = dir.path().join(LocalStateStore::LOCKS_FILE);
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let lock = lockout(&dir);
    let later = now + Duration::from_secs(60);
    assert!(matches!(
        lock.check(&key, later).await,
        Err(LockError::Locked { .. })
    ));
    assert!(matches!(
        lock.check(&ip("192.0.2.10"), later).await,
        Err(LockError::Locked { .. })
    ));
    lock.unlock(&key, later).await.unwrap();
    drop(lock);
    let lock = lockout(&dir);
    assert_eq!(lock.check(&key, later).await, Ok(()));
    assert!(lock.check(&addr, later).await.is_err());
    // A restart forgets failures that did not lock (kept in memory only).
    let other = ip("192.0.2.99");
    lock.record_failure(&other, later).await.unwrap();
    drop(lock);
    let lock = lockout(&dir);
    assert!(matches!(
        lock.record_failure(&other, later).await.unwrap(),
        LockState::Counting { failures: 1, .. }
    ));
}

#[test]
fn identity_keys_print_and_parse_without_the_whole_key_hash() {
    let hash = crate::identity::api_key_hash(b"secret-key");
    let key = IdentityKey::api_key_hash(&hash);
    let text = key.to_string();
    assert_eq!(text, format!("key:{}", hex::encode(&hash[..8])));
    assert!(!text.contains(&hex::encode(hash)));
    assert_eq!(IdentityKey::api_key(b"secret-key"), key);
    for k in [
        key,
        IdentityKey::Cert("non-utilities".to_owned()),
        ip("2001:db8::1"),
        ip("10.1.2.3"),
    ] {
        assert_eq!(k.to_string().parse::<IdentityKey>(), Ok(k));
    }
    assert_eq!(
        "KEY:0011223344556677".parse::<IdentityKey>(),
        Err(BadIdentity)
    );
    assert_eq!(
        "key:00112233445566AA".parse::<IdentityKey>(),
        Ok(IdentityKey::ApiKey("00112233445566aa".to_owned()))
    );
    for bad in [
        "key:0011",
        "cert:",
        "cert:a\nb",
        "ip:999.1.1.1",
        "user:x",
        "x",
    ] {
        assert_eq!(bad.parse::<IdentityKey>(), Err(BadIdentity), "{bad}");
    }
    // An IPv4-mapped address counts as the IPv4 address.
    assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
}

#[tokio::test]
async fn an_attempt_is_counted_per_source_certificate_and_key() {
    let cert = PeerCertificate {
        names: vec!["billing".to_owned(), "billing.city.example".to_owned()],
        serial: "0a1b".to_owned(),
        ..PeerCertificate::default()
    };
    let hash = crate::identity::api_key_hash(b"k");
    let source: IpAddr = "192.0.2.5".parse().unwrap();
    assert_eq!(
        attempt_identities(Some(&cert), Some(&hash), source),
        vec![
            IdentityKey::source(source),
            IdentityKey::Cert("billing".to_owned()),
            IdentityKey::api_key_hash(&hash),
        ]
    );
    assert_eq!(
        attempt_identities(None, None, source),
        vec![IdentityKey::source(source)]
    );
    // A bad key from an address locks the address: the right key is then
    // refused from it too, until an unlock.
    let dir = TempDir::new();
    let lock = lockout(&dir);
    let now = at("2026-03-02T10:00:00Z");
    for n in 0..3u8 {
        let wrong = crate::identity::api_key_hash(&[n]);
        for id in attempt_identities(None, Some(&wrong), source) {
            lock.record_failure(&id, now).await.unwrap();
        }
    }
    let right = attempt_identities(None, Some(&hash), source);
    assert!(matches!(
        lock.check_all(&right, now).await,
        Err(LockError::Locked {
            identity: IdentityKey::Source(_),
            ..
        })
    ));
    lock.unlock(&IdentityKey::source(source), now)
        .await
        .unwrap();
    assert_eq!(lock.check_all(&right, now).await, Ok(()));
}

// ------------------------------------------------------------ windows

fn greenwaste_window() -> AccessWindow {
    default_config()
        .policy
        .principal("greenwaste")
        .unwrap()
        .window
        .clone()
}

#[test]
fn greenwaste_window_follows_pacific_time_across_dst() {
    let w = greenwaste_window();
    // Monday 2 March 2026 is standard time (UTC-8): 06:00 local is 14:00Z.
    assert_eq!(
        window::check(&w, at("2026-03-02T13:59:59Z")).map_err(|e| e.code()),
        Err("outside_hours")
    );
    assert_eq!(window::check(&w, at("2026-03-02T14:00:00Z")), Ok(()));
    // Daylight time starts on Sunday 8 March: the next Monday 06:00 local
    // is 13:00Z, and the same 13:30Z that was 05:30 a week ago is inside.
    assert!(window::check(&w, at("2026-03-09T12:59:00Z")).is_err());
    assert_eq!(window::check(&w, at("2026-03-09T13:30:00Z")), Ok(()));
    // 18:00 local ends the day: 01:00Z (daylight) vs 02:00Z (standard).
    assert_eq!(window::check(&w, at("2026-03-10T00:59:59Z")), Ok(()));
    assert!(window::check(&w, at("2026-03-10T01:00:00Z")).is_err());
    // Back to standard time on Sunday 1 November 2026.
    assert_eq!(window::check(&w, at("2026-10-26T13:30:00Z")), Ok(()));
    assert!(window::check(&w, at("2026-11-02T13:30:00Z")).is_err());
    assert_eq!(window::check(&w, at("2026-11-02T14:00:00Z")), Ok(()));
}

#[test]
fn greenwaste_window_uses_the_local_day_not_the_utc_day() {
    let w = greenwaste_window();
    // Saturday 7 March 2026, 17:59 PST is already Sunday in UTC: inside.
    assert_eq!(window::check(&w, at("2026-03-08T01:59:00Z")), Ok(()));
    // Saturday 18:00 PST: outside.
    let e = window::check(&w, at("2026-03-08T02:00:00Z")).unwrap_err();
    assert_eq!(
        e,
        OutsideWindow::OutsideHours {
            local: "Sat 2026-03-07 18:00 America/Los_Angeles".to_owned()
        }
    );
    // Sunday 10:00 PDT: never on Sundays.
    assert!(window::check(&w, at("2026-03-08T17:00:00Z")).is_err());
    // Monday 00:30Z is still Sunday evening in Los Angeles.
    assert!(window::check(&w, at("2026-03-09T00:30:00Z")).is_err());
}

#[test]
fn greenwaste_contract_dates_bound_the_window() {
    let w = greenwaste_window();
    let before = window::check(&w, at("2025-06-30T17:00:00Z")).unwrap_err();
    assert_eq!(before.code(), "not_yet_valid");
    assert!(
        before.to_string().contains("2025-07-01T07:00:00Z"),
        "{before}"
    );
    // Wednesday 30 June 2027, 10:00 PDT: the contract's last day.
    assert_eq!(window::check(&w, at("2027-06-30T17:00:00Z")), Ok(()));
    // Thursday 1 July 2027, 10:00 PDT: after valid_until.
    let after = window::check(&w, at("2027-07-01T17:00:00Z")).unwrap_err();
    assert_eq!(after.code(), "access_expired");
    // Other principals have no window.
    let config = default_config();
    let cs = config.policy.principal("customer-service").unwrap();
    assert!(cs.window.is_unrestricted());
    assert_eq!(
        window::check(&cs.window, at("2026-03-08T17:00:00Z")),
        Ok(())
    );
}

#[test]
fn an_overnight_window_belongs_to_the_day_it_starts() {
    let hours = DailyHours {
        tz: jiff::tz::TimeZone::get("America/New_York").unwrap(),
        tz_name: "America/New_York".to_owned(),
        days: DaySet::default().with(jiff::civil::Weekday::Friday),
        from_minute: 22 * 60,
        until_minute: 6 * 60,
    };
    let w = AccessWindow {
        hours: Some(hours),
        ..AccessWindow::default()
    };
    // Friday 6 March 2026, EST (UTC-5).
    assert!(window::check(&w, at("2026-03-07T02:59:00Z")).is_err()); // Fri 21:59
    assert_eq!(window::check(&w, at("2026-03-07T03:00:00Z")), Ok(())); // Fri 22:00
    assert_eq!(window::check(&w, at("2026-03-07T10:59:00Z")), Ok(())); // Sat 05:59
    assert!(window::check(&w, at("2026-03-07T11:00:00Z")).is_err()); // Sat 06:00
    assert!(window::check(&w, at("2026-03-08T03:00:00Z")).is_err()); // Sat 22:00
    assert!(window::check(&w, at("2026-03-06T09:00:00Z")).is_err()); // Fri 04:00 (Thursday's night)
}

// ------------------------------------------------------------ rate limits

const RATE_POLICY: &str = r#"
[routes.accounts]
path = "/accounts"

[routes.account]
path = "/accounts/{id}"

[roles.clerk]
routes = [
    { route = "accounts", methods = ["GET"] },
    { route = "account", methods = ["GET"] },
]
rate = { per_second = 2, burst = 3 }
role_rate = { per_minute = 6, burst = 5 }
[roles.clerk.route_rates.accounts]
rate = { per_minute = 1, burst = 1 }

[roles.free]
routes = [{ route = "account", methods = ["GET"] }]
"#;

fn route(policy: &Policy, name: &str) -> usize {
    policy.routes.iter().position(|r| r.name == name).unwrap()
}

#[test]
fn rate_limit_allows_the_burst_then_refuses_with_retry_after() {
    let config = load("", RATE_POLICY);
    let policy = &config.policy;
    let clock = Arc::new(ManualClock::new(at("2026-03-02T10:00:00Z")));
    let limiter = RateLimiter::new(policy, clock.clone());
    let account = route(policy, "account");
    for _ in 0..3 {
        assert_eq!(limiter.check("ann", "clerk", account), Ok(()));
    }
    // 2 per second: the next cell comes 500 ms after the burst.
    let refused = limiter.check("ann", "clerk", account).unwrap_err();
    assert_eq!(refused, RetryAfter(Duration::from_millis(500)));
    assert_eq!(refused.header_secs(), 1);
    clock.advance(Duration::from_millis(499));
    assert!(limiter.check("ann", "clerk", account).is_err());
    clock.advance(Duration::from_millis(1));
    assert_eq!(limiter.check("ann", "clerk", account), Ok(()));
    // A role without limits always passes.
    for _ in 0..100 {
        assert_eq!(limiter.check("ann", "free", account), Ok(()));
    }
}

#[test]
fn rate_limits_are_per_principal_and_per_role() {
    let config = load("", RATE_POLICY);
    let policy = &config.policy;
    let clock = Arc::new(ManualClock::new(at("2026-03-02T10:00:00Z")));
    let limiter = RateLimiter::new(policy, clock.clone());
    let account = route(policy, "account");
    // Each principal has its own bucket of 3; the role shares 5.
    for p in ["a", "a", "b", "b", "c"] {
        assert_eq!(limiter.check(p, "clerk", account), Ok(()), "{p}");
    }
    // `c` has room of its own, but the role has none: 6 a minute = one
    // cell every 10 s.
    assert_eq!(
        limiter.check("c", "clerk", account),
        Err(RetryAfter(Duration::from_secs(10)))
    );
    assert_eq!(RetryAfter(Duration::from_millis(10_001)).header_secs(), 11);
    clock.advance(Duration::from_secs(10));
    assert_eq!(limiter.check("c", "clerk", account), Ok(()));
    assert_eq!(limiter.principal_buckets(), 3);
    // Once the buckets are full again they are forgotten.
    clock.advance(Duration::from_secs(120));
    limiter.retain_recent();
    assert_eq!(limiter.principal_buckets(), 0);
}

#[test]
fn route_rates_replace_the_role_rate_on_their_route() {
    let config = load("", RATE_POLICY);
    let policy = &config.policy;
    let clerk = policy.role("clerk").unwrap();
    let (accounts, account) = (route(policy, "accounts"), route(policy, "account"));
    assert_eq!(clerk.rates(accounts).rate.unwrap().burst.get(), 1);
    assert_eq!(clerk.rates(account).rate.unwrap().burst.get(), 3);
    // The role rate applies on both, as the route does not replace it.
    assert_eq!(clerk.rates(accounts).role_rate, clerk.role_rate);
    let clock = Arc::new(ManualClock::new(at("2026-03-02T10:00:00Z")));
    let limiter = RateLimiter::new(policy, clock.clone());
    assert_eq!(limiter.check("ann", "clerk", accounts), Ok(()));
    assert_eq!(
        limiter.check("ann", "clerk", accounts),
        Err(RetryAfter(Duration::from_secs(60)))
    );
    assert_eq!(limiter.check("ann", "clerk", account), Ok(()));
    // Unknown roles and routes are not this module's business (authorize
    // refuses them): no limiter, no refusal.
    assert_eq!(limiter.check("ann", "nobody", account), Ok(()));
    assert_eq!(limiter.check("ann", "clerk", 99), Ok(()));
}

// ------------------------------------------------------------ budgets

fn budget(store: Arc<dyn StateStore>) -> Budget {
    let settings = config::AdmitSettings {
        budget_tz: jiff::tz::TimeZone::get("America/Los_Angeles").unwrap(),
        budget_tz_name: "America/Los_Angeles".to_owned(),
        ..config::AdmitSettings::default()
    };
    Budget::new(store, &settings, Arc::new(Shadow::new()))
}

#[tokio::test]
async fn a_budget_alerts_once_when_it_is_used_up() {
    let dir = TempDir::new();
    let b = budget(store(&dir));
    let now = at("2026-03-02T18:00:00Z");
    let limit = Some(10);
    let r = b.charge("greenwaste", limit, 4, now).await.unwrap();
    assert_eq!((r.used, r.remaining()), (4, Some(6)));
    assert_eq!(
        b.check("greenwaste", limit, now).await.unwrap().remaining(),
        Some(6)
    );
    assert_eq!(
        b.charge("greenwaste", limit, 5, now)
            .await
            .unwrap()
            .remaining(),
        Some(1)
    );
    // This charge crosses the budget: 2 of its 3 records are over it.
    assert_eq!(
        b.charge("greenwaste", limit, 3, now).await,
        Err(BudgetError::Exceeded(BudgetExceeded {
            limit: 10,
            used: 12,
            over: 2,
            alert: true
        }))
    );
    // Later charges and checks are refused without a new alert.
    assert_eq!(
        b.charge("greenwaste", limit, 1, now).await,
        Err(BudgetError::Exceeded(BudgetExceeded {
            limit: 10,
            used: 13,
            over: 1,
            alert: false
        }))
    );
    assert_eq!(
        b.check("greenwaste", limit, now).await,
        Err(BudgetError::Exceeded(BudgetExceeded {
            limit: 10,
            used: 13,
            over: 0,
            alert: false
        }))
    );
    // Others have their own budget.
    assert_eq!(b.check("non-utilities", limit, now).await.unwrap().used, 0);
}

#[tokio::test]
async fn using_the_budget_exactly_alerts_and_stops_further_data() {
    let dir = TempDir::new();
    let b = budget(store(&dir));
    let now = at("2026-03-02T18:00:00Z");
    let e = b.charge("p", Some(5), 5, now).await.unwrap_err();
    assert_eq!(
        e,
        BudgetError::Exceeded(BudgetExceeded {
            limit: 5,
            used: 5,
            over: 0,
            alert: true
        })
    );
    assert!(b.check("p", Some(5), now).await.is_err());
}

#[tokio::test]
async fn budgets_count_per_local_day() {
    let dir = TempDir::new();
    let b = budget(store(&dir));
    // 23:59 PST on Monday 2 March is 07:59Z on Tuesday.
    let monday_night = at("2026-03-03T07:59:00Z");
    assert_eq!(b.day(monday_night), "2026-03-02");
    assert!(b.charge("p", Some(3), 3, monday_night).await.is_err());
    let tuesday = at("2026-03-03T08:00:00Z");
    assert_eq!(b.day(tuesday), "2026-03-03");
    assert_eq!(b.check("p", Some(3), tuesday).await.unwrap().used, 0);
    assert_eq!(
        b.charge("p", Some(3), 1, tuesday)
            .await
            .unwrap()
            .remaining(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_charges_raise_exactly_one_alert() {
    let dir = TempDir::new();
    let b = budget(store(&dir));
    let now = at("2026-03-02T18:00:00Z");
    let alerts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (b, alerts) = (b.clone(), Arc::clone(&alerts));
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                if let Err(BudgetError::Exceeded(e)) = b.charge("p", Some(100), 1, now).await {
                    if e.alert {
                        alerts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(alerts.load(Ordering::Relaxed), 1);
    assert!(b.check("p", Some(100), now).await.is_err());
}

#[tokio::test]
async fn without_a_budget_nothing_is_counted() {
    let dir = TempDir::new();
    let s = store(&dir);
    let b = budget(s.clone());
    let now = at("2026-03-02T18:00:00Z");
    let r = b.charge("p", None, 1_000_000, now).await.unwrap();
    assert_eq!((r.used, r.limit, r.remaining()), (0, None, None));
    assert_eq!(s.records("p", &b.day(now)).await.unwrap(), 0);
}

#[tokio::test]
async fn budget_counts_are_kept_across_a_restart() {
    let dir = TempDir::new();
    {
        let s = LocalStateStore::open(dir.path()).unwrap();
        assert_eq!(s.add_records("p", "2026-03-01", 7).await.unwrap(), 7);
        assert_eq!(s.add_records("p", "2026-03-02", 3).await.unwrap(), 3);
        assert_eq!(s.add_records("p", "2026-03-02", 2).await.unwrap(), 5);
        assert_eq!(s.add_records("q", "2026-03-03", 1).await.unwrap(), 1);
        // Only the two latest days are kept.
        assert_eq!(s.records("p", "2026-03-01").await.unwrap(), 0);
    }
    let s = LocalStateStore::open(dir.path()).unwrap();
    assert_eq!(s.records("p", "2026-03-02").await.unwrap(), 5);
    assert_eq!(s.records("q", "2026-03-03").await.unwrap(), 1);
    s.flush_budgets().unwrap();
}

// ------------------------------------------------------------ freezes

#[tokio::test]
async fn freezes_survive_a_restart() {
    let dir = TempDir::new();
    let now = at("2026-03-02T18:00:00Z");
    {
        let s = LocalStateStore::open(dir.path()).unwrap();
        let change = s
            .freeze("ACC-100001", "privacy-officer", now)
            .await
            .unwrap();
        assert!(matches!(change, FreezeChange::Frozen(_)));
        assert_eq!(change.freeze().by, "privacy-officer");
        let again = s
            .freeze("ACC-100001", "someone-else", now + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(again, FreezeChange::AlreadyFrozen(change.freeze().clone()));
        s.freeze("ACC-100002", "privacy-officer", now)
            .await
            .unwrap();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let file = dir.path().join(LocalStateStore::FREEZES_FILE);
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let s = LocalStateStore::open(dir.path()).unwrap();
    assert!(s.is_frozen("ACC-100001").await.unwrap());
    assert!(!s.is_frozen("ACC-100003").await.unwrap());
    let list = s.list_freezes().await.unwrap();
    assert_eq!(
        list.iter().map(|f| f.account.as_str()).collect::<Vec<_>>(),
        ["ACC-100001", "ACC-100002"]
    );
    assert_eq!(list[0].at, now);
    let lifted = s.unfreeze("ACC-100001").await.unwrap().unwrap();
    assert_eq!(lifted.by, "privacy-officer");
    assert_eq!(s.unfreeze("ACC-100001").await.unwrap(), None);
    drop(s);
    let s = LocalStateStore::open(dir.path()).unwrap();
    assert!(!s.is_frozen("ACC-100001").await.unwrap());
    assert!(s.is_frozen("ACC-100002").await.unwrap());
}

#[tokio::test]
async fn a_frozen_account_is_served_only_to_the_freeze_role() {
    let dir = TempDir::new();
    let s = LocalStateStore::open(dir.path()).unwrap();
    let settings = default_config().policy.admit.clone();
    assert_eq!(settings.freeze_role, "privacy-officer");
    s.freeze("ACC-1", "privacy-officer", at("2026-03-02T18:00:00Z"))
        .await
        .unwrap();
    let billing = ["billing".to_owned()];
    let officer = ["privacy-officer".to_owned()];
    assert_eq!(
        freeze::check(&s, &settings, &billing, "ACC-1").await,
        Err(FreezeError::Frozen)
    );
    assert_eq!(
        freeze::check(&s, &settings, &officer, "ACC-1").await,
        Ok(())
    );
    assert_eq!(
        freeze::check(&s, &settings, &billing, "ACC-2").await,
        Ok(())
    );
    assert!(freeze::is_freeze_officer(&settings, &officer));
    assert!(!freeze::is_freeze_officer(&settings, &billing));
}

#[tokio::test]
async fn freeze_refuses_bad_account_ids() {
    let dir = TempDir::new();
    let s = LocalStateStore::open(dir.path()).unwrap();
    let now = at("2026-03-02T18:00:00Z");
    for bad in ["", "with space", "tab\there", "é", &"x".repeat(129)] {
        assert!(
            matches!(
                s.freeze(bad, "po", now).await,
                Err(StateError::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(s.freeze(&"x".repeat(128), "po", now).await.is_ok());
    assert!(s.list_freezes().await.unwrap().len() == 1);
}

#[test]
fn a_corrupt_state_file_stops_open() {
    let dir = TempDir::new();
    std::fs::write(dir.path().join(LocalStateStore::FREEZES_FILE), b"{not json").unwrap();
    let e = LocalStateStore::open(dir.path()).unwrap_err();
    assert!(matches!(e, StateError::Storage(_)), "{e}");
    std::fs::write(
        dir.path().join(LocalStateStore::FREEZES_FILE),
        br#"{"version": 2, "freezes": []}"#,
    )
    .unwrap();
    let e = LocalStateStore::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("format version 2"), "{e}");
}

// ------------------------------------------------------------ page caps and export

#[test]
fn page_size_above_the_cap_is_lowered() {
    let config = default_config();
    let policy = &config.policy;
    let accounts = &policy.routes[route(policy, "accounts")];
    let cap = |q: &str| page_cap(accounts, q);
    assert_eq!(cap("limit=500"), Some("limit=100".to_owned()));
    assert_eq!(cap("limit=100"), None);
    assert_eq!(cap("limit=0100"), None);
    assert_eq!(cap("limit=7"), None);
    assert_eq!(cap(""), None);
    assert_eq!(cap("offset=10"), None);
    assert_eq!(
        cap("offset=10&limit=100000&sort=name"),
        Some("offset=10&limit=100&sort=name".to_owned())
    );
    // Tricks an upstream might read as a large page or as "no limit".
    for q in [
        "limit=0",
        "limit=-1",
        "limit=1e9",
        "limit=",
        "limit",
        "limit=abc",
        "limit=+500",
        "limit=%31%30%30%30",
        "limit=99999999999999999999",
    ] {
        let name = q.split('=').next().unwrap();
        assert_eq!(cap(q), Some(format!("{name}=100")), "{q}");
    }
    assert_eq!(cap("%6Cimit=1000"), Some("%6Cimit=100".to_owned()));
    assert_eq!(cap("LIMIT=101"), Some("LIMIT=100".to_owned()));
    assert_eq!(
        cap("limit=5&limit=5000"),
        Some("limit=5&limit=100".to_owned())
    );
    assert_eq!(cap("a=1;limit=900"), Some("a=1;limit=100".to_owned()));
    assert_eq!(cap("limits=900&xlimit=900"), None);
    // A route without a cap is left alone.
    let account = &policy.routes[route(policy, "account")];
    assert_eq!(page_cap(account, "limit=100000"), None);
}

#[test]
fn export_routes_are_denied_to_roles_that_may_not_export() {
    let config = default_config();
    let policy = &config.policy;
    let export = &policy.routes[route(policy, "export-csv")];
    let accounts = &policy.routes[route(policy, "accounts")];
    let role = |n: &str| policy.role(n).unwrap().clone();
    assert_eq!(export_allowed(&role("billing"), export), Ok(()));
    for r in ["non-utilities", "greenwaste"] {
        assert!(!role(r).may_export, "{r}");
        assert_eq!(export_allowed(&role(r), export), Err(ExportDenied));
        assert_eq!(export_allowed(&role(r), accounts), Ok(()));
    }
}

// ------------------------------------------------------------ revocations

const REVOKE_POLICY: &str = r#"
[routes.account]
path = "/accounts/{id}"

[roles.clerk]
routes = [{ route = "account", methods = ["GET"] }]

[[principals]]
name = "alice"
roles = ["clerk"]
cert_names = ["alice"]

[[principals]]
name = "bob"
roles = ["clerk"]

[[principals]]
name = "carol"
roles = ["clerk"]
revoked = true

[revocations]
principals = ["bob"]
api_key_sha256 = ["2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AE"]
cert_serials = ["00:0A:1B:2C"]
"#;

#[test]
fn revoked_principals_keys_and_serials_are_refused() {
    let config = load("", REVOKE_POLICY);
    let policy = &config.policy;
    let p = |n: &str| policy.principal(n).unwrap().clone();
    let revoked_key = crate::identity::api_key_hash(b"foo");
    let good_key = crate::identity::api_key_hash(b"bar");
    let cert = |serial: &str| PeerCertificate {
        names: vec!["alice".to_owned()],
        serial: serial.to_owned(),
        ..PeerCertificate::default()
    };
    assert_eq!(
        revoke::check(policy, &p("alice"), Some(&good_key), Some(&cert("0b"))),
        Ok(())
    );
    // The serial as x509-parser prints it (leading zero byte, lower case).
    assert_eq!(
        revoke::check(policy, &p("alice"), None, Some(&cert("0a1b2c"))),
        Err(Revoked::Certificate)
    );
    assert_eq!(
        revoke::check(policy, &p("alice"), Some(&revoked_key), None),
        Err(Revoked::ApiKey)
    );
    assert_eq!(
        revoke::check(policy, &p("bob"), None, None),
        Err(Revoked::Principal)
    );
    assert_eq!(
        revoke::check(policy, &p("carol"), None, None).map_err(Revoked::code),
        Err("principal_revoked")
    );
    assert!(policy.revocations.cert_serial("A:1B:2C"));
    assert!(!policy.revocations.cert_serial("0A1B2D"));
    // Debug never prints a key hash.
    let debug = format!("{:?}", policy.revocations);
    assert!(!debug.to_lowercase().contains("2c26b46b"), "{debug}");
}

#[test]
fn serials_have_one_spelling() {
    assert_eq!(config::normalize_serial("00:0A:1b"), Some("a1b".to_owned()));
    assert_eq!(config::normalize_serial("00"), Some("0".to_owned()));
    assert_eq!(config::normalize_serial("0x1"), None);
    assert_eq!(config::normalize_serial(""), None);
    assert_eq!(
        config::normalize_serial(&"f".repeat(40)),
        Some("f".repeat(40))
    );
    assert_eq!(config::normalize_serial(&"f".repeat(41)), None);
}

// ------------------------------------------------------------ the state backend

#[tokio::test]
async fn open_state_uses_the_configured_data_dir() {
    let dir = TempDir::new();
    let mut config = load("", "");
    config.data_dir = dir.path().join("state");
    let s = open_state(&config).unwrap();
    s.freeze("ACC-9", "po", at("2026-03-02T18:00:00Z"))
        .await
        .unwrap();
    assert!(dir
        .path()
        .join("state")
        .join(LocalStateStore::FREEZES_FILE)
        .exists());
}

// ------------------------------------------------------------ the shadow

/// A store that fails every call while `down` is set, like a database that
/// cannot be reached.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn StateStore>,
    down: std::sync::atomic::AtomicBool,
}

impl Flaky {
    fn up(&self) -> Result<(), StateError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StateError::Storage("unreachable".to_owned()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl StateStore for Flaky {
    async fn add_failure(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
        window: Duration,
    ) -> Result<u32, StateError> {
        self.up()?;
        self.inner.add_failure(identity, now, window).await
    }
    async fn clear_failures(&self, identity: &IdentityKey) -> Result<(), StateError> {
        self.up()?;
        self.inner.clear_failures(identity).await
    }
    async fn lock(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StateError> {
        self.up()?;
        self.inner.lock(identity, now, until).await
    }
    async fn lock_of(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<Option<LockEntry>, StateError> {
        self.up()?;
        self.inner.lock_of(identity, now).await
    }
    async fn unlock(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<Option<LockEntry>, StateError> {
        self.up()?;
        self.inner.unlock(identity, now).await
    }
    async fn locks(&self, now: SystemTime) -> Result<Vec<LockEntry>, StateError> {
        self.up()?;
        self.inner.locks(now).await
    }
    async fn freeze(
        &self,
        account: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<FreezeChange, StateError> {
        self.up()?;
        self.inner.freeze(account, by, now).await
    }
    async fn unfreeze(&self, account: &str) -> Result<Option<Freeze>, StateError> {
        self.up()?;
        self.inner.unfreeze(account).await
    }
    async fn is_frozen(&self, account: &str) -> Result<bool, StateError> {
        self.up()?;
        self.inner.is_frozen(account).await
    }
    async fn list_freezes(&self) -> Result<Vec<Freeze>, StateError> {
        self.up()?;
        self.inner.list_freezes().await
    }
    async fn add_records(&self, principal: &str, day: &str, n: u64) -> Result<u64, StateError> {
        self.up()?;
        self.inner.add_records(principal, day, n).await
    }
    async fn records(&self, principal: &str, day: &str) -> Result<u64, StateError> {
        self.up()?;
        self.inner.records(principal, day).await
    }
}

fn flaky(dir: &TempDir) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: store(dir),
        down: std::sync::atomic::AtomicBool::new(false),
    })
}

#[tokio::test]
async fn a_budget_holds_through_an_outage_and_its_count_is_pushed_after() {
    let dir = TempDir::new();
    let flaky = flaky(&dir);
    let b = budget(flaky.clone());
    let now = at("2026-03-02T18:00:00Z");
    let limit = Some(25);
    b.charge("greenwaste", limit, 10, now).await.unwrap();
    assert_eq!(b.check("greenwaste", limit, now).await.unwrap().used, 10);
    flaky.down.store(true, Ordering::SeqCst);
    assert!(matches!(
        b.check("greenwaste", limit, now).await,
        Err(BudgetError::Store(_))
    ));
    // The shadow starts from the store's last total.
    assert_eq!(b.check_shadow("greenwaste", limit, now).unwrap().used, 10);
    assert_eq!(
        b.charge_shadow("greenwaste", limit, 10, now).unwrap().used,
        20
    );
    let crossed = b.charge_shadow("greenwaste", limit, 10, now).unwrap_err();
    assert_eq!((crossed.used, crossed.alert), (30, true));
    assert!(b.check_shadow("greenwaste", limit, now).is_err());
    assert!(b.reconcile().await.is_err(), "still away: nothing pushed");
    flaky.down.store(false, Ordering::SeqCst);
    b.reconcile().await.unwrap();
    let day = b.day(now);
    assert_eq!(flaky.inner.records("greenwaste", &day).await.unwrap(), 30);
    // Pushed once: a second reconcile adds nothing.
    b.reconcile().await.unwrap();
    assert_eq!(flaky.inner.records("greenwaste", &day).await.unwrap(), 30);
    assert!(b.check("greenwaste", limit, now).await.is_err());
}

#[tokio::test]
async fn failed_sign_ons_lock_through_an_outage_and_the_lock_is_pushed_after() {
    let dir = TempDir::new();
    let flaky = flaky(&dir);
    let shadow = Arc::new(Shadow::new());
    let lock = Lockout::new(flaky.clone(), LockoutConfig::default(), shadow.clone());
    let now = at("2026-03-02T18:00:00Z");
    let guesser = ip("192.0.2.9");
    flaky.down.store(true, Ordering::SeqCst);
    assert!(matches!(
        lock.check(&guesser, now).await,
        Err(LockError::Store(_))
    ));
    for n in 1..=2 {
        assert_eq!(
            lock.record_failure_shadow(&guesser, now),
            LockState::Counting {
                failures: n,
                max_failures: 3
            }
        );
    }
    assert!(matches!(
        lock.record_failure_shadow(&guesser, now),
        LockState::Locked { new: true, .. }
    ));
    assert!(matches!(
        lock.check_all_shadow(std::slice::from_ref(&guesser), now),
        Err(LockError::Locked { .. })
    ));
    assert!(lock.check_all_shadow(&[ip("192.0.2.10")], now).is_ok());
    flaky.down.store(false, Ordering::SeqCst);
    assert!(shadow.has_pending());
    lock.reconcile().await.unwrap();
    assert!(!shadow.has_pending());
    assert!(flaky.inner.lock_of(&guesser, now).await.unwrap().is_some());
    assert!(matches!(
        lock.check(&guesser, now).await,
        Err(LockError::Locked { .. })
    ));
}

#[tokio::test]
async fn a_lock_seen_before_an_outage_holds_during_it() {
    let dir = TempDir::new();
    let flaky = flaky(&dir);
    let lock = Lockout::new(
        flaky.clone(),
        LockoutConfig::default(),
        Arc::new(Shadow::new()),
    );
    let now = at("2026-03-02T18:00:00Z");
    let key = ip("192.0.2.20");
    for _ in 0..3 {
        lock.record_failure(&key, now).await.unwrap();
    }
    assert!(lock.check(&key, now).await.is_err());
    flaky.down.store(true, Ordering::SeqCst);
    assert!(lock
        .check_all_shadow(std::slice::from_ref(&key), now)
        .is_err());
    // … until it ends.
    let later = now + LockoutConfig::default().lock + Duration::from_secs(1);
    assert!(lock
        .check_all_shadow(std::slice::from_ref(&key), later)
        .is_ok());
}
