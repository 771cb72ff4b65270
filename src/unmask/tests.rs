// Compiled only under #[cfg(test)] (see the parent module).
//! Tests of the unmask decision and the grant flow against the shipped
//! default policy and small policies of their own.

use crate::testutil::Wait as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::config::{self, Policy};

// ------------------------------------------------------------ fixtures

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("maskgate-unmask-test-{}-{n}", std::process::id()));
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

/// The default policy plus a principal `dual` holding both the approver and
/// the grantee role, a second approver, a second IT person and a revoked IT
/// person.
fn test_policy() -> Arc<Policy> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new();
    let extra = r#"
[[principals]]
name = "dual"
roles = ["pmo-approver", "it-data-management"]

[[principals]]
name = "pmo-2"
roles = ["pmo-approver"]

[[principals]]
name = "it-2"
roles = ["it-data-management"]

[[principals]]
name = "it-gone"
roles = ["it-data-management"]
revoked = true
"#;
    std::fs::write(dir.path().join("extra.toml"), extra).unwrap();
    let files: Vec<String> = ["classes", "routes", "roles", "principals"]
        .iter()
        .map(|f| {
            format!(
                "{:?}",
                root.join(format!("policies/{f}.toml"))
                    .display()
                    .to_string()
            )
        })
        .chain([format!(
            "{:?}",
            dir.path().join("extra.toml").display().to_string()
        )])
        .collect();
    let gateway = format!(
        "[server]\nlisten = \"127.0.0.1:8443\"\ncert = \"s.pem\"\nkey = \"s.key\"\n\n[upstream]\nurl = \"http://127.0.0.1:9000\"\n\n[policy]\nfiles = [{}]\n",
        files.join(", ")
    );
    let path = dir.path().join("maskgate.toml");
    std::fs::write(&path, gateway).unwrap();
    match config::load(&path) {
        Ok(c) => c.policy,
        Err(e) => panic!("test policy does not load:\n{e}"),
    }
}

fn route(policy: &Policy, name: &str) -> usize {
    policy.routes.iter().position(|r| r.name == name).unwrap()
}

fn roles(p: &Policy, name: &str) -> Vec<String> {
    p.principal(name).unwrap().roles.clone()
}

const START: u64 = 1_780_000_000;
const REASON: &str = "COLL-2026-00042 transfer to agency";

fn req(classes: &[FieldClass], reason: Option<&str>, grant: Option<&str>) -> UnmaskRequest {
    UnmaskRequest {
        classes: classes.to_vec(),
        reason: reason.map(str::to_owned),
        grant_id: grant.map(str::to_owned),
    }
}

/// Everything one test needs: policy, counters, a store in a temp dir, a
/// manual clock.
struct World {
    policy: Arc<Policy>,
    counters: RateCounters,
    store: GrantStore,
    clock: ManualClock,
    dir: TempDir,
}

impl World {
    fn new() -> World {
        let dir = TempDir::new();
        World {
            policy: test_policy(),
            counters: RateCounters::new(),
            store: GrantStore::open(&dir.path().join("data")).unwrap(),
            clock: ManualClock::at_unix(START),
            dir,
        }
    }

    fn ctx<'a>(
        &'a self,
        principal: &'a str,
        route_name: &'a str,
        account: Option<&'a str>,
    ) -> EvalContext<'a> {
        EvalContext {
            principal,
            route_name,
            account_id: account,
            counters: &self.counters,
            grants: &self.store,
            clock: &self.clock,
        }
    }

    /// Evaluates for `principal` using its first role.
    fn eval(
        &self,
        principal: &str,
        route_name: &str,
        account: Option<&str>,
        r: &UnmaskRequest,
    ) -> Result<UnmaskGrant, Denial> {
        let p = self.policy.principal(principal).unwrap();
        let role = self.policy.role(&p.roles[0]).unwrap();
        let ctx = self.ctx(principal, route_name, account);
        evaluate(role, route(&self.policy, route_name), r, &ctx).wait()
    }

    fn issue_as(&self, approver: &str, r: &IssueRequest) -> Result<Grant, GrantError> {
        let roles = roles(&self.policy, approver);
        let actor = Actor {
            name: approver,
            roles: &roles,
        };
        self.store
            .issue(&self.policy, &actor, r, self.clock.now())
            .wait()
    }

    fn revoke_as(&self, by: &str, id: &str) -> Result<Grant, GrantError> {
        let roles = roles(&self.policy, by);
        let actor = Actor {
            name: by,
            roles: &roles,
        };
        self.store
            .revoke(&self.policy, id, &actor, self.clock.now())
            .wait()
    }
}

