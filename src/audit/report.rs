//! `audit report`: the quarterly access review.
//!
//! Who holds which role (from the policy, given by the caller), unmasks by
//! principal, class and reason, denied attempts, decrypt grants, and unusual
//! activity: unmasks outside business hours, principals far above their
//! peers, lockouts and alerts. Rendered as Markdown, JSON, or one
//! self-contained HTML page (inline CSS, no scripts, no external assets).
//!
//! Definitions:
//! - an *unmask* is a granted `unmask` or `decrypt` record;
//! - *off-hours* is outside [`ReportOptions::work_start_hour`]..
//!   [`ReportOptions::work_end_hour`] in [`ReportOptions::tz`] (the
//!   policy's `[admit] budget_tz` when the report is given the policy;
//!   default 07:00–19:00 UTC), and Saturdays and Sundays unless
//!   [`ReportOptions::weekends_off_hours`] is false; the quarter's bounds
//!   are midnights in the same zone (daylight saving time followed);
//! - *far above peers*: for each role, the peers are the principals the
//!   policy gives that role plus those seen using it in the quarter; a
//!   principal is flagged when their unmask count is more than
//!   [`ReportOptions::peer_factor`] times the peers' median (zeros counted)
//!   and more than [`ReportOptions::peer_min`];
//! - a grant's uses are its `grant_used` records, or its granted `decrypt`
//!   records if there are more of those.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use jiff::tz::TimeZone;
use serde::Serialize;
use time::OffsetDateTime;

use crate::audit::query::{for_each_record, QueryError};
use crate::audit::record::{format_time, Kind, Outcome, Record};

/// Rows kept in event lists (lockouts, alerts, off-hours examples).
const MAX_EVENT_ROWS: usize = 200;

/// A calendar quarter: `2026Q3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quarter {
    /// The year.
    pub year: i32,
    /// 1 to 4.
    pub quarter: u8,
}

impl FromStr for Quarter {
    type Err = String;

    fn from_str(s: &str) -> Result<Quarter, String> {
        let bad = || format!("{s:?} is not a quarter: write it as 2026Q3");
        let upper = s.trim().to_ascii_uppercase();
        let (year, q) = upper.split_once('Q').ok_or_else(bad)?;
        let year = year.strip_suffix('-').unwrap_or(year);
        if year.len() != 4 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let quarter: u8 = q.parse().map_err(|_| bad())?;
        if !(1..=4).contains(&quarter) {
            return Err(bad());
        }
        Ok(Quarter { year, quarter })
    }
}

impl fmt::Display for Quarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}Q{}", self.year, self.quarter)
    }
}

impl Quarter {
    /// The first instant of the quarter in `tz`.
    pub fn start(&self, tz: &TimeZone) -> OffsetDateTime {
        month_start(self.year, (self.quarter - 1) * 3 + 1, tz)
    }

    /// The first instant after the quarter in `tz`.
    pub fn end(&self, tz: &TimeZone) -> OffsetDateTime {
        if self.quarter == 4 {
            month_start(self.year + 1, 1, tz)
        } else {
            month_start(self.year, self.quarter * 3 + 1, tz)
        }
    }
}

