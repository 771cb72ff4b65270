//! Audit records: what one line of the log says, and its canonical bytes.
//!
//! A record is built from a [`RecordDraft`], a type with a fixed set of
//! fields and no free-form map, so nothing but the audit facts can be put
//! into it: no field holds a clear value. The writer ([`crate::audit::chain`])
//! adds `seq`, `time`, `prev` and `hash`.
//!
//! The canonical form of a record is serde_json's compact output of the
//! fields in this fixed order:
//!
//! `seq, time, kind, request_id, principal, on_behalf_of, roles, method,
//! route, accounts, classes, reason, grant_id, outcome, why, released, prev,
//! hash`
//!
//! Every key is always present (`null` when a field does not apply). `hash`
//! is the lower-case hex SHA-256 of the canonical bytes of all the other
//! fields (`prev` included), and the line is those bytes with `,"hash":"…"`
//! added before the closing brace. A line is read back through
//! [`parse_record_line`], which rejects unknown and duplicate keys and any
//! byte that differs from the canonical form (extra whitespace, key order,
//! escapes, trailing bytes).
//!
//! Conventions for the fields of non-request events (the gateway follows
//! them; the report relies on them):
//!
//! | kind | principal | on_behalf_of | outcome |
//! |---|---|---|---|
//! | `unmask`, `decrypt` | the caller | the `X-On-Behalf-Of` person | granted or denied |
//! | `grant_issued` | the approver | the grantee | granted (denied: refused to issue) |
//! | `grant_used` | the grantee | — | granted |
//! | `grant_refused` | who presented the grant | — | denied |
//! | `grant_revoked` | who revoked it | the grantee | granted |
//! | `grant_expired` | `maskgate` | the grantee | granted |
//! | `lockout`, `unlock`, `alert` | the principal concerned | — | as the event says |

use std::fmt;
use std::str::FromStr;

use ring::digest;
use serde::{Deserialize, Serialize};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// The `prev` of the first record: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest identifier (principal, role, class, account id, request id,
/// grant id), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest reason kept, in characters; a longer reason is cut and ends in `…`.
pub const MAX_REASON_CHARS: usize = 512;
/// Most entries in `roles` or `classes`.
pub const MAX_LIST: usize = 64;
/// Most account ids in one record.
pub const MAX_ACCOUNTS: usize = 10_000;

/// The record time format: RFC 3339, UTC, always six fractional digits.
const TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A request to unmask red-flag fields (`X-Unmask`).
    Unmask,
    /// A request to decrypt card data under a grant (`X-Unmask-Grant`).
    Decrypt,
    /// A decrypt grant was issued by an approver.
    GrantIssued,
    /// A decrypt grant was used.
    GrantUsed,
    /// A decrypt grant was presented and refused (used up, expired, revoked,
    /// wrong scope, wrong principal).
    GrantRefused,
    /// A decrypt grant was revoked.
    GrantRevoked,
    /// A decrypt grant expired unused or partly used.
    GrantExpired,
    /// A principal was locked out.
    Lockout,
    /// A lockout was lifted.
    Unlock,
    /// An alert was raised (for example a red-flag budget crossed).
    Alert,
    /// An administrative action: a configuration reload, a rewrap.
    Admin,
    /// A search by blind index (`?card_number=`), allowed or refused.
    CardSearch,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 12] = [
        Kind::Unmask,
        Kind::Decrypt,
        Kind::GrantIssued,
        Kind::GrantUsed,
        Kind::GrantRefused,
        Kind::GrantRevoked,
        Kind::GrantExpired,
        Kind::Lockout,
        Kind::Unlock,
        Kind::Alert,
        Kind::Admin,
        Kind::CardSearch,
    ];

    /// The name used in records and on the command line (`grant_issued`).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Unmask => "unmask",
            Kind::Decrypt => "decrypt",
            Kind::GrantIssued => "grant_issued",
            Kind::GrantUsed => "grant_used",
            Kind::GrantRefused => "grant_refused",
            Kind::GrantRevoked => "grant_revoked",
            Kind::GrantExpired => "grant_expired",
            Kind::Lockout => "lockout",
            Kind::Unlock => "unlock",
            Kind::Alert => "alert",
            Kind::Admin => "admin",
            Kind::CardSearch => "card_search",
        }
    }

    /// True for the kinds that may release clear values (`unmask`, `decrypt`).
    pub const fn releases_values(self) -> bool {
        matches!(self, Kind::Unmask | Kind::Decrypt)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown record kind {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Whether the request or event was allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed.
    Granted,
    /// Refused.
    Denied,
}

impl Outcome {
    /// The name used in records and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::Denied => "denied",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Outcome, String> {
        match s {
            "granted" => Ok(Outcome::Granted),
            "denied" => Ok(Outcome::Denied),
            _ => Err(format!("unknown outcome {s:?}; expected granted or denied")),
        }
    }
}

