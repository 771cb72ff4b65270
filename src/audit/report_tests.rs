// Compiled only under #[cfg(test)] (see the parent module).
//! Tests of the quarterly access review.

use time::macros::datetime;

use super::*;
use crate::audit::file::{AuditLog, AuditOptions};
use crate::audit::keys::SigningKey;
use crate::audit::record::RecordDraft;
use crate::audit::testutil::{FakeClock, TempDir};

fn unmask(principal: &str, role: &str, class: &str, reason: &str) -> RecordDraft {
    RecordDraft::new(Kind::Unmask, principal, Outcome::Granted, "ok")
        .roles([role])
        .request("GET", "accounts.get")
        .accounts([format!("A-{principal}")])
        .classes([class])
        .reason(reason)
        .released(1)
}

/// A quarter of activity; returns the log directory.
fn quarter_log() -> TempDir {
    let dir = TempDir::new("report");
    let clock = FakeClock::new(datetime!(2026-06-30 12:00 UTC));
    let options = AuditOptions {
        clock: clock.clock(),
        ..AuditOptions::default()
    };
    let log =
        AuditLog::open(dir.path(), SigningKey::generate().expect("key"), options).expect("open");
    let append = |d: RecordDraft| {
        log.append_sync(d).expect("append");
    };
    // Before the quarter: not counted.
    append(unmask("coll-a", "collections", "ssn", "COLL-1 old"));
    // Wednesday 2026-07-01, business hours.
    clock.set(datetime!(2026-07-01 10:00 UTC));
    for _ in 0..40 {
        append(unmask("coll-a", "collections", "ssn", "COLL-2 skip trace"));
    }
    for _ in 0..3 {
        append(unmask(
            "coll-b",
            "collections",
            "ssn",
            "COLL-3 payment plan",
        ));
    }
    for _ in 0..4 {
        append(unmask(
            "coll-c",
            "collections",
            "ssn",
            "COLL-3 payment plan",
        ));
    }
    // Off-hours: 22:30 on a weekday, and a Saturday noon.
    clock.set(datetime!(2026-07-02 22:30 UTC));
    append(unmask(
        "coll-b",
        "collections",
        "ssn",
        "<script>alert(1)</script> | *x*",
    ));
    clock.set(datetime!(2026-07-04 12:00 UTC));
    append(unmask("coll-c", "collections", "dob", "COLL-4"));
    // Denied attempts.
    clock.set(datetime!(2026-07-06 09:00 UTC));
    append(
        RecordDraft::new(Kind::Unmask, "csr-1", Outcome::Denied, "role_not_allowed")
            .roles(["customer-service"])
            .request("GET", "accounts.get")
            .classes(["ssn"]),
    );
    append(
        RecordDraft::new(Kind::Unmask, "coll-b", Outcome::Denied, "no_reason")
            .roles(["collections"])
            .request("GET", "accounts.get")
            .classes(["ssn"]),
    );
    // A grant: issued, used once, refused, expired; another revoked.
    append(
        RecordDraft::new(Kind::GrantIssued, "pmo-1", Outcome::Granted, "ok")
            .roles(["pmo-approver"])
            .on_behalf_of("dm-1")
            .grant_id("g-1")
            .classes(["card_number"])
            .accounts(["A-9"])
            .reason("CHG-77 refund"),
    );
    append(
        RecordDraft::new(Kind::Decrypt, "dm-1", Outcome::Granted, "ok")
            .roles(["it-data-management"])
            .grant_id("g-1")
            .classes(["card_number"])
            .accounts(["A-9"])
            .reason("CHG-77 refund")
            .released(1),
    );
    append(
        RecordDraft::new(Kind::GrantUsed, "dm-1", Outcome::Granted, "ok")
            .roles(["it-data-management"])
            .grant_id("g-1"),
    );
    append(
        RecordDraft::new(Kind::GrantRefused, "dm-1", Outcome::Denied, "grant_used_up")
            .roles(["it-data-management"])
            .grant_id("g-1"),
    );
    append(
        RecordDraft::new(Kind::GrantExpired, "maskgate", Outcome::Granted, "expired")
            .on_behalf_of("dm-1")
            .grant_id("g-1"),
    );
    append(
        RecordDraft::new(Kind::GrantIssued, "pmo-1", Outcome::Granted, "ok")
            .roles(["pmo-approver"])
            .on_behalf_of("dm-1")
            .grant_id("g-2")
            .classes(["card_number"])
            .reason("CHG-78"),
    );
    append(
        RecordDraft::new(Kind::GrantRevoked, "pmo-1", Outcome::Granted, "ok")
            .roles(["pmo-approver"])
            .on_behalf_of("dm-1")
            .grant_id("g-2"),
    );
    append(
        RecordDraft::new(Kind::Lockout, "csr-1", Outcome::Denied, "too_many_denials")
            .roles(["customer-service"]),
    );
    // After the quarter: not counted.
    clock.set(datetime!(2026-10-01 00:00 UTC));
    append(unmask(
        "coll-a",
        "collections",
        "ssn",
        "COLL-9 next quarter",
    ));
    log.close().expect("close");
    dir
}