fn card_grant(accounts: &[&str], max_uses: u32) -> IssueRequest {
    IssueRequest {
        grantee: "it-data-management".to_owned(),
        scope: Scope::Accounts {
            accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        },
        classes: vec![FieldClass::CardNumber, FieldClass::CardExpiry],
        reason: "CHG-1234 chargeback dispute review".to_owned(),
        validity_minutes: 60,
        max_uses,
    }
}

const CARD: &[FieldClass] = &[FieldClass::CardNumber];
const IT_REASON: &str = "CHG-1234 chargeback dispute";

// ------------------------------------------------------------ evaluate

#[test]
fn collections_unmasks_ssn_with_a_reason() {
    let w = World::new();
    let got = w
        .eval(
            "collections",
            "account",
            Some("AC-1"),
            &req(&[FieldClass::Ssn], Some(REASON), None),
        )
        .unwrap();
    assert_eq!(got.classes, [(FieldClass::Ssn, Action::Clear)]);
    assert_eq!(got.class_names(), ["ssn"]);
    assert_eq!(got.record_limit, 5);
    assert!(got.grant.is_none());
    let base = w.policy.role("collections").unwrap().actions;
    let table = got.apply(base);
    assert_eq!(table.get(FieldClass::Ssn), Action::Clear);
    for c in FieldClass::ALL {
        if c != FieldClass::Ssn {
            assert_eq!(table.get(c), base.get(c), "{c}");
        }
    }
    assert_eq!(w.counters.used("collections", w.clock.now()), (5, 5));
    got.commit(2);
    assert_eq!(w.counters.used("collections", w.clock.now()), (2, 2));
    // the list route too
    let got = w
        .eval(
            "collections",
            "accounts",
            None,
            &req(&[FieldClass::Ssn], Some(REASON), None),
        )
        .unwrap();
    assert_eq!(got.record_limit, 5);
}

#[test]
fn every_policy_denial_has_its_code() {
    let w = World::new();
    let ssn = &[FieldClass::Ssn][..];
    type Case<'a> = (&'a str, &'a str, &'a [FieldClass], Option<&'a str>, Denial);
    let cases: &[Case<'_>] = &[
        (
            "customer-service",
            "account",
            ssn,
            Some(REASON),
            Denial::NO_UNMASK_RIGHT,
        ),
        (
            "pmo-approver",
            "account",
            CARD,
            Some(REASON),
            Denial::NO_UNMASK_RIGHT,
        ),
        (
            "collections",
            "account",
            &[FieldClass::Ssn, FieldClass::Dob],
            Some(REASON),
            Denial::CLASS_NOT_ALLOWED,
        ),
        (
            "collections",
            "account",
            CARD,
            Some(REASON),
            Denial::CLASS_NOT_ALLOWED,
        ),
        (
            "collections",
            "export-csv",
            ssn,
            Some(REASON),
            Denial::ROUTE_NOT_ALLOWED,
        ),
        ("collections", "account", ssn, None, Denial::REASON_MISSING),
        (
            "collections",
            "account",
            ssn,
            Some("   "),
            Denial::REASON_MISSING,
        ),
        (
            "collections",
            "account",
            ssn,
            Some("COLL-1"),
            Denial::REASON_TOO_SHORT,
        ),
        (
            "collections",
            "account",
            ssn,
            Some("the agency asked for it"),
            Denial::REASON_PATTERN,
        ),
        (
            "collections",
            "account",
            ssn,
            Some("re: COLL-2026-00042 transfer"),
            Denial::REASON_PATTERN,
        ),
        (
            "it-data-management",
            "account",
            CARD,
            Some(IT_REASON),
            Denial::GRANT_REQUIRED,
        ),
        (
            "it-data-management",
            "account",
            CARD,
            None,
            Denial::REASON_MISSING,
        ),
    ];
    for (principal, route_name, classes, reason, want) in cases {
        let got = w.eval(
            principal,
            route_name,
            Some("AC-1"),
            &req(classes, *reason, None),
        );
        assert_eq!(
            got.unwrap_err(),
            *want,
            "{principal} {route_name} {reason:?}"
        );
        assert!(Denial::POLICY_CODES.contains(&want.why));
        assert_ne!(want.message(), "unmask refused");
    }
    // none of them spent budget
    assert_eq!(w.counters.used("collections", w.clock.now()), (0, 0));
}