/// A record as the gateway describes it, before the writer seals it.
///
/// Only audit facts fit: identifiers, a route template name, class names,
/// a reason and counts. There is no place for a field value. The reason is
/// cleaned when the record is sealed: control characters become spaces,
/// digit runs shaped like an SSN/EIN/ITIN (`123-45-6789`, `12-3456789`, nine
/// bare digits) or a card number (13–19 digits passing the Luhn check) have
/// their digits replaced by `#`, and it is cut to [`MAX_REASON_CHARS`].
#[derive(Clone, PartialEq, Eq)]
pub struct RecordDraft {
    kind: Kind,
    request_id: Option<String>,
    principal: String,
    on_behalf_of: Option<String>,
    roles: Vec<String>,
    method: Option<String>,
    route: Option<String>,
    accounts: Vec<String>,
    classes: Vec<String>,
    reason: Option<String>,
    grant_id: Option<String>,
    outcome: Outcome,
    why: String,
    released: u64,
}

impl RecordDraft {
    /// A draft of `kind` about `principal`, with its outcome and a short
    /// reason code `why` (`[a-z0-9_.-]`, up to 64 bytes: `ok`,
    /// `no_reason`, `role_not_allowed`, `grant_used_up`).
    pub fn new(
        kind: Kind,
        principal: impl Into<String>,
        outcome: Outcome,
        why: impl Into<String>,
    ) -> RecordDraft {
        RecordDraft {
            kind,
            request_id: None,
            principal: principal.into(),
            on_behalf_of: None,
            roles: Vec::new(),
            method: None,
            route: None,
            accounts: Vec::new(),
            classes: Vec::new(),
            reason: None,
            grant_id: None,
            outcome,
            why: why.into(),
            released: 0,
        }
    }

    /// The gateway's request id.
    pub fn request_id(mut self, id: impl Into<String>) -> RecordDraft {
        self.request_id = Some(id.into());
        self
    }

    /// The person the caller acts for (`X-On-Behalf-Of`), or a grant's grantee.
    pub fn on_behalf_of(mut self, principal: impl Into<String>) -> RecordDraft {
        self.on_behalf_of = Some(principal.into());
        self
    }

    /// The caller's roles.
    pub fn roles<I>(mut self, roles: I) -> RecordDraft
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The HTTP method and the route's template name (never a raw path or query).
    pub fn request(mut self, method: impl Into<String>, route: impl Into<String>) -> RecordDraft {
        self.method = Some(method.into());
        self.route = Some(route.into());
        self
    }