fn roles() -> Vec<(String, Vec<String>)> {
    vec![
        ("coll-a".into(), vec!["collections".into()]),
        ("coll-b".into(), vec!["collections".into()]),
        ("coll-c".into(), vec!["collections".into()]),
        ("coll-d".into(), vec!["collections".into()]),
        ("csr-1".into(), vec!["customer-service".into()]),
        ("pmo-1".into(), vec!["pmo-approver".into()]),
        ("dm-1".into(), vec!["it-data-management".into()]),
        ("auditor".into(), vec!["security-auditor".into()]),
    ]
}

#[test]
fn quarter_parses_and_bounds() {
    let q: Quarter = "2026Q3".parse().expect("quarter");
    assert_eq!(
        q,
        Quarter {
            year: 2026,
            quarter: 3
        }
    );
    let utc = jiff::tz::TimeZone::UTC;
    assert_eq!(q.start(&utc), datetime!(2026-07-01 0:00 UTC));
    assert_eq!(q.end(&utc), datetime!(2026-10-01 0:00 UTC));
    let q4: Quarter = "2026-q4".parse().expect("quarter");
    let minus5 = jiff::tz::TimeZone::fixed(jiff::tz::offset(-5));
    assert_eq!(q4.end(&minus5), datetime!(2027-01-01 0:00 -5));
    // Midnight in Palo Alto: -07:00 in summer (daylight saving), -08:00 in winter.
    let pacific = jiff::tz::TimeZone::get("America/Los_Angeles").expect("zone");
    assert_eq!(q.start(&pacific), datetime!(2026-07-01 0:00 -7));
    assert_eq!(q4.end(&pacific), datetime!(2027-01-01 0:00 -8));
    for bad in ["2026Q5", "2026", "26Q1", "Q3", "2026Q0"] {
        assert!(bad.parse::<Quarter>().is_err(), "{bad}");
    }
}