#[test]
fn record_limit_is_the_smaller_of_request_and_remaining_budget() {
    let w = World::new();
    let r = req(&[FieldClass::Ssn], Some(REASON), None);
    // 50 an hour, 5 a request: nine full requests, then 5 left
    for _ in 0..9 {
        let g = w.eval("collections", "account", Some("AC-1"), &r).unwrap();
        assert_eq!(g.record_limit, 5);
        g.commit(5);
    }
    let g = w.eval("collections", "account", Some("AC-1"), &r).unwrap();
    assert_eq!(g.record_limit, 5);
    g.commit(3);
    let g = w.eval("collections", "account", Some("AC-1"), &r).unwrap();
    assert_eq!(g.record_limit, 2);
    g.commit(2);
    let d = w
        .eval("collections", "account", Some("AC-1"), &r)
        .unwrap_err();
    assert_eq!(d, Denial::OVER_HOURLY_LIMIT);
    assert_eq!(d.to_string(), "unmask refused: over_hourly_limit");
    // the next hours fill the day: 200 a day
    for hour in 1..4 {
        w.clock.advance(Duration::from_secs(3600));
        for _ in 0..10 {
            w.eval("collections", "account", Some("AC-1"), &r)
                .unwrap_or_else(|d| panic!("hour {hour}: {d}"))
                .commit(5);
        }
    }
    w.clock.advance(Duration::from_secs(3600));
    let d = w
        .eval("collections", "account", Some("AC-1"), &r)
        .unwrap_err();
    assert_eq!(d, Denial::OVER_DAILY_LIMIT);
    // a day after the first records, room again
    w.clock
        .set(SystemTime::UNIX_EPOCH + Duration::from_secs(START + 24 * 3600));
    assert_eq!(
        w.eval("collections", "account", Some("AC-1"), &r)
            .unwrap()
            .record_limit,
        5
    );
}

// ------------------------------------------------------------ grants

#[test]
fn grant_flow_issue_use_once_then_refused() {
    let w = World::new();
    let g = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 1))
        .unwrap();
    assert_eq!(g.id.len(), 32);
    assert!(g
        .id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(g.approver, "pmo-approver");
    assert_eq!(g.grantee, "it-data-management");
    assert_eq!(g.classes, [FieldClass::CardNumber, FieldClass::CardExpiry]);
    assert_eq!(g.class_names(), ["card_number", "card_expiry"]);
    assert_eq!(g.expires_at, w.clock.now() + Duration::from_secs(3600));
    assert_eq!((g.uses, g.max_uses, g.uses_left()), (0, 1, 1));
    assert_eq!(g.status(w.clock.now()), GrantStatus::Active);
    assert!(
        !format!("{g:?}").contains(&g.id),
        "Debug shows the whole id"
    );

    let r = req(
        &[FieldClass::CardNumber, FieldClass::CardExpiry],
        Some(IT_REASON),
        Some(&g.id),
    );
    let ok = w
        .eval("it-data-management", "account", Some("AC-7"), &r)
        .unwrap();
    assert_eq!(
        ok.classes,
        [
            (FieldClass::CardNumber, Action::Decrypt),
            (FieldClass::CardExpiry, Action::Decrypt)
        ]
    );
    assert_eq!(ok.record_limit, 1);
    let used = ok.grant.clone().unwrap();
    assert_eq!(used.grant_id, g.id);
    assert_eq!((used.uses, used.max_uses), (1, 1));
    assert_eq!(used.approver, "pmo-approver");
    let table = ok.apply(w.policy.role("it-data-management").unwrap().actions);
    assert_eq!(table.get(FieldClass::CardNumber), Action::Decrypt);
    assert_eq!(table.get(FieldClass::Ssn), Action::Last4);
    ok.commit(1);

    let d = w
        .eval("it-data-management", "account", Some("AC-7"), &r)
        .unwrap_err();
    assert_eq!(d.why, "grant_used_up");
    assert_eq!(
        w.store
            .get(&g.id)
            .wait()
            .unwrap()
            .unwrap()
            .status(w.clock.now()),
        GrantStatus::UsedUp
    );
    // the refused use did not spend budget
    assert_eq!(w.counters.used("it-data-management", w.clock.now()), (1, 1));
}