    /// The account ids the request touched or the grant covers.
    pub fn accounts<I>(mut self, accounts: I) -> RecordDraft
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.accounts = accounts.into_iter().map(Into::into).collect();
        self
    }

    /// The field classes asked for (`ssn`, `card_number`).
    pub fn classes<I>(mut self, classes: I) -> RecordDraft
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.classes = classes.into_iter().map(Into::into).collect();
        self
    }

    /// The reason the caller gave (`X-Unmask-Reason`).
    pub fn reason(mut self, reason: impl Into<String>) -> RecordDraft {
        self.reason = Some(reason.into());
        self
    }

    /// The decrypt grant involved.
    pub fn grant_id(mut self, id: impl Into<String>) -> RecordDraft {
        self.grant_id = Some(id.into());
        self
    }

    /// How many clear values the response released (0 when denied).
    pub fn released(mut self, count: u64) -> RecordDraft {
        self.released = count;
        self
    }

    /// The kind of this draft.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Checks the draft and returns the cleaned fields a record is made of.
    pub(crate) fn checked(&self) -> Result<CheckedDraft<'_>, DraftError> {
        check_id("principal", &self.principal)?;
        check_opt_id("request_id", self.request_id.as_deref())?;
        check_opt_id("on_behalf_of", self.on_behalf_of.as_deref())?;
        check_opt_id("grant_id", self.grant_id.as_deref())?;
        check_list("roles", &self.roles, MAX_LIST)?;
        check_list("classes", &self.classes, MAX_LIST)?;
        check_list("accounts", &self.accounts, MAX_ACCOUNTS)?;
        if let Some(method) = &self.method {
            let ok = !method.is_empty()
                && method.len() <= 16
                && method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
            if !ok {
                return Err(DraftError::BadMethod);
            }
        }
        if let Some(route) = &self.route {
            check_route(route)?;
        }
        let why_ok = !self.why.is_empty()
            && self.why.len() <= 64
            && self
                .why
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !why_ok {
            return Err(DraftError::BadWhy);
        }
        let reason = self
            .reason
            .as_deref()
            .map(clean_reason)
            .filter(|r| !r.trim().is_empty());
        Ok(CheckedDraft {
            draft: self,
            reason,
        })
    }
}

/// Shows the reason cleaned, as it would be recorded, so a debug log does not
/// carry what the cleaning removes.
impl fmt::Debug for RecordDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordDraft")
            .field("kind", &self.kind)
            .field("request_id", &self.request_id)
            .field("principal", &self.principal)
            .field("on_behalf_of", &self.on_behalf_of)
            .field("roles", &self.roles)
            .field("method", &self.method)
            .field("route", &self.route)
            .field("accounts", &self.accounts)
            .field("classes", &self.classes)
            .field("reason", &self.reason.as_deref().map(clean_reason))
            .field("grant_id", &self.grant_id)
            .field("outcome", &self.outcome)
            .field("why", &self.why)
            .field("released", &self.released)
            .finish()
    }
}

/// A draft that passed [`RecordDraft::checked`], with its cleaned reason.
pub(crate) struct CheckedDraft<'a> {
    draft: &'a RecordDraft,
    reason: Option<String>,
}

impl CheckedDraft<'_> {
    /// The canonical bytes of the sealed record without `hash`, given the
    /// writer's fields.
    pub(crate) fn body_bytes(
        &self,
        seq: u64,
        time: OffsetDateTime,
        prev: &str,
    ) -> Result<Vec<u8>, DraftError> {
        let d = self.draft;
        let time = format_time(time)?;
        encode_body(&Body {
            seq,
            time: &time,
            kind: d.kind,
            request_id: d.request_id.as_deref(),
            principal: &d.principal,
            on_behalf_of: d.on_behalf_of.as_deref(),
            roles: &d.roles,
            method: d.method.as_deref(),
            route: d.route.as_deref(),
            accounts: &d.accounts,
            classes: &d.classes,
            reason: self.reason.as_deref(),
            grant_id: d.grant_id.as_deref(),
            outcome: d.outcome,
            why: &d.why,
            released: d.released,
            prev,
        })
    }
}

/// Why a draft was refused. The gateway treats this as a failed audit write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DraftError {
    /// A required identifier is empty.
    #[error("field {field} is empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// An identifier is longer than [`MAX_ID_LEN`] bytes.
    #[error("field {field} is longer than {max} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// An identifier holds a control character.
    #[error("field {field} holds a control character")]
    ControlChar {
        /// The field.
        field: &'static str,
    },
    /// A list has too many entries.
    #[error("field {field} has more than {max} entries")]
    TooMany {
        /// The field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// The route is not a template name (it holds `?`, `#`, `%`, `=`,
    /// whitespace, or is too long).
    #[error("route must be a route template name, not a raw path or query: {0}")]
    BadRoute(String),
    /// The method is not an upper-case HTTP method token.
    #[error("method must be an upper-case HTTP method token of at most 16 bytes")]
    BadMethod,
    /// `why` is not a short code.
    #[error("why must be a short code of [a-z0-9_.-], 1 to 64 bytes")]
    BadWhy,
    /// The clock gave a time that cannot be written (year outside 0–9999).
    #[error("the clock gave a time that cannot be written: {0}")]
    BadTime(String),
    /// serde_json failed to encode the record (not expected).
    #[error("record encoding failed: {0}")]
    Encode(String),
}