#[test]
fn report_counts_the_quarter() {
    let dir = quarter_log();
    let r = report(dir.path(), "2026Q3", &roles()).expect("report");
    assert_eq!(r.quarter, "2026Q3");
    assert_eq!(r.records, 59);
    assert_eq!(r.unreadable_lines, 0);

    let collections = r
        .role_holders
        .iter()
        .find(|h| h.role == "collections")
        .expect("role");
    assert_eq!(
        collections.principals,
        ["coll-a", "coll-b", "coll-c", "coll-d"]
    );
    assert_eq!(collections.active, ["coll-a", "coll-b", "coll-c"]);
    // maskgate (the grant sweeper) has no roles in records; nothing else is missing.
    assert!(
        r.roles_not_in_policy.is_empty(),
        "{:?}",
        r.roles_not_in_policy
    );

    let a = &r.unmasks_by_principal[0];
    assert_eq!(
        (a.principal.as_str(), a.requests, a.released),
        ("coll-a", 40, 40)
    );
    let ssn = r
        .unmasks_by_class
        .iter()
        .find(|c| c.class == "ssn")
        .expect("ssn");
    assert_eq!(ssn.requests, 48);
    assert_eq!(ssn.principals, ["coll-a", "coll-b", "coll-c"]);
    assert_eq!(r.unmasks_by_reason[0].reason, "COLL-2 skip trace");
    assert_eq!(r.unmasks_by_reason[0].requests, 40);

    assert_eq!(r.denied_total, 4); // two unmasks, a refused grant, a lockout
    assert!(r
        .denied
        .iter()
        .any(|d| d.principal == "csr-1" && d.why == "role_not_allowed"));

    let g = &r.grants;
    assert_eq!(
        (g.issued, g.used, g.refused, g.revoked, g.expired),
        (2, 1, 1, 1, 1)
    );
    let g1 = &g.grants[0];
    assert_eq!(
        (
            g1.grant_id.as_str(),
            g1.approver.as_str(),
            g1.grantee.as_str(),
            g1.uses,
            g1.refused,
            g1.end.as_str()
        ),
        ("g-1", "pmo-1", "dm-1", 1, 1, "expired")
    );
    assert_eq!(g.grants[1].end, "revoked");

    let off: Vec<(&str, u64)> = r
        .unusual
        .off_hours
        .iter()
        .map(|o| (o.principal.as_str(), o.requests))
        .collect();
    assert_eq!(off, [("coll-b", 1), ("coll-c", 1)]);
    // coll-a: 40 against a median of (0, 4, 5, 40) = 4.5 → flagged; nobody else.
    assert_eq!(r.unusual.above_peers.len(), 1);
    let above = &r.unusual.above_peers[0];
    assert_eq!(
        (
            above.principal.as_str(),
            above.role.as_str(),
            above.requests,
            above.peers
        ),
        ("coll-a", "collections", 40, 4)
    );
    assert!((above.peer_median - 4.5).abs() < 1e-9);
    assert_eq!(r.unusual.events.len(), 1);
}

#[test]
fn off_hours_follow_the_offset() {
    let dir = quarter_log();
    let options = ReportOptions {
        tz: jiff::tz::TimeZone::fixed(jiff::tz::offset(8)),
        tz_name: "UTC+08:00".to_owned(),
        ..ReportOptions::default()
    };
    let q = "2026Q3".parse().expect("quarter");
    let r = report_with(dir.path(), q, &roles(), &options).expect("report");
    // 10:00 UTC is 18:00 at +8 (in hours), 22:30 UTC is 06:30 next day (off).
    assert!(r.business_hours.contains("UTC+08:00"));
    let coll_a = r.unusual.off_hours.iter().find(|o| o.principal == "coll-a");
    assert!(coll_a.is_none());
    assert!(r.unusual.off_hours.iter().any(|o| o.principal == "coll-b"));
}

#[test]
fn renderers_escape_and_stand_alone() {
    let dir = quarter_log();
    let r = report(dir.path(), "2026Q3", &roles()).expect("report");

    let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("json parses");
    assert_eq!(json["grants"]["issued"], 2);

    let md = r.to_markdown();
    assert!(md.starts_with("# Access review 2026Q3\n"));
    for title in [
        "## Who holds which role",
        "## Unmasks by principal",
        "## Unmasks by class",
        "## Unmasks by reason",
        "## Denied attempts",
        "## Decrypt grants",
        "## Unusual: unmasks outside business hours",
        "## Unusual: far above peers",
    ] {
        assert!(md.contains(title), "missing {title}");
    }
    assert!(!md.contains("<script>"));
    assert!(md.contains("&lt;script&gt;alert(1)&lt;/script&gt; \\| \\*x\\*"));

    let html = r.to_html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<style>"));
    assert!(!html.contains("<script"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    for external in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "external reference {external}");
    }
}

#[test]
fn median_and_escapes() {
    assert_eq!(median(&[]), 0.0);
    assert_eq!(median(&[1, 2, 9]), 2.0);
    assert_eq!(median(&[1, 2, 3, 9]), 2.5);
    assert_eq!(html_escape("a&b\"'<"), "a&amp;b&quot;&#39;&lt;");
    assert_eq!(md_escape("a|b\nc"), "a\\|b c");
}