#[test]
fn approver_may_not_be_grantee() {
    let w = World::new();
    let mut r = card_grant(&["AC-7"], 1);
    r.grantee = "dual".to_owned();
    // dual holds both roles: issuing to itself is the two-person rule
    let e = w.issue_as("dual", &r).unwrap_err();
    assert_eq!(e, GrantError::SelfGrant);
    assert_eq!(e.code(), "two_person_rule");
    r.grantee = "pmo-approver".to_owned();
    assert_eq!(
        w.issue_as("pmo-approver", &r).unwrap_err(),
        GrantError::SelfGrant
    );
    // another approver may grant to dual
    r.grantee = "dual".to_owned();
    let g = w.issue_as("pmo-2", &r).unwrap();
    assert_eq!(g.grantee, "dual");
    assert!(w.store.list(w.clock.now()).wait().unwrap().len() == 1);
}

#[test]
fn issuing_checks_roles_limits_classes_scope_and_reason() {
    let w = World::new();
    let base = card_grant(&["AC-7"], 1);
    let with = |f: &dyn Fn(&mut IssueRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, IssueRequest, &str)> = vec![
        ("it-data-management", base.clone(), "not_approver"),
        ("collections", base.clone(), "not_approver"),
        (
            "pmo-approver",
            with(&|r| r.grantee = "nobody".to_owned()),
            "grantee_unknown",
        ),
        (
            "pmo-approver",
            with(&|r| r.grantee = "collections".to_owned()),
            "grantee_not_eligible",
        ),
        (
            "pmo-approver",
            with(&|r| r.grantee = "it-gone".to_owned()),
            "grantee_not_eligible",
        ),
        (
            "pmo-approver",
            with(&|r| r.validity_minutes = 241),
            "grant_validity",
        ),
        (
            "pmo-approver",
            with(&|r| r.validity_minutes = 0),
            "grant_validity",
        ),
        ("pmo-approver", with(&|r| r.max_uses = 11), "grant_max_uses"),
        ("pmo-approver", with(&|r| r.max_uses = 0), "grant_max_uses"),
        (
            "pmo-approver",
            with(&|r| r.classes.clear()),
            "grant_no_class",
        ),
        (
            "pmo-approver",
            with(&|r| r.classes.push(FieldClass::Ssn)),
            "grant_class_not_encrypted",
        ),
        (
            "pmo-approver",
            with(&|r| {
                r.scope = Scope::Accounts {
                    accounts: Vec::new(),
                }
            }),
            "grant_bad_scope",
        ),
        (
            "pmo-approver",
            with(&|r| {
                r.scope = Scope::Accounts {
                    accounts: vec!["a/b".to_owned()],
                }
            }),
            "grant_bad_scope",
        ),
        (
            "pmo-approver",
            with(&|r| {
                r.scope = Scope::Accounts {
                    accounts: vec!["123-45-6789".to_owned()],
                }
            }),
            "grant_bad_scope",
        ),
        (
            "pmo-approver",
            with(&|r| {
                r.scope = Scope::Accounts {
                    accounts: (0..101).map(|i| format!("AC-{i}")).collect(),
                }
            }),
            "grant_bad_scope",
        ),
        (
            "pmo-approver",
            with(&|r| {
                r.scope = Scope::Route {
                    route: "nowhere".to_owned(),
                }
            }),
            "grant_bad_scope",
        ),
        (
            "pmo-approver",
            with(&|r| r.reason = "short".to_owned()),
            "grant_bad_reason",
        ),
        (
            "pmo-approver",
            with(&|r| r.reason = "card 4111 1111 1111 1111 disputed".to_owned()),
            "grant_bad_reason",
        ),
    ];
    for (approver, r, code) in &cases {
        let e = w.issue_as(approver, r).unwrap_err();
        assert_eq!(e.code(), *code, "{approver}: {e}");
        assert!(e.is_refusal());
        assert!(!e.to_string().contains("4111"), "{e}");
    }
    assert!(w.store.list(w.clock.now()).wait().unwrap().is_empty());
    // at the maxima it works; duplicates are folded
    let r = with(&|r| {
        r.validity_minutes = 240;
        r.max_uses = 10;
        r.classes = vec![
            FieldClass::CardExpiry,
            FieldClass::CardNumber,
            FieldClass::CardExpiry,
        ];
        r.scope = Scope::Accounts {
            accounts: vec!["AC-1".to_owned(), "AC-1".to_owned(), "AC-2".to_owned()],
        };
    });
    let g = w.issue_as("pmo-approver", &r).unwrap();
    assert_eq!(g.classes, [FieldClass::CardNumber, FieldClass::CardExpiry]);
    assert_eq!(g.scope.accounts(), ["AC-1", "AC-2"]);
    assert_eq!(g.max_uses, 10);
}