fn check_id(field: &'static str, value: &str) -> Result<(), DraftError> {
    if value.is_empty() {
        return Err(DraftError::Empty { field });
    }
    if value.len() > MAX_ID_LEN {
        return Err(DraftError::TooLong {
            field,
            max: MAX_ID_LEN,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(DraftError::ControlChar { field });
    }
    Ok(())
}

fn check_opt_id(field: &'static str, value: Option<&str>) -> Result<(), DraftError> {
    value.map_or(Ok(()), |v| check_id(field, v))
}

fn check_list(field: &'static str, values: &[String], max: usize) -> Result<(), DraftError> {
    if values.len() > max {
        return Err(DraftError::TooMany { field, max });
    }
    values.iter().try_for_each(|v| check_id(field, v))
}

fn check_route(route: &str) -> Result<(), DraftError> {
    if route.is_empty() || route.len() > MAX_ID_LEN {
        return Err(DraftError::BadRoute(format!(
            "{} bytes (1 to {MAX_ID_LEN} allowed)",
            route.len()
        )));
    }
    match route
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:/{}*~@".contains(*c)))
    {
        Some(c) => Err(DraftError::BadRoute(format!("character {c:?} not allowed"))),
        None => Ok(()),
    }
}

/// Cleans a reason, failing closed: control characters become spaces,
/// Unicode decimal digits (full-width, Arabic-Indic, Devanagari,
/// mathematical …) become ASCII digits ([`fold_digits`]), the digits of
/// every value a red-flag detector finds become `#`, and so do those of any
/// run of 9 or more digits joined by single `-`, `.`, `/`, spaces or nothing
/// (an SSN, card or account number in a shape no validator accepts), except
/// a case reference: the whole run is `YYYY-N…` (a year 1900–2099, then up
/// to 6 digits) right after `<letter>-` (`COLL-2026-00042`). The result is
/// cut to [`MAX_REASON_CHARS`] characters.
pub fn clean_reason(reason: &str) -> String {
    let folded: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let folded = fold_digits(&folded);
    let mut findings = Vec::new();
    crate::detect::Detectors::new().scan(
        folded.as_bytes(),
        crate::detect::DetectorSet::ALL,
        &mut findings,
    );
    let mut scrub: Vec<bool> = vec![false; folded.len()];
    for f in &findings {
        if let Some(span) = scrub.get_mut(f.start..f.end) {
            span.fill(true);
        }
    }
    let chars: Vec<(usize, char)> = folded.char_indices().collect();
    let is_digit = |c: char| c.is_ascii_digit() || c.is_numeric();
    let mut i = 0;
    while i < chars.len() {
        if !is_digit(chars[i].1) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        while j < chars.len() {
            if is_digit(chars[j].1) {
                digits += 1;
                end = j + 1;
                j += 1;
            } else if matches!(chars[j].1, '-' | '.' | '/' | ' ')
                && chars.get(j + 1).is_some_and(|&(_, c)| is_digit(c))
            {
                j += 1;
            } else {
                break;
            }
        }
        if digits >= 9 && !is_case_reference(&chars, start, end) {
            for &(at, _) in &chars[start..end] {
                scrub[at] = true;
            }
        }
        i = end.max(start + 1);
    }
    let out: Vec<char> = chars
        .iter()
        .map(|&(at, c)| if scrub[at] && is_digit(c) { '#' } else { c })
        .collect();
    let mut cleaned: String = out.iter().take(MAX_REASON_CHARS).collect();
    if out.len() > MAX_REASON_CHARS {
        cleaned.pop();
        cleaned.push('…');
    }
    cleaned
}

/// True when `chars[start..end]` is a whole case reference: `YYYY-N…` (a
/// year 1900–2099, a dash, 1 to 6 digits) right after `<ASCII letter>-`.
fn is_case_reference(chars: &[(usize, char)], start: usize, end: usize) -> bool {
    let text: String = chars[start..end].iter().map(|&(_, c)| c).collect();
    let after_label =
        start >= 2 && chars[start - 1].1 == '-' && chars[start - 2].1.is_ascii_alphabetic();
    let Some((year, number)) = text.split_once('-') else {
        return false;
    };
    after_label
        && year.len() == 4
        && (year.starts_with("19") || year.starts_with("20"))
        && year.bytes().all(|b| b.is_ascii_digit())
        && (1..=6).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Unicode decimal digits of the blocks below become their ASCII digit,
/// and look-alike dashes, slashes, dots and spaces (full-width, Unicode
/// hyphens and minus, no-break and other spaces) their ASCII character;
/// every other character is kept. Covers full-width, Arabic-Indic (both),
/// Devanagari and the other Indic scripts, Thai, Lao, Tibetan, Myanmar,
/// Khmer, Mongolian and the five mathematical digit sets. Other numeric
/// characters (superscripts, circled digits) are not folded but still
/// count as digits in [`clean_reason`]'s runs.
pub fn fold_digits(text: &str) -> String {
    const ZEROS: [u32; 24] = [
        0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
        0x0D66, 0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x19D0, 0xA8D0,
        0xA9D0, 0xFF10,
    ];
    text.chars()
        .map(|c| {
            let code = u32::from(c);
            let digit = ZEROS
                .iter()
                .find(|&&zero| (zero..zero + 10).contains(&code))
                .map(|zero| code - zero)
                .or_else(|| {
                    (0x1D7CE..=0x1D7FF)
                        .contains(&code)
                        .then(|| (code - 0x1D7CE) % 10)
                });
            let separator = match c {
                '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE63}' | '\u{FF0D}' => Some('-'),
                '\u{FF0E}' | '\u{2024}' => Some('.'),
                '\u{FF0F}' | '\u{2044}' | '\u{2215}' => Some('/'),
                '\u{00A0}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{3000}' => Some(' '),
                _ => None,
            };
            digit
                .and_then(|d| char::from_digit(d, 10))
                .or(separator)
                .unwrap_or(c)
        })
        .collect()
}

/// A sealed record as read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When the writer sealed it (UTC).
    pub time: OffsetDateTime,
    /// What happened.
    pub kind: Kind,
    /// The gateway's request id.
    pub request_id: Option<String>,
    /// Who asked (or acted).
    pub principal: String,
    /// For whom.
    pub on_behalf_of: Option<String>,
    /// The caller's roles.
    pub roles: Vec<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// Route template name.
    pub route: Option<String>,
    /// Account ids touched.
    pub accounts: Vec<String>,
    /// Field classes asked for.
    pub classes: Vec<String>,
    /// The reason given (cleaned).
    pub reason: Option<String>,
    /// Decrypt grant id.
    pub grant_id: Option<String>,
    /// Allowed or refused.
    pub outcome: Outcome,
    /// Short reason code.
    pub why: String,
    /// Clear values released.
    pub released: u64,
    /// Hex SHA-256 of the previous record ([`GENESIS`] for the first).
    pub prev: String,
    /// Hex SHA-256 of this record's canonical bytes without `hash`.
    pub hash: String,
}

impl Record {
    /// The canonical line (without the newline).
    pub fn to_line(&self) -> Result<String, DraftError> {
        let time = format_time(self.time)?;
        let body = encode_body(&Body {
            seq: self.seq,
            time: &time,
            kind: self.kind,
            request_id: self.request_id.as_deref(),
            principal: &self.principal,
            on_behalf_of: self.on_behalf_of.as_deref(),
            roles: &self.roles,
            method: self.method.as_deref(),
            route: self.route.as_deref(),
            accounts: &self.accounts,
            classes: &self.classes,
            reason: self.reason.as_deref(),
            grant_id: self.grant_id.as_deref(),
            outcome: self.outcome,
            why: &self.why,
            released: self.released,
            prev: &self.prev,
        })?;
        let line = with_hash(&body, &self.hash);
        String::from_utf8(line).map_err(|e| DraftError::Encode(e.to_string()))
    }
}

/// The fields of a record without `hash`, in canonical order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: &'a str,
    kind: Kind,
    request_id: Option<&'a str>,
    principal: &'a str,
    on_behalf_of: Option<&'a str>,
    roles: &'a [String],
    method: Option<&'a str>,
    route: Option<&'a str>,
    accounts: &'a [String],
    classes: &'a [String],
    reason: Option<&'a str>,
    grant_id: Option<&'a str>,
    outcome: Outcome,
    why: &'a str,
    released: u64,
    prev: &'a str,
}

/// Every key a record line holds, in order.
pub const RECORD_KEYS: [&str; 18] = [
    "seq",
    "time",
    "kind",
    "request_id",
    "principal",
    "on_behalf_of",
    "roles",
    "method",
    "route",
    "accounts",
    "classes",
    "reason",
    "grant_id",
    "outcome",
    "why",
    "released",
    "prev",
    "hash",
];

/// A record line as parsed, before it is checked against its canonical form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    seq: u64,
    time: String,
    kind: Kind,
    request_id: Option<String>,
    principal: String,
    on_behalf_of: Option<String>,
    roles: Vec<String>,
    method: Option<String>,
    route: Option<String>,
    accounts: Vec<String>,
    classes: Vec<String>,
    reason: Option<String>,
    grant_id: Option<String>,
    outcome: Outcome,
    why: String,
    released: u64,
    prev: String,
    hash: String,
}