fn month_start(year: i32, month: u8, tz: &TimeZone) -> OffsetDateTime {
    let (Ok(year), Ok(month)) = (i16::try_from(year), i8::try_from(month)) else {
        return OffsetDateTime::UNIX_EPOCH;
    };
    jiff::civil::Date::new(year, month, 1)
        .and_then(|d| tz.to_timestamp(d.to_datetime(jiff::civil::Time::midnight())))
        .ok()
        .and_then(|ts| OffsetDateTime::from_unix_timestamp(ts.as_second()).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `t` as the wall-clock time in `tz`; `None` outside jiff's range.
fn wall_clock(t: OffsetDateTime, tz: &TimeZone) -> Option<jiff::civil::DateTime> {
    let nanos = i32::try_from(t.nanosecond()).unwrap_or(0);
    jiff::Timestamp::new(t.unix_timestamp(), nanos)
        .ok()
        .map(|ts| tz.to_datetime(ts))
}

/// Report settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportOptions {
    /// The time zone of business hours and quarter bounds (default UTC).
    pub tz: TimeZone,
    /// Its name, as the report prints it.
    pub tz_name: String,
    /// Business hours start (default 7).
    pub work_start_hour: u8,
    /// Business hours end, exclusive (default 19).
    pub work_end_hour: u8,
    /// Saturdays and Sundays count as off-hours (default true).
    pub weekends_off_hours: bool,
    /// Flag a principal above this multiple of the peer median (default 3).
    pub peer_factor: u64,
    /// … and above this many unmasks (default 10).
    pub peer_min: u64,
}

impl Default for ReportOptions {
    fn default() -> ReportOptions {
        ReportOptions {
            tz: TimeZone::UTC,
            tz_name: "UTC".to_owned(),
            work_start_hour: 7,
            work_end_hour: 19,
            weekends_off_hours: true,
            peer_factor: 3,
            peer_min: 10,
        }
    }
}

impl ReportOptions {
    fn is_off_hours(&self, t: OffsetDateTime) -> bool {
        let Some(local) = wall_clock(t, &self.tz) else {
            return true;
        };
        let hour = u8::try_from(local.hour()).unwrap_or(0);
        let weekend = matches!(
            local.weekday(),
            jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
        );
        hour < self.work_start_hour
            || hour >= self.work_end_hour
            || (self.weekends_off_hours && weekend)
    }
}

/// Why a report could not be made.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The quarter argument is wrong.
    #[error("{0}")]
    BadQuarter(String),
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] QueryError),
}

/// Who holds a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleHolders {
    /// The role.
    pub role: String,
    /// Principals the policy gives it.
    pub principals: Vec<String>,
    /// Of those, the ones with records in the quarter.
    pub active: Vec<String>,
}

/// A role a principal used in records although the policy given does not
/// grant it (the policy changed during the quarter, or is out of date).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoleNotInPolicy {
    /// The principal.
    pub principal: String,
    /// The role.
    pub role: String,
    /// Records with it.
    pub records: u64,
}

/// Unmasks of one principal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrincipalUnmasks {
    /// The principal.
    pub principal: String,
    /// Granted unmask/decrypt requests.
    pub requests: u64,
    /// Clear values released.
    pub released: u64,
    /// Classes unmasked.
    pub classes: Vec<String>,
    /// Distinct accounts touched.
    pub accounts: u64,
    /// Requests off-hours.
    pub off_hours: u64,
}

/// Unmasks of one class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassUnmasks {
    /// The class.
    pub class: String,
    /// Granted requests that asked for it.
    pub requests: u64,
    /// Clear values released by those requests (all classes).
    pub released: u64,
    /// Who.
    pub principals: Vec<String>,
}

/// Unmasks with one reason text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReasonUnmasks {
    /// The reason as recorded (`(none)` when absent).
    pub reason: String,
    /// Granted requests.
    pub requests: u64,
    /// Who.
    pub principals: Vec<String>,
}

/// Denied records of one principal, kind and reason code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeniedRow {
    /// The principal.
    pub principal: String,
    /// The record kind.
    pub kind: String,
    /// The reason code.
    pub why: String,
    /// How many.
    pub count: u64,
    /// The last one.
    pub last: String,
}

/// One decrypt grant's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantRow {
    /// The grant id.
    pub grant_id: String,
    /// When issued (empty if issued before the quarter).
    pub issued: String,
    /// The approver.
    pub approver: String,
    /// The grantee.
    pub grantee: String,
    /// Classes.
    pub classes: Vec<String>,
    /// Accounts in scope.
    pub accounts: u64,
    /// The approver's reason.
    pub reason: String,
    /// Uses.
    pub uses: u64,
    /// Refused presentations.
    pub refused: u64,
    /// `revoked`, `expired` or `open` at the end of the quarter.
    pub end: String,
}

/// Decrypt grants in the quarter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GrantSummary {
    /// Issued.
    pub issued: u64,
    /// Uses.
    pub used: u64,
    /// Refused presentations (and refused issues).
    pub refused: u64,
    /// Revoked.
    pub revoked: u64,
    /// Expired.
    pub expired: u64,
    /// Per grant.
    pub grants: Vec<GrantRow>,
}

/// Unmasks off-hours by one principal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OffHours {
    /// The principal.
    pub principal: String,
    /// Requests.
    pub requests: u64,
    /// Values released.
    pub released: u64,
    /// Up to five times (local offset).
    pub examples: Vec<String>,
}