#[test]
fn every_grant_denial_has_its_code() {
    let w = World::new();
    let it = "it-data-management";
    let use_req = |id: &str, classes: &[FieldClass]| req(classes, Some(IT_REASON), Some(id));

    // unknown
    let d = w
        .eval(
            it,
            "account",
            Some("AC-7"),
            &use_req("00112233445566778899aabbccddeeff", CARD),
        )
        .unwrap_err();
    assert_eq!(d.why, "grant_unknown");

    // wrong principal: it-2 presents it-data-management's grant
    let g = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 3))
        .unwrap();
    let d = w
        .eval("it-2", "account", Some("AC-7"), &use_req(&g.id, CARD))
        .unwrap_err();
    assert_eq!(d.why, "grant_wrong_principal");

    // scope: another account, a list route (no single account)
    for (route_name, account) in [("account", Some("AC-8")), ("accounts", None)] {
        let d = w
            .eval(it, route_name, account, &use_req(&g.id, CARD))
            .unwrap_err();
        assert_eq!(d.why, "grant_scope", "{route_name} {account:?}");
    }
    // class: a card_number-only grant asked for card_expiry
    let mut narrow = card_grant(&["AC-7"], 3);
    narrow.classes = vec![FieldClass::CardNumber];
    let n = w.issue_as("pmo-approver", &narrow).unwrap();
    let d = w
        .eval(
            it,
            "account",
            Some("AC-7"),
            &use_req(&n.id, &[FieldClass::CardExpiry]),
        )
        .unwrap_err();
    assert_eq!(d.why, "grant_class");
    // none of these spent a use
    assert_eq!(w.store.get(&g.id).wait().unwrap().unwrap().uses, 0);
    assert_eq!(w.store.get(&n.id).wait().unwrap().unwrap().uses, 0);

    // a route scope covers any account on that route only
    let mut by_route = card_grant(&[], 2);
    by_route.scope = Scope::Route {
        route: "accounts".to_owned(),
    };
    let rg = w.issue_as("pmo-approver", &by_route).unwrap();
    w.eval(it, "accounts", None, &use_req(&rg.id, CARD))
        .unwrap()
        .commit(1);
    let d = w
        .eval(it, "account", Some("AC-7"), &use_req(&rg.id, CARD))
        .unwrap_err();
    assert_eq!(d.why, "grant_scope");

    // revoked
    let revoked = w.revoke_as("pmo-approver", &g.id).unwrap();
    assert_eq!(revoked.revoked.as_ref().unwrap().by, "pmo-approver");
    let d = w
        .eval(it, "account", Some("AC-7"), &use_req(&g.id, CARD))
        .unwrap_err();
    assert_eq!(d.why, "grant_revoked");
    assert_eq!(d.message(), "the grant was revoked");

    // expired
    let e = w
        .issue_as("pmo-approver", &card_grant(&["AC-9"], 3))
        .unwrap();
    w.clock.advance(Duration::from_secs(59 * 60 + 59));
    w.eval(it, "account", Some("AC-9"), &use_req(&e.id, CARD))
        .unwrap()
        .commit(1);
    w.clock.advance(Duration::from_secs(1));
    let d = w
        .eval(it, "account", Some("AC-9"), &use_req(&e.id, CARD))
        .unwrap_err();
    assert_eq!(d.why, "grant_expired");
    assert_eq!(
        w.store
            .get(&e.id)
            .wait()
            .unwrap()
            .unwrap()
            .status(w.clock.now()),
        GrantStatus::Expired
    );
    // a stranger learns only that it is not theirs
    let d = w
        .eval("it-2", "account", Some("AC-9"), &use_req(&e.id, CARD))
        .unwrap_err();
    assert_eq!(d.why, "grant_wrong_principal");
}