fn encode_body(body: &Body<'_>) -> Result<Vec<u8>, DraftError> {
    serde_json::to_vec(body).map_err(|e| DraftError::Encode(e.to_string()))
}

/// Hex SHA-256 of canonical bytes.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `body` (a JSON object) with `,"hash":"…"` inserted before its closing brace.
pub(crate) fn with_hash(body: &[u8], hash_hex: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(body.len() + hash_hex.len() + 12);
    line.extend_from_slice(body.strip_suffix(b"}").unwrap_or(body));
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash_hex.as_bytes());
    line.extend_from_slice(b"\"}");
    line
}

/// Formats a time as the records do: `2026-07-14T09:30:12.123456Z`.
pub fn format_time(t: OffsetDateTime) -> Result<String, DraftError> {
    t.to_offset(UtcOffset::UTC)
        .format(TIME_FORMAT)
        .map_err(|e| DraftError::BadTime(e.to_string()))
}

/// Parses a record time (exactly the format [`format_time`] writes).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(s, TIME_FORMAT)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// Why a line is not a good record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a JSON object of the record (or checkpoint) fields.
    #[error("not a valid line: {0}")]
    Malformed(String),
    /// Valid JSON but not byte-for-byte the canonical form.
    #[error("not in canonical form (whitespace, key order, escapes or trailing bytes differ)")]
    NotCanonical,
    /// The content does not match the stated hash.
    #[error("content does not match its hash")]
    HashMismatch {
        /// The seq the line claims.
        seq: u64,
    },
}