/// A principal far above their peers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AbovePeers {
    /// The principal.
    pub principal: String,
    /// The role compared on.
    pub role: String,
    /// Their unmask requests.
    pub requests: u64,
    /// The peers' median.
    pub peer_median: f64,
    /// Peers counted (the principal included).
    pub peers: u64,
}

/// A lockout, unlock or alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventRow {
    /// When.
    pub time: String,
    /// Kind.
    pub kind: String,
    /// Who.
    pub principal: String,
    /// Code.
    pub why: String,
    /// Reason text.
    pub reason: String,
}

/// Unusual activity.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Unusual {
    /// Unmasks outside business hours.
    pub off_hours: Vec<OffHours>,
    /// Far-above-peer volume.
    pub above_peers: Vec<AbovePeers>,
    /// Lockouts, unlocks and alerts.
    pub events: Vec<EventRow>,
}

/// The quarterly access review.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// `2026Q3`.
    pub quarter: String,
    /// First instant.
    pub period_start: String,
    /// First instant after.
    pub period_end: String,
    /// How business hours are defined.
    pub business_hours: String,
    /// How far-above-peer volume is defined.
    pub peer_rule: String,
    /// Records in the quarter.
    pub records: u64,
    /// Role holders from the policy.
    pub role_holders: Vec<RoleHolders>,
    /// Roles used but not in the policy given.
    pub roles_not_in_policy: Vec<RoleNotInPolicy>,
    /// Unmasks by principal.
    pub unmasks_by_principal: Vec<PrincipalUnmasks>,
    /// Unmasks by class.
    pub unmasks_by_class: Vec<ClassUnmasks>,
    /// Unmasks by reason.
    pub unmasks_by_reason: Vec<ReasonUnmasks>,
    /// Denied records in total.
    pub denied_total: u64,
    /// Denied records grouped.
    pub denied: Vec<DeniedRow>,
    /// Grants.
    pub grants: GrantSummary,
    /// Unusual activity.
    pub unusual: Unusual,
    /// Log lines that could not be read (run `audit verify`).
    pub unreadable_lines: u64,
}

/// The report for `quarter` (`2026Q3`) of the log in `dir`, with default
/// options (business hours 07:00–19:00 UTC, Monday to Friday).
pub fn report(
    dir: &Path,
    quarter: &str,
    roles_by_principal: &[(String, Vec<String>)],
) -> Result<Report, ReportError> {
    let quarter: Quarter = quarter.parse().map_err(ReportError::BadQuarter)?;
    report_with(dir, quarter, roles_by_principal, &ReportOptions::default())
}

/// The report for `quarter` of the log in `dir`.
pub fn report_with(
    dir: &Path,
    quarter: Quarter,
    roles_by_principal: &[(String, Vec<String>)],
    options: &ReportOptions,
) -> Result<Report, ReportError> {
    let start = quarter.start(&options.tz);
    let end = quarter.end(&options.tz);
    let mut records = Vec::new();
    let unreadable = for_each_record(dir, |r| {
        if r.time >= start && r.time < end {
            records.push(r);
        }
    })?;
    let mut report = build(&records, quarter, roles_by_principal, options);
    report.unreadable_lines = unreadable.len() as u64;
    Ok(report)
}

fn local_time(t: OffsetDateTime, options: &ReportOptions) -> String {
    let Some(local) = wall_clock(t, &options.tz) else {
        return format_time(t).unwrap_or_default();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute()
    )
}

#[derive(Default)]
struct PrincipalAcc {
    requests: u64,
    released: u64,
    classes: BTreeSet<String>,
    accounts: BTreeSet<String>,
    off_hours: u64,
    off_released: u64,
    off_examples: Vec<String>,
}

#[derive(Default)]
struct GrantAcc {
    issued: String,
    approver: String,
    grantee: String,
    classes: Vec<String>,
    accounts: u64,
    reason: String,
    used: u64,
    decrypts: u64,
    refused: u64,
    end: Option<&'static str>,
}

