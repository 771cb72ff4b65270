//! The compiled access-lifecycle settings of the policy: principals'
//! validity windows, revocation lists, rate limits, record budgets, page
//! size caps and the freeze role. The request-time decisions are in
//! [`crate::admit`]; this module only holds the checked values.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::time::SystemTime;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;

/// When a principal may call: an absolute validity period and, optionally,
/// allowed days and hours in a time zone (a contractor's contract window).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessWindow {
    /// `valid_from`: refused before this instant (inclusive start).
    pub valid_from: Option<SystemTime>,
    /// `valid_until`: refused from this instant on (exclusive end).
    pub valid_until: Option<SystemTime>,
    /// `hours`: the allowed days and local hours.
    pub hours: Option<DailyHours>,
}

impl AccessWindow {
    /// True when the window restricts nothing.
    pub fn is_unrestricted(&self) -> bool {
        self.valid_from.is_none() && self.valid_until.is_none() && self.hours.is_none()
    }
}

/// Allowed days and local hours: `hours = { tz, days, from, until }`.
///
/// A local time `t` on day `d` is inside when `d` is an allowed day and
/// `from <= t < until`. When `until <= from` the window runs past midnight
/// (22:00 to 06:00): the part after midnight belongs to the day it started
/// on, so `t < until` is inside when the *previous* day is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyHours {
    /// The time zone the hours are in (IANA name, bundled tz database).
    pub tz: TimeZone,
    /// The time zone's name as written (`America/Los_Angeles`).
    pub tz_name: String,
    /// The allowed days (of the window's start).
    pub days: DaySet,
    /// Start, in minutes after local midnight (0 to 1439), inclusive.
    pub from_minute: u16,
    /// End, in minutes after local midnight (1 to 1440), exclusive.
    pub until_minute: u16,
}

/// A set of weekdays.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DaySet(u8);

impl DaySet {
    /// Every day of the week.
    pub const ALL: DaySet = DaySet(0x7f);
    /// The names the config uses, Monday first.
    pub const NAMES: [&'static str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    /// The set with `day` added.
    #[must_use]
    pub fn with(self, day: Weekday) -> DaySet {
        DaySet(self.0 | Self::bit(day))
    }

    /// True when `day` is in the set.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & Self::bit(day) != 0
    }

    /// True when no day is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The day a config name (`mon` … `sun`, any case) stands for.
    pub fn day_from_name(name: &str) -> Option<Weekday> {
        let i = Self::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))?;
        Weekday::from_monday_zero_offset(i8::try_from(i).ok()?).ok()
    }

    fn bit(day: Weekday) -> u8 {
        1u8 << day.to_monday_zero_offset()
    }
}

impl fmt::Debug for DaySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "DaySet({})", names.join(","))
    }
}

/// The period a rate counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatePeriod {
    /// `per_second`.
    Second,
    /// `per_minute`.
    Minute,
}

/// A rate limit: `count` requests per period, with bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSpec {
    /// Requests replenished per period.
    pub count: NonZeroU32,
    /// The period.
    pub period: RatePeriod,
    /// Most requests accepted at once after a quiet spell (default: `count`).
    pub burst: NonZeroU32,
}

impl RateSpec {
    /// Largest `per_second`, `per_minute` or `burst` accepted.
    pub const LIMIT: u32 = 1_000_000;
}

/// A route's own limits in a role (`[roles.NAME.route_rates.ROUTE]`); each
/// one given replaces the role's for that route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteRate {
    /// Per principal, on this route.
    pub rate: Option<RateSpec>,
    /// All principals of the role together, on this route.
    pub role_rate: Option<RateSpec>,
}

/// A route's page size cap: `page_param` values above `max` are lowered to
/// it before the request goes upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageCap {
    /// The query parameter that sets the page size (default `limit`).
    pub param: String,
    /// The largest page size passed upstream.
    pub max: u32,
}

impl PageCap {
    /// Largest `max_page_size` accepted.
    pub const LIMIT: u32 = 1_000_000;
}

/// `[revocations]` of every policy file together: principals, API keys and
/// certificate serials refused at once. Never prints a key hash.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Revoked principal names.
    pub principals: BTreeSet<String>,
    /// SHA-256 hashes of revoked API keys.
    pub api_key_sha256: HashSet<[u8; 32]>,
    /// Revoked certificate serials, normalized by [`normalize_serial`],
    /// whatever their issuer (weaker: serials are unique per CA only).
    pub cert_serials: BTreeSet<String>,
    /// Revoked certificates by issuer ([`crate::identity::normalize_dn`])
    /// and serial ([`normalize_serial`]).
    pub cert_issuer_serials: BTreeSet<(String, String)>,
}

impl Revocations {
    /// True when the principal named `name` is revoked here.
    pub fn principal(&self, name: &str) -> bool {
        self.principals.contains(name)
    }

    /// True when the API key with this SHA-256 is revoked.
    pub fn api_key(&self, sha256: &[u8; 32]) -> bool {
        self.api_key_sha256.contains(sha256)
    }

    /// True when the certificate serial (hex, any case, colons allowed) is
    /// revoked.
    pub fn cert_serial(&self, serial: &str) -> bool {
        normalize_serial(serial).is_some_and(|s| self.cert_serials.contains(&s))
    }

    /// True when the certificate of `issuer` (normalized) with `serial` is
    /// revoked, by issuer and serial or by serial alone.
    pub fn cert(&self, issuer: &str, serial: &str) -> bool {
        normalize_serial(serial).is_some_and(|s| {
            self.cert_serials.contains(&s)
                || self.cert_issuer_serials.contains(&(issuer.to_owned(), s))
        })
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
            && self.api_key_sha256.is_empty()
            && self.cert_serials.is_empty()
            && self.cert_issuer_serials.is_empty()
    }
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("principals", &self.principals)
            .field("api_key_sha256", &self.api_key_sha256.len())
            .field("cert_serials", &self.cert_serials)
            .field("cert_issuer_serials", &self.cert_issuer_serials)
            .finish()
    }
}

/// A certificate serial in one spelling: lower-case hex without colons,
/// spaces or leading zeros (`"0"` for zero). `None` when it is not hex or
/// longer than 20 octets (40 digits, the most RFC 5280 allows).
pub fn normalize_serial(serial: &str) -> Option<String> {
    let digits: String = serial
        .chars()
        .filter(|c| *c != ':' && *c != ' ')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    let out = if trimmed.is_empty() { "0" } else { trimmed };
    (out.len() <= 40).then(|| out.to_owned())
}

/// Policy-wide admission settings (`[admit]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmitSettings {
    /// The time zone whose calendar day record budgets count (default UTC).
    pub budget_tz: TimeZone,
    /// Its name as written.
    pub budget_tz_name: String,
    /// The role that freezes and unfreezes accounts and still sees frozen
    /// ones (default `privacy-officer`).
    pub freeze_role: String,
    /// The roles that may read `/_maskgate/metrics` (default
    /// `security-auditor` and `it-data-management`).
    pub metrics_roles: Vec<String>,
}

impl AdmitSettings {
    /// The default `metrics_roles`.
    pub const DEFAULT_METRICS_ROLES: [&'static str; 2] = ["security-auditor", "it-data-management"];
}

impl Default for AdmitSettings {
    fn default() -> AdmitSettings {
        AdmitSettings {
            budget_tz: TimeZone::UTC,
            budget_tz_name: "UTC".to_owned(),
            freeze_role: "privacy-officer".to_owned(),
            metrics_roles: AdmitSettings::DEFAULT_METRICS_ROLES
                .map(str::to_owned)
                .to_vec(),
        }
    }
}