/// Parses one record line (without its newline) and checks its canonical
/// form and its own hash. It does not check the chain (`seq`, `prev`).
pub fn parse_record_line(line: &[u8]) -> Result<Record, LineError> {
    let raw: RawRecord =
        serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    let time = parse_time(&raw.time)
        .ok_or_else(|| LineError::Malformed(format!("bad time {:?}", raw.time)))?;
    let record = Record {
        seq: raw.seq,
        time,
        kind: raw.kind,
        request_id: raw.request_id,
        principal: raw.principal,
        on_behalf_of: raw.on_behalf_of,
        roles: raw.roles,
        method: raw.method,
        route: raw.route,
        accounts: raw.accounts,
        classes: raw.classes,
        reason: raw.reason,
        grant_id: raw.grant_id,
        outcome: raw.outcome,
        why: raw.why,
        released: raw.released,
        prev: raw.prev,
        hash: raw.hash,
    };
    let body = encode_body(&Body {
        seq: record.seq,
        time: &raw.time,
        kind: record.kind,
        request_id: record.request_id.as_deref(),
        principal: &record.principal,
        on_behalf_of: record.on_behalf_of.as_deref(),
        roles: &record.roles,
        method: record.method.as_deref(),
        route: record.route.as_deref(),
        accounts: &record.accounts,
        classes: &record.classes,
        reason: record.reason.as_deref(),
        grant_id: record.grant_id.as_deref(),
        outcome: record.outcome,
        why: &record.why,
        released: record.released,
        prev: &record.prev,
    })
    .map_err(|e| LineError::Malformed(e.to_string()))?;
    if with_hash(&body, &record.hash) != line {
        return Err(LineError::NotCanonical);
    }
    if hex::encode(sha256(&body)) != record.hash {
        return Err(LineError::HashMismatch { seq: record.seq });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> RecordDraft {
        RecordDraft::new(Kind::Unmask, "collections", Outcome::Granted, "ok")
            .request_id("req-1")
            .roles(["collections"])
            .request("GET", "accounts.get")
            .accounts(["A-1001"])
            .classes(["ssn"])
            .reason("COLL-2026-00123 skip trace")
            .released(1)
    }

    fn seal(d: &RecordDraft, seq: u64, prev: &str) -> Vec<u8> {
        let checked = d.checked().expect("valid");
        let body = checked
            .body_bytes(seq, datetime!(2026-07-14 09:30:12.5 UTC), prev)
            .expect("encode");
        with_hash(&body, &hex::encode(sha256(&body)))
    }

    #[test]
    fn record_has_exactly_the_fixed_keys_in_order() {
        let line = seal(&sample(), 1, GENESIS);
        let value: serde_json::Value = serde_json::from_slice(&line).expect("json");
        let map = value.as_object().expect("object");
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut sorted = RECORD_KEYS.to_vec();
        sorted.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, sorted);
        // Canonical order in the bytes.
        let text = String::from_utf8(line.clone()).expect("utf8");
        let mut last = 0;
        for key in RECORD_KEYS {
            let at = text.find(&format!("\"{key}\":")).expect("key present");
            assert!(at >= last, "{key} out of order");
            last = at;
        }
        assert!(text.starts_with("{\"seq\":1,\"time\":\"2026-07-14T09:30:12.500000Z\""));
    }

    #[test]
    fn minimal_draft_still_has_every_key() {
        let d = RecordDraft::new(
            Kind::Lockout,
            "billing",
            Outcome::Denied,
            "too_many_denials",
        );
        let line = seal(&d, 7, GENESIS);
        let value: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(value.as_object().map(|m| m.len()), Some(RECORD_KEYS.len()));
        assert_eq!(value["request_id"], serde_json::Value::Null);
        assert_eq!(value["roles"], serde_json::json!([]));
    }

    #[test]
    fn parse_round_trips_and_checks_hash() {
        let line = seal(&sample(), 3, GENESIS);
        let rec = parse_record_line(&line).expect("parses");
        assert_eq!(rec.seq, 3);
        assert_eq!(rec.principal, "collections");
        assert_eq!(rec.to_line().expect("line").as_bytes(), &line[..]);

        let mut edited = line.clone();
        let at = edited
            .windows(11)
            .position(|w| w == b"collections")
            .expect("found");
        edited[at] = b'k';
        assert_eq!(
            parse_record_line(&edited),
            Err(LineError::HashMismatch { seq: 3 })
        );
    }

    #[test]
    fn parse_rejects_non_canonical_and_extra_fields() {
        let line = seal(&sample(), 3, GENESIS);
        let text = String::from_utf8(line).expect("utf8");
        let spaced = text.replacen(",\"kind\"", ", \"kind\"", 1);
        assert_eq!(
            parse_record_line(spaced.as_bytes()),
            Err(LineError::NotCanonical)
        );
        let trailing = format!("{text} ");
        assert_eq!(
            parse_record_line(trailing.as_bytes()),
            Err(LineError::NotCanonical)
        );
        let escaped = text.replacen("collections", "\\u0063ollections", 1);
        assert_eq!(
            parse_record_line(escaped.as_bytes()),
            Err(LineError::NotCanonical)
        );
        let extra = text.replacen("{\"seq\"", "{\"value\":\"123-45-6789\",\"seq\"", 1);
        assert!(matches!(
            parse_record_line(extra.as_bytes()),
            Err(LineError::Malformed(_))
        ));
        let dup = text.replacen("{\"seq\":3", "{\"seq\":3,\"seq\":3", 1);
        assert!(matches!(
            parse_record_line(dup.as_bytes()),
            Err(LineError::Malformed(_))
        ));
        let missing = text.replacen("\"request_id\":\"req-1\",", "", 1);
        assert!(parse_record_line(missing.as_bytes()).is_err());
    }

    #[test]
    fn drafts_are_checked() {
        let bad_route = sample().request("GET", "/accounts/1?ssn=123456789");
        assert!(matches!(bad_route.checked(), Err(DraftError::BadRoute(_))));
        let bad_why = RecordDraft::new(Kind::Unmask, "x", Outcome::Denied, "No Reason");
        assert!(matches!(bad_why.checked(), Err(DraftError::BadWhy)));
        let empty = RecordDraft::new(Kind::Unmask, "", Outcome::Denied, "x");
        assert!(matches!(
            empty.checked(),
            Err(DraftError::Empty { field: "principal" })
        ));
        let ctl = sample().accounts(["A\n1"]);
        assert!(matches!(
            ctl.checked(),
            Err(DraftError::ControlChar { field: "accounts" })
        ));
        let long = sample().request_id("r".repeat(MAX_ID_LEN + 1));
        assert!(matches!(long.checked(), Err(DraftError::TooLong { .. })));
        let method = sample().request("get", "accounts.get");
        assert!(matches!(method.checked(), Err(DraftError::BadMethod)));
        assert!(sample().request("GET", "/accounts/{id}").checked().is_ok());
    }

    #[test]
    fn reasons_lose_numbers_shaped_like_values() {
        assert_eq!(clean_reason("ssn 123-45-6789 ok"), "ssn ###-##-#### ok");
        assert_eq!(clean_reason("tin 12-3456789"), "tin ##-#######");
        assert_eq!(clean_reason("bare 123456789."), "bare #########.");
        assert_eq!(
            clean_reason("card 4111 1111 1111 1111 declined"),
            "card #### #### #### #### declined"
        );
        // Case references stay; any other long digit run goes, valid or not.
        assert_eq!(
            clean_reason("COLL-2026-00123 case 4111111111111112"),
            "COLL-2026-00123 case ################"
        );
        for (dirty, clean) in [
            ("ssn 123.45.6789 ok", "ssn ###.##.#### ok"),
            ("ssn 123/45/6789", "ssn ###/##/####"),
            ("ssn １２３－４５－６７８９", "ssn ###-##-####"),
            ("ssn 123\u{2013}45\u{2013}6789", "ssn ###-##-####"),
            ("ssn １２３456789", "ssn #########"),
            ("ssn ١٢٣٤٥٦٧٨٩ and १२३४५६७८९", "ssn ######### and #########"),
            ("ssn 𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗", "ssn #########"),
            ("acct 1234 5678 9", "acct #### #### #"),
            ("card 4111-1111-1111-1111", "card ####-####-####-####"),
            ("COLL-2026-00042 123 45 6789", "COLL-####-##### ### ## ####"),
            ("ticket 2026-00042", "ticket ####-#####"),
            ("COLL-2026-00042 2 accounts", "COLL-####-##### # accounts"),
            ("５ accounts", "5 accounts"),
        ] {
            assert_eq!(clean_reason(dirty), clean, "{dirty}");
        }
        assert_eq!(clean_reason("a\nb\tc"), "a b c");
        let long = clean_reason(&"x".repeat(MAX_REASON_CHARS + 10));
        assert_eq!(long.chars().count(), MAX_REASON_CHARS);
        assert!(long.ends_with('…'));
        let debug = format!("{:?}", sample().reason("ssn 123-45-6789"));
        assert!(
            debug.contains("###-##-####") && !debug.contains("6789"),
            "{debug}"
        );
        let d = sample().reason("   ");
        let line = seal(&d, 1, GENESIS);
        let rec = parse_record_line(&line).expect("parses");
        assert_eq!(rec.reason, None);
    }

    #[test]
    fn kinds_and_outcomes_parse() {
        for k in Kind::ALL {
            assert_eq!(k.name().parse::<Kind>(), Ok(k));
            let json = serde_json::to_string(&k).expect("json");
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
        assert!("grant".parse::<Kind>().is_err());
        assert_eq!("denied".parse::<Outcome>(), Ok(Outcome::Denied));
    }

    #[test]
    fn time_format_is_fixed() {
        let t = datetime!(2026-01-02 03:04:05.000007 +02:00);
        let s = format_time(t).expect("formats");
        assert_eq!(s, "2026-01-02T01:04:05.000007Z");
        assert_eq!(parse_time(&s), Some(t));
        assert_eq!(parse_time("2026-01-02T01:04:05Z"), None);
    }
}