/// Builds the report from the quarter's records (pure).
pub fn build(
    records: &[Record],
    quarter: Quarter,
    roles_by_principal: &[(String, Vec<String>)],
    options: &ReportOptions,
) -> Report {
    let tz = &options.tz;
    let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut policy_roles: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (principal, roles) in roles_by_principal {
        for role in roles {
            holders
                .entry(role.clone())
                .or_default()
                .insert(principal.clone());
            policy_roles
                .entry(principal.as_str())
                .or_default()
                .insert(role.as_str());
        }
    }
    let mut active: BTreeSet<&str> = BTreeSet::new();
    let mut not_in_policy: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut seen_with_role: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut by_principal: BTreeMap<&str, PrincipalAcc> = BTreeMap::new();
    let mut by_class: BTreeMap<&str, (u64, u64, BTreeSet<&str>)> = BTreeMap::new();
    let mut by_reason: BTreeMap<&str, (u64, BTreeSet<&str>)> = BTreeMap::new();
    let mut denied: BTreeMap<(&str, &str, &str), (u64, OffsetDateTime)> = BTreeMap::new();
    let mut denied_total = 0;
    let mut grants = GrantSummary::default();
    let mut grant_rows: BTreeMap<&str, GrantAcc> = BTreeMap::new();
    let mut events = Vec::new();

    for r in records {
        let p = r.principal.as_str();
        active.insert(p);
        for role in &r.roles {
            seen_with_role.entry(role.as_str()).or_default().insert(p);
            let granted_by_policy = policy_roles
                .get(p)
                .is_some_and(|roles| roles.contains(role.as_str()));
            if !granted_by_policy {
                *not_in_policy
                    .entry((r.principal.clone(), role.clone()))
                    .or_default() += 1;
            }
        }
        if r.outcome == Outcome::Denied {
            denied_total += 1;
            let entry = denied
                .entry((p, r.kind.name(), r.why.as_str()))
                .or_insert((0, r.time));
            entry.0 += 1;
            entry.1 = entry.1.max(r.time);
        }
        if r.kind.releases_values() && r.outcome == Outcome::Granted {
            let acc = by_principal.entry(p).or_default();
            acc.requests += 1;
            acc.released += r.released;
            acc.classes.extend(r.classes.iter().cloned());
            acc.accounts.extend(r.accounts.iter().cloned());
            if options.is_off_hours(r.time) {
                acc.off_hours += 1;
                acc.off_released += r.released;
                if acc.off_examples.len() < 5 {
                    acc.off_examples.push(local_time(r.time, options));
                }
            }
            for class in &r.classes {
                let c = by_class.entry(class.as_str()).or_default();
                c.0 += 1;
                c.1 += r.released;
                c.2.insert(p);
            }
            let reason = by_reason
                .entry(r.reason.as_deref().unwrap_or("(none)"))
                .or_default();
            reason.0 += 1;
            reason.1.insert(p);
        }
        let grant = r.grant_id.as_deref();
        match (r.kind, grant) {
            (Kind::GrantIssued, Some(id)) => {
                if r.outcome == Outcome::Granted {
                    grants.issued += 1;
                    let g = grant_rows.entry(id).or_default();
                    g.issued = local_time(r.time, options);
                    g.approver = r.principal.clone();
                    g.grantee = r.on_behalf_of.clone().unwrap_or_default();
                    g.classes = r.classes.clone();
                    g.accounts = r.accounts.len() as u64;
                    g.reason = r.reason.clone().unwrap_or_default();
                } else {
                    grants.refused += 1;
                }
            }
            (Kind::GrantIssued, None) if r.outcome == Outcome::Denied => grants.refused += 1,
            (Kind::GrantUsed, Some(id)) => grant_rows.entry(id).or_default().used += 1,
            (Kind::Decrypt, Some(id)) if r.outcome == Outcome::Granted => {
                grant_rows.entry(id).or_default().decrypts += 1;
            }
            (Kind::GrantRefused, id) => {
                grants.refused += 1;
                if let Some(id) = id {
                    grant_rows.entry(id).or_default().refused += 1;
                }
            }
            (Kind::GrantRevoked, id) => {
                grants.revoked += 1;
                if let Some(id) = id {
                    grant_rows.entry(id).or_default().end = Some("revoked");
                }
            }
            (Kind::GrantExpired, id) => {
                grants.expired += 1;
                if let Some(id) = id {
                    grant_rows.entry(id).or_default().end = Some("expired");
                }
            }
            _ => {}
        }
        if matches!(r.kind, Kind::Lockout | Kind::Unlock | Kind::Alert)
            && events.len() < MAX_EVENT_ROWS
        {
            events.push(EventRow {
                time: local_time(r.time, options),
                kind: r.kind.name().to_string(),
                principal: r.principal.clone(),
                why: r.why.clone(),
                reason: r.reason.clone().unwrap_or_default(),
            });
        }
    }

    for g in grant_rows.values() {
        grants.used += g.used.max(g.decrypts);
    }
    grants.grants = grant_rows
        .into_iter()
        .map(|(id, g)| GrantRow {
            grant_id: id.to_string(),
            issued: g.issued,
            approver: g.approver,
            grantee: g.grantee,
            classes: g.classes,
            accounts: g.accounts,
            reason: g.reason,
            uses: g.used.max(g.decrypts),
            refused: g.refused,
            end: g.end.unwrap_or("open").to_string(),
        })
        .collect();

    // Far above peers, per role.
    let count_of = |p: &str| by_principal.get(p).map_or(0, |a| a.requests);
    let mut above_peers = Vec::new();
    let all_roles: BTreeSet<&str> = holders
        .keys()
        .map(String::as_str)
        .chain(seen_with_role.keys().copied())
        .collect();
    for role in all_roles {
        let mut peers: BTreeSet<&str> = seen_with_role.get(role).cloned().unwrap_or_default();
        if let Some(h) = holders.get(role) {
            peers.extend(h.iter().map(String::as_str));
        }
        let mut counts: Vec<u64> = peers.iter().map(|p| count_of(p)).collect();
        counts.sort_unstable();
        let median = median(&counts);
        for p in &peers {
            let n = count_of(p);
            if n > options.peer_min && (n as f64) > median * options.peer_factor as f64 {
                above_peers.push(AbovePeers {
                    principal: p.to_string(),
                    role: role.to_string(),
                    requests: n,
                    peer_median: median,
                    peers: peers.len() as u64,
                });
            }
        }
    }

    let off_hours = by_principal
        .iter()
        .filter(|(_, a)| a.off_hours > 0)
        .map(|(p, a)| OffHours {
            principal: p.to_string(),
            requests: a.off_hours,
            released: a.off_released,
            examples: a.off_examples.clone(),
        })
        .collect();

    let mut unmasks_by_principal: Vec<PrincipalUnmasks> = by_principal
        .iter()
        .map(|(p, a)| PrincipalUnmasks {
            principal: p.to_string(),
            requests: a.requests,
            released: a.released,
            classes: a.classes.iter().cloned().collect(),
            accounts: a.accounts.len() as u64,
            off_hours: a.off_hours,
        })
        .collect();
    unmasks_by_principal.sort_by_key(|p| std::cmp::Reverse(p.requests));
    let mut unmasks_by_reason: Vec<ReasonUnmasks> = by_reason
        .into_iter()
        .map(|(reason, (n, ps))| ReasonUnmasks {
            reason: reason.to_string(),
            requests: n,
            principals: ps.into_iter().map(String::from).collect(),
        })
        .collect();
    unmasks_by_reason.sort_by_key(|r| std::cmp::Reverse(r.requests));
    let mut denied: Vec<DeniedRow> = denied
        .into_iter()
        .map(|((p, kind, why), (count, last))| DeniedRow {
            principal: p.to_string(),
            kind: kind.to_string(),
            why: why.to_string(),
            count,
            last: local_time(last, options),
        })
        .collect();
    denied.sort_by_key(|d| std::cmp::Reverse(d.count));

    let weekdays = if options.weekends_off_hours {
        " Monday to Friday"
    } else {
        ", every day"
    };
    Report {
        quarter: quarter.to_string(),
        period_start: format_time(quarter.start(tz)).unwrap_or_default(),
        period_end: format_time(quarter.end(tz)).unwrap_or_default(),
        business_hours: format!(
            "{:02}:00 to {:02}:00{weekdays}, in {}",
            options.work_start_hour, options.work_end_hour, options.tz_name
        ),
        peer_rule: format!(
            "more than {} times the median unmask count of the principals with the same role \
             (the policy's holders and those seen using it, zeros included), and more than {}",
            options.peer_factor, options.peer_min
        ),
        records: records.len() as u64,
        role_holders: holders
            .into_iter()
            .map(|(role, ps)| RoleHolders {
                active: ps
                    .iter()
                    .filter(|p| active.contains(p.as_str()))
                    .cloned()
                    .collect(),
                principals: ps.into_iter().collect(),
                role,
            })
            .collect(),
        roles_not_in_policy: not_in_policy
            .into_iter()
            .map(|((principal, role), records)| RoleNotInPolicy {
                principal,
                role,
                records,
            })
            .collect(),
        unmasks_by_principal,
        unmasks_by_class: by_class
            .into_iter()
            .map(|(class, (n, released, ps))| ClassUnmasks {
                class: class.to_string(),
                requests: n,
                released,
                principals: ps.into_iter().map(String::from).collect(),
            })
            .collect(),
        unmasks_by_reason,
        denied_total,
        denied,
        grants,
        unusual: Unusual {
            off_hours,
            above_peers,
            events,
        },
        unreadable_lines: 0,
    }
}