#[test]
fn budget_denial_keeps_the_grant_use() {
    let w = World::new();
    let it = "it-data-management";
    let g = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 10))
        .unwrap();
    let r = req(CARD, Some(IT_REASON), Some(&g.id));
    // 10 an hour for IT
    for _ in 0..10 {
        w.eval(it, "account", Some("AC-7"), &r).unwrap().commit(1);
    }
    assert_eq!(w.store.get(&g.id).wait().unwrap().unwrap().uses, 10);
    let g2 = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 1))
        .unwrap();
    let r2 = req(CARD, Some(IT_REASON), Some(&g2.id));
    let d = w.eval(it, "account", Some("AC-7"), &r2).unwrap_err();
    assert_eq!(d, Denial::OVER_HOURLY_LIMIT);
    assert_eq!(w.store.get(&g2.id).wait().unwrap().unwrap().uses, 0);
}

#[test]
fn revoking_needs_the_issuer_or_an_approver_and_happens_once() {
    let w = World::new();
    let g = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 2))
        .unwrap();
    let e = w.revoke_as("it-data-management", &g.id).unwrap_err();
    assert_eq!(e.code(), "not_approver");
    assert_eq!(
        w.revoke_as("pmo-2", "00112233445566778899aabbccddeeff")
            .unwrap_err(),
        GrantError::Unknown
    );
    let r = w.revoke_as("pmo-2", &g.id).unwrap();
    assert_eq!(r.revoked.as_ref().unwrap().by, "pmo-2");
    assert_eq!(r.revoked.as_ref().unwrap().at, w.clock.now());
    assert_eq!(
        w.revoke_as("pmo-approver", &g.id).unwrap_err(),
        GrantError::Revoked
    );
    assert_eq!(
        w.store.list(w.clock.now()).wait().unwrap()[0].status,
        GrantStatus::Revoked
    );
    // the issuer may revoke even after losing the approver role
    let g = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 2))
        .unwrap();
    let actor = Actor {
        name: "pmo-approver",
        roles: &[],
    };
    w.store
        .revoke(&w.policy, &g.id, &actor, w.clock.now())
        .wait()
        .unwrap();
}

#[test]
fn grants_survive_reopening() {
    let w = World::new();
    let data = w.dir.path().join("data");
    let a = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 2))
        .unwrap();
    let b = w
        .issue_as("pmo-approver", &card_grant(&["AC-8"], 1))
        .unwrap();
    w.store
        .use_grant(
            &a.id,
            "it-data-management",
            "account",
            Some("AC-7"),
            CARD,
            w.clock.now(),
        )
        .wait()
        .unwrap();
    w.revoke_as("pmo-approver", &b.id).unwrap();

    let path = data.join(GrantStore::FILE_NAME);
    assert_eq!(w.store.path(), path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [GrantStore::FILE_NAME], "temp files left");

    let again = GrantStore::open(&data).unwrap();
    let a2 = again.get(&a.id).wait().unwrap().unwrap();
    assert_eq!(a2, w.store.get(&a.id).wait().unwrap().unwrap());
    assert_eq!(a2.uses, 1);
    assert_eq!(a2.expires_at, a.expires_at);
    assert_eq!(a2.issued_at, a.issued_at);
    let b2 = again.get(&b.id).wait().unwrap().unwrap();
    assert!(b2.revoked.is_some());
    // the reopened store goes on counting
    again
        .use_grant(
            &a.id,
            "it-data-management",
            "account",
            Some("AC-7"),
            CARD,
            w.clock.now(),
        )
        .wait()
        .unwrap();
    let e = again
        .use_grant(
            &a.id,
            "it-data-management",
            "account",
            Some("AC-7"),
            CARD,
            w.clock.now(),
        )
        .wait()
        .unwrap_err();
    assert_eq!(e, GrantError::UsedUp);
    let third = GrantStore::open(&data).unwrap();
    assert_eq!(third.get(&a.id).wait().unwrap().unwrap().uses, 2);
    let listed = third.list(w.clock.now()).wait().unwrap();
    let statuses: Vec<GrantStatus> = listed.iter().map(|l| l.status).collect();
    assert_eq!(statuses, [GrantStatus::UsedUp, GrantStatus::Revoked]);
}

#[test]
fn a_single_use_grant_used_from_8_threads_succeeds_once() {
    for round in 0..5 {
        let w = World::new();
        let g = w
            .issue_as("pmo-approver", &card_grant(&["AC-7"], 1))
            .unwrap();
        let now = w.clock.now();
        let barrier = std::sync::Barrier::new(8);
        let results: Vec<Result<UnmaskGrant, Denial>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let r = req(CARD, Some(IT_REASON), Some(&g.id));
                        w.eval("it-data-management", "account", Some("AC-7"), &r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}");
        for r in &results {
            if let Err(d) = r {
                // 8 reservations of 1 fit the hourly 10: the losers lost
                // the grant, not the budget
                assert_eq!(d.why, "grant_used_up", "round {round}");
            }
        }
        let reopened = GrantStore::open(&w.dir.path().join("data")).unwrap();
        assert_eq!(reopened.get(&g.id).wait().unwrap().unwrap().uses, 1);
        drop(results);
        assert_eq!(w.counters.used("it-data-management", now), (0, 0));
    }
}

#[test]
fn concurrent_uses_of_a_multi_use_grant_are_counted_exactly() {
    let w = World::new();
    let g = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 10))
        .unwrap();
    let now = w.clock.now();
    let ok: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..4)
                        .filter(|_| {
                            w.store
                                .use_grant(
                                    &g.id,
                                    "it-data-management",
                                    "account",
                                    Some("AC-7"),
                                    CARD,
                                    now,
                                )
                                .wait()
                                .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(ok, 10);
    let again = GrantStore::open(&w.dir.path().join("data")).unwrap();
    assert_eq!(again.get(&g.id).wait().unwrap().unwrap().uses, 10);
}

#[test]
fn expiry_is_reported_once_and_old_grants_are_forgotten() {
    let w = World::new();
    let a = w
        .issue_as("pmo-approver", &card_grant(&["AC-1"], 2))
        .unwrap();
    let b = w
        .issue_as("pmo-approver", &card_grant(&["AC-2"], 1))
        .unwrap();
    let mut long = card_grant(&["AC-3"], 1);
    long.validity_minutes = 240;
    let c = w.issue_as("pmo-approver", &long).unwrap();
    w.store
        .use_grant(
            &b.id,
            "it-data-management",
            "account",
            Some("AC-2"),
            CARD,
            w.clock.now(),
        )
        .wait()
        .unwrap();
    assert!(w
        .store
        .sweep_expired(w.clock.now())
        .wait()
        .unwrap()
        .is_empty());
    w.clock.advance(Duration::from_secs(3600));
    let expired = w.store.sweep_expired(w.clock.now()).wait().unwrap();
    // b is used up, not expired; c is still valid
    assert_eq!(expired.iter().map(|g| &g.id).collect::<Vec<_>>(), [&a.id]);
    assert!(w
        .store
        .sweep_expired(w.clock.now())
        .wait()
        .unwrap()
        .is_empty());
    // the report survives a restart
    let again = GrantStore::open(&w.dir.path().join("data")).unwrap();
    assert!(again
        .sweep_expired(w.clock.now())
        .wait()
        .unwrap()
        .is_empty());
    assert_eq!(again.list(w.clock.now()).wait().unwrap().len(), 3);
    // 30 days after it ended, a grant is forgotten
    w.clock.advance(GRANT_RETENTION + Duration::from_secs(1));
    let expired = w.store.sweep_expired(w.clock.now()).wait().unwrap();
    assert_eq!(expired.iter().map(|g| &g.id).collect::<Vec<_>>(), [&c.id]);
    let left: Vec<String> = w
        .store
        .list(w.clock.now())
        .wait()
        .unwrap()
        .into_iter()
        .map(|l| l.grant.id)
        .collect();
    assert_eq!(left, std::slice::from_ref(&c.id));
}

#[test]
fn a_failed_write_changes_nothing() {
    let w = World::new();
    let g = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 1))
        .unwrap();
    // Make the rename fail whoever runs the test: the file becomes a
    // non-empty directory.
    let path = w.store.path().to_path_buf();
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("x"), b"x").unwrap();
    let e = w
        .store
        .use_grant(
            &g.id,
            "it-data-management",
            "account",
            Some("AC-7"),
            CARD,
            w.clock.now(),
        )
        .wait()
        .unwrap_err();
    assert_eq!(e.code(), "grant_store_failed");
    assert!(!e.is_refusal());
    assert!(Denial::from(e).is_unavailable());
    assert_eq!(w.store.get(&g.id).wait().unwrap().unwrap().uses, 0);
    let e = w
        .issue_as("pmo-approver", &card_grant(&["AC-8"], 1))
        .unwrap_err();
    assert_eq!(e.code(), "grant_store_failed");
    assert_eq!(w.store.list(w.clock.now()).wait().unwrap().len(), 1);
    // through evaluate: 503-worthy, and the budget is not spent
    let r = req(CARD, Some(IT_REASON), Some(&g.id));
    let d = w
        .eval("it-data-management", "account", Some("AC-7"), &r)
        .unwrap_err();
    assert!(d.is_unavailable());
    assert_eq!(w.counters.used("it-data-management", w.clock.now()), (0, 0));
}