fn median(sorted: &[u64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2] as f64,
        n => (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0,
    }
}

/// One table of the rendered report.
struct Section {
    title: &'static str,
    note: Option<String>,
    headers: &'static [&'static str],
    rows: Vec<Vec<String>>,
    empty: &'static str,
}

impl Report {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\":\"report encoding failed: {e}\"}}"))
    }

    fn sections(&self) -> Vec<Section> {
        let list = |v: &[String]| v.join(", ");
        let g = &self.grants;
        vec![
            Section {
                title: "Who holds which role",
                note: Some("From the policy in force when the report was made; \"active\" had records this quarter.".into()),
                headers: &["Role", "Principals", "Active"],
                rows: self.role_holders.iter().map(|h| vec![h.role.clone(), list(&h.principals), list(&h.active)]).collect(),
                empty: "No roles given.",
            },
            Section {
                title: "Roles used but not in the policy",
                note: Some("Records carry roles the policy given does not grant these principals: the policy changed during the quarter, or is out of date.".into()),
                headers: &["Principal", "Role", "Records"],
                rows: self.roles_not_in_policy.iter().map(|r| vec![r.principal.clone(), r.role.clone(), r.records.to_string()]).collect(),
                empty: "None.",
            },
            Section {
                title: "Unmasks by principal",
                note: None,
                headers: &["Principal", "Requests", "Values released", "Classes", "Accounts", "Off-hours"],
                rows: self.unmasks_by_principal.iter().map(|p| vec![p.principal.clone(), p.requests.to_string(), p.released.to_string(), list(&p.classes), p.accounts.to_string(), p.off_hours.to_string()]).collect(),
                empty: "No unmasks.",
            },
            Section {
                title: "Unmasks by class",
                note: None,
                headers: &["Class", "Requests", "Values released", "Principals"],
                rows: self.unmasks_by_class.iter().map(|c| vec![c.class.clone(), c.requests.to_string(), c.released.to_string(), list(&c.principals)]).collect(),
                empty: "No unmasks.",
            },
            Section {
                title: "Unmasks by reason",
                note: None,
                headers: &["Reason", "Requests", "Principals"],
                rows: self.unmasks_by_reason.iter().map(|r| vec![r.reason.clone(), r.requests.to_string(), list(&r.principals)]).collect(),
                empty: "No unmasks.",
            },
            Section {
                title: "Denied attempts",
                note: Some(format!("{} denied record(s) in the quarter.", self.denied_total)),
                headers: &["Principal", "Kind", "Why", "Count", "Last"],
                rows: self.denied.iter().map(|d| vec![d.principal.clone(), d.kind.clone(), d.why.clone(), d.count.to_string(), d.last.clone()]).collect(),
                empty: "None.",
            },
            Section {
                title: "Decrypt grants",
                note: Some(format!("Issued {}, used {}, refused {}, revoked {}, expired {}.", g.issued, g.used, g.refused, g.revoked, g.expired)),
                headers: &["Grant", "Issued", "Approver", "Grantee", "Classes", "Accounts", "Reason", "Uses", "Refused", "End"],
                rows: g.grants.iter().map(|r| vec![r.grant_id.clone(), r.issued.clone(), r.approver.clone(), r.grantee.clone(), list(&r.classes), r.accounts.to_string(), r.reason.clone(), r.uses.to_string(), r.refused.to_string(), r.end.clone()]).collect(),
                empty: "No grants.",
            },
            Section {
                title: "Unusual: unmasks outside business hours",
                note: Some(format!("Business hours: {}.", self.business_hours)),
                headers: &["Principal", "Requests", "Values released", "Examples"],
                rows: self.unusual.off_hours.iter().map(|o| vec![o.principal.clone(), o.requests.to_string(), o.released.to_string(), list(&o.examples)]).collect(),
                empty: "None.",
            },
            Section {
                title: "Unusual: far above peers",
                note: Some(format!("Flagged when {}.", self.peer_rule)),
                headers: &["Principal", "Role", "Requests", "Peer median", "Peers"],
                rows: self.unusual.above_peers.iter().map(|a| vec![a.principal.clone(), a.role.clone(), a.requests.to_string(), format!("{:.1}", a.peer_median), a.peers.to_string()]).collect(),
                empty: "None.",
            },
            Section {
                title: "Lockouts and alerts",
                note: None,
                headers: &["Time", "Kind", "Principal", "Why", "Reason"],
                rows: self.unusual.events.iter().map(|e| vec![e.time.clone(), e.kind.clone(), e.principal.clone(), e.why.clone(), e.reason.clone()]).collect(),
                empty: "None.",
            },
        ]
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "Period {} to {} (exclusive). {} record(s).",
            self.period_start, self.period_end, self.records
        );
        if self.unreadable_lines > 0 {
            s.push_str(&format!(
                " WARNING: {} log line(s) could not be read; run `maskgate audit verify`.",
                self.unreadable_lines
            ));
        }
        s
    }

    /// Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# Access review {}\n\n{}\n",
            md_escape(&self.quarter),
            md_escape(&self.summary())
        );
        for s in self.sections() {
            out.push_str(&format!("\n## {}\n\n", s.title));
            if let Some(note) = &s.note {
                out.push_str(&format!("{}\n\n", md_escape(note)));
            }
            if s.rows.is_empty() {
                out.push_str(&format!("{}\n", s.empty));
                continue;
            }
            out.push_str(&format!("| {} |\n", s.headers.join(" | ")));
            out.push_str(&format!("|{}\n", "---|".repeat(s.headers.len())));
            for row in &s.rows {
                let cells: Vec<String> = row.iter().map(|c| md_escape(c)).collect();
                out.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
        }
        out
    }

    /// One self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut out = String::from(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
        );
        out.push_str(&format!(
            "<title>Access review {}</title>\n",
            html_escape(&self.quarter)
        ));
        out.push_str(
            "<style>\n\
             body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#1d2330}\n\
             h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #d5d9e2;padding-bottom:.2em}\n\
             table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border:1px solid #d5d9e2;padding:.3em .5em;text-align:left;vertical-align:top}\n\
             th{background:#eef1f6}tr:nth-child(even) td{background:#f8f9fb}td.num{text-align:right;font-variant-numeric:tabular-nums}\n\
             .note{color:#505a6e}.empty{color:#7a8396;font-style:italic}.warn{color:#a4161a;font-weight:600}\n\
             @media print{body{margin:0;max-width:none}}\n\
             </style>\n</head>\n<body>\n",
        );
        out.push_str(&format!(
            "<h1>Access review {}</h1>\n<p class=\"note\">{}</p>\n",
            html_escape(&self.quarter),
            html_escape(&self.summary())
        ));
        if self.unreadable_lines > 0 {
            out.push_str(
                "<p class=\"warn\">Some log lines could not be read: verify the log.</p>\n",
            );
        }
        for s in self.sections() {
            out.push_str(&format!("<h2>{}</h2>\n", html_escape(s.title)));
            if let Some(note) = &s.note {
                out.push_str(&format!("<p class=\"note\">{}</p>\n", html_escape(note)));
            }
            if s.rows.is_empty() {
                out.push_str(&format!(
                    "<p class=\"empty\">{}</p>\n",
                    html_escape(s.empty)
                ));
                continue;
            }
            out.push_str("<table>\n<thead><tr>");
            for h in s.headers {
                out.push_str(&format!("<th>{}</th>", html_escape(h)));
            }
            out.push_str("</tr></thead>\n<tbody>\n");
            for row in &s.rows {
                out.push_str("<tr>");
                for cell in row {
                    let numeric =
                        !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_digit() || b == b'.');
                    let class = if numeric { " class=\"num\"" } else { "" };
                    out.push_str(&format!("<td{class}>{}</td>", html_escape(cell)));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody>\n</table>\n");
        }
        out.push_str("</body>\n</html>\n");
        out
    }
}

/// Escapes text for HTML element content and attribute values.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a Markdown table cell or paragraph: Markdown
/// punctuation is backslash-escaped, HTML is neutralised, lines are joined.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