#[test]
fn unreadable_store_files_are_errors() {
    let dir = TempDir::new();
    let path = dir.path().join(GrantStore::FILE_NAME);
    std::fs::write(&path, b"{not json").unwrap();
    let e = GrantStore::open(dir.path()).unwrap_err();
    assert_eq!(e.code(), "grant_store_failed");
    std::fs::write(&path, br#"{"version":2,"grants":[]}"#).unwrap();
    let e = GrantStore::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("format version 2"), "{e}");
    std::fs::write(&path, br#"{"version":1,"grants":[]}"#).unwrap();
    let s = GrantStore::open(dir.path()).unwrap();
    assert!(s.list(SystemTime::now()).wait().unwrap().is_empty());
    // a missing directory is created, private
    let fresh = dir.path().join("a/b");
    GrantStore::open(&fresh).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}

#[test]
fn issue_requests_parse_from_json() {
    let r: IssueRequest = serde_json::from_str(
        r#"{"grantee":"it-data-management","scope":{"kind":"accounts","accounts":["AC-7"]},
            "classes":["card_number"],"reason":"CHG-1234 chargeback dispute","validity_minutes":30}"#,
    )
    .unwrap();
    assert_eq!(r.max_uses, 1, "default");
    assert_eq!(r.classes, [FieldClass::CardNumber]);
    assert_eq!(
        r.scope,
        Scope::Accounts {
            accounts: vec!["AC-7".to_owned()]
        }
    );
    let r: IssueRequest = serde_json::from_str(
        r#"{"grantee":"x","scope":{"kind":"route","route":"account"},
            "classes":["card_expiry"],"reason":"r","validity_minutes":30,"max_uses":3}"#,
    )
    .unwrap();
    assert_eq!(r.max_uses, 3);
    assert!(r.scope.accounts().is_empty());
    for bad in [
        r#"{"grantee":"x","scope":{"kind":"route","route":"a"},"classes":["cvv"],"reason":"r","validity_minutes":1}"#,
        r#"{"grantee":"x","scope":{"kind":"everything"},"classes":[],"reason":"r","validity_minutes":1}"#,
        r#"{"grantee":"x","scope":{"kind":"route","route":"a"},"classes":[],"reason":"r","validity_minutes":1,"extra":1}"#,
    ] {
        assert!(serde_json::from_str::<IssueRequest>(bad).is_err(), "{bad}");
    }
}

#[test]
fn headers_to_decision_end_to_end() {
    let w = World::new();
    let g = w
        .issue_as("pmo-approver", &card_grant(&["AC-7"], 1))
        .unwrap();
    let mut h = HeaderMap::new();
    h.insert(HEADER_UNMASK, HeaderValue::from_static("card_number"));
    h.insert(
        HEADER_REASON,
        HeaderValue::from_static("CHG-1234 chargeback dispute"),
    );
    h.insert(
        HEADER_GRANT,
        HeaderValue::from_str(&g.id.to_ascii_uppercase()).unwrap(),
    );
    let r = UnmaskRequest::from_headers(&h).unwrap().unwrap();
    let ok = w
        .eval("it-data-management", "account", Some("AC-7"), &r)
        .unwrap();
    assert_eq!(ok.grant.as_ref().unwrap().grant_id, g.id);
    assert!(UnmaskRequest::from_headers(&HeaderMap::new())
        .unwrap()
        .is_none());
}
