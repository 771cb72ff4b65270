//! Streaming response rewriters: JSON, NDJSON, CSV and plain text.
//!
//! Pure core: no I/O, no async. A rewriter takes the body in chunks of any
//! size through [`BodyRewriter::write`], appends rewritten bytes to an output
//! buffer as soon as it may, and is closed with [`BodyRewriter::finish`].
//! Bytes it does not change come out exactly as they came in.
//!
//! Unlike an HTML rewriter that bails out by passing the rest through, a
//! maskgate rewriter that meets anything it cannot read fails and stays
//! failed (poisoned): the caller must end the response with an error, never
//! with raw bytes.

use std::collections::HashSet;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::Detectors;

pub mod content;
pub mod csv;
pub mod encoding;
pub mod header;
pub mod json;
pub mod mask;
pub mod rules;
mod sealed;
pub mod sniff;
pub mod text;
pub mod value;

pub use json::JsonRewriter;
pub use rules::{Rules, RulesBuilder};

/// Limits every rewriter enforces. Going past one is an error, never a truncation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of arrays and objects.
    pub max_depth: usize,
    /// Most input bytes in one body.
    pub max_body_bytes: u64,
    /// Longest single token (a string the rewriter must inspect, a key, a CSV
    /// cell, a text line) that is held in memory.
    pub max_token_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 128,
            max_body_bytes: 1 << 30,
            max_token_bytes: 1 << 20,
        }
    }
}

/// What is wrong with a JSON text. Never carries input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyntaxError {
    /// A byte that cannot start or continue what is expected here.
    UnexpectedByte,
    /// A raw control character inside a string.
    ControlCharacterInString,
    /// A backslash escape that JSON does not have.
    InvalidEscape,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// A number such as `01`, `1.`, `-` or `1e`.
    InvalidNumber,
    /// `]` closing an object or `}` closing an array.
    MismatchedClose,
    /// A comma followed by a closing bracket.
    TrailingComma,
    /// More text after the document ended.
    TrailingData,
    /// Two NDJSON values on one line.
    ValuesOnOneLine,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyntaxError::UnexpectedByte => "unexpected byte",
            SyntaxError::ControlCharacterInString => "control character in string",
            SyntaxError::InvalidEscape => "invalid escape",
            SyntaxError::InvalidUtf8 => "invalid UTF-8",
            SyntaxError::InvalidNumber => "invalid number",
            SyntaxError::MismatchedClose => "mismatched closing bracket",
            SyntaxError::TrailingComma => "trailing comma",
            SyntaxError::TrailingData => "data after the end of the document",
            SyntaxError::ValuesOnOneLine => "two values on one NDJSON line",
        })
    }
}

/// Why a body could not be rewritten. Messages carry positions and limits,
/// never body content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The body is not valid JSON (or NDJSON).
    #[error("invalid JSON at byte {offset}: {kind}")]
    Syntax {
        /// Offset of the offending byte in the body.
        offset: u64,
        /// What is wrong.
        kind: SyntaxError,
    },
    /// The body ended inside a value.
    #[error("body ends inside a value")]
    UnexpectedEnd,
    /// The body was empty where a document was required.
    #[error("body is empty")]
    Empty,
    /// Nesting deeper than the limit.
    #[error("nesting deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More input bytes than the limit.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A single token the rewriter must hold is larger than the limit.
    #[error("a single value is larger than {limit} bytes")]
    TokenTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The CSV body is malformed.
    #[error("invalid CSV at line {line}: {reason}")]
    Csv {
        /// 1-based line of the record.
        line: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The body is not UTF-8 text.
    #[error("body is not UTF-8 text at byte {offset}")]
    NotText {
        /// Offset of the first bad byte.
        offset: u64,
    },
    /// A write carries a card number where it would be stored in the clear
    /// (a field no selector named); `path` names the field (JSON pointer or
    /// CSV column), never the value.
    #[error("clear card number in field {path}")]
    ClearCardInRequest {
        /// Where it is.
        path: String,
    },
    /// A value that must be encrypted could not be (no key, or the value
    /// cannot be sealed); `path` names the field.
    #[error("field {path} cannot be encrypted")]
    CannotEncrypt {
        /// Where it is.
        path: String,
    },
    /// A customer record that must be held until its account id is known
    /// (a drop filter is set, see [`RewriteSpec::drop_accounts`]) grew past
    /// the limit ([`Limits::max_token_bytes`]) before it was decided.
    #[error("a record held for its account id is larger than {limit} bytes")]
    RecordTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body is one record (the document root, see
    /// [`RulesBuilder::record_path`]`("/")`) of an account the drop filter
    /// names, or a record whose account turned out to be dropped only after
    /// part of it had been released (a second id member): it may not be
    /// sent, not even in part.
    #[error("the record belongs to a withheld account")]
    RecordWithheld,
    /// A content encoding could not be undone or redone.
    #[error("content encoding failed: {reason}")]
    Encoding {
        /// What failed.
        reason: &'static str,
    },
    /// An earlier error left the rewriter unusable.
    #[error("rewriter failed earlier")]
    Poisoned,
}

/// Most account ids one response's counts keep.
pub const MAX_ACCOUNT_IDS: usize = 1000;

/// What one response's rewriting did: the gateway uses it for logs, metrics,
/// audit records and record budgets. Holds counts only, never values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Values acted on, by class and action.
    pub acted: [[u64; Action::COUNT]; FieldClass::COUNT],
    /// Values found by detectors (in fields no selector named).
    pub detected: u64,
    /// Customer records seen (see [`RulesBuilder::record_path`]).
    pub records: u64,
    /// Envelopes that were damaged, forged, or under an unknown key.
    pub integrity_errors: u64,
    /// Fields removed because an allowlist did not name them.
    pub not_allowed: u64,
    /// Values sealed into envelopes (write requests).
    pub sealed: u64,
    /// Values of the record id field, in order (account ids touched; capped
    /// at [`MAX_ACCOUNT_IDS`]). Ids are not red-flag values.
    pub account_ids: Vec<String>,
    /// Records left out because [`RewriteSpec::drop_accounts`] names their
    /// account. A dropped record adds nothing to the other counts (not to
    /// `records`, `account_ids`, `acted`, `detected`, `not_allowed`,
    /// `sealed`) except `integrity_errors`: a damaged envelope is reported
    /// even when its record is withheld.
    pub dropped_records: u64,
    /// Clear values (actions `clear` and successful `decrypt`) of each class
    /// released inside counted records; the rest were outside any record.
    pub clear_in_records: [u64; FieldClass::COUNT],
    /// The most clear values of each class released inside one record.
    pub most_clear_in_a_record: [u64; FieldClass::COUNT],
}

/// Clear values released so far, by class: what [`Counts::record_done`]
/// compares against.
pub type ClearMark = [u64; FieldClass::COUNT];

impl Counts {
    /// Counts one value of `class` handled with `action`.
    pub fn add(&mut self, class: FieldClass, action: Action) {
        self.acted[class.index()][action.index()] += 1;
    }

    /// Values of `class` handled with `action`.
    pub fn get(&self, class: FieldClass, action: Action) -> u64 {
        self.acted[class.index()][action.index()]
    }

    /// Clear red-flag values released (actions `clear` and successful `decrypt`).
    pub fn clear_released(&self) -> u64 {
        self.acted
            .iter()
            .map(|per| per[Action::Clear.index()] + per[Action::Decrypt.index()])
            .sum()
    }

    /// Clear values of `class` released (actions `clear` and successful `decrypt`).
    pub fn clear_of(&self, class: FieldClass) -> u64 {
        let per = &self.acted[class.index()];
        per[Action::Clear.index()] + per[Action::Decrypt.index()]
    }

    /// Clear values released so far, by class (taken when a record starts).
    pub fn clear_mark(&self) -> ClearMark {
        let mut mark = [0; FieldClass::COUNT];
        for class in FieldClass::ALL {
            mark[class.index()] = self.clear_of(class);
        }
        mark
    }

    /// A counted record that started at `mark` ended: the clear values
    /// released since belong to it.
    pub fn record_done(&mut self, mark: &ClearMark) {
        for class in FieldClass::ALL {
            let i = class.index();
            // A withheld record's counts were rolled back below the mark.
            let in_record = self.clear_of(class).saturating_sub(mark[i]);
            self.clear_in_records[i] += in_record;
            self.most_clear_in_a_record[i] = self.most_clear_in_a_record[i].max(in_record);
        }
    }

    /// Values masked, removed or redacted.
    pub fn protected(&self) -> u64 {
        self.acted
            .iter()
            .map(|per| {
                per[Action::Last4.index()]
                    + per[Action::Remove.index()]
                    + per[Action::Redact.index()]
            })
            .sum()
    }
}

/// Why an envelope could not be opened. Never carries key or plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The envelope is malformed, tampered with, or bound to another class.
    #[error("envelope failed its integrity check")]
    Integrity,
    /// No usable key has the envelope's key id.
    #[error("envelope key is unknown or retired")]
    UnknownKey,
    /// This opener only verifies: nothing is decrypted (the response is not
    /// an audited unmask).
    #[error("envelope may not be decrypted here")]
    NotAllowed,
}

/// Opens card envelopes for the `decrypt` action and checks them for masked
/// display. Implemented by the crypto core; the rewriter only calls `open`
/// when the response's action table says `decrypt` for the class.
///
/// `account` is the id of the record the envelope was found in, when the
/// rewriter read it before the envelope: an envelope bound to an account
/// (`mg2.`) opens and verifies only for that account.
pub trait EnvelopeOpener: Send + Sync {
    /// Returns the plaintext of `envelope`, which must be of `class`. The
    /// plaintext stays in a zeroizing buffer until it is written out.
    fn open(
        &self,
        class: FieldClass,
        envelope: &str,
        account: Option<&str>,
    ) -> Result<zeroize::Zeroizing<String>, OpenError>;

    /// `Ok` when `envelope` is genuine (it would open), so its last four
    /// may be shown; otherwise why not.
    fn verify(
        &self,
        class: FieldClass,
        envelope: &str,
        account: Option<&str>,
    ) -> Result<(), OpenError>;
}

/// Why a value could not be sealed. Never carries the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The value cannot be sealed (too short, too long, bad characters).
    #[error("value cannot be encrypted")]
    Unsealable,
    /// No key may encrypt now (none active, or the encryption limit reached).
    #[error("no key may encrypt")]
    NoKey,
}

/// Seals values into envelopes on their way into the database. Implemented
/// by the crypto core.
pub trait EnvelopeSealer: Send + Sync {
    /// An envelope for `plaintext` of `class`.
    fn seal(&self, class: FieldClass, plaintext: &str) -> Result<String, SealError>;
    /// The blind index of `value` of `class`.
    fn blind_index(&self, class: FieldClass, value: &str) -> Result<String, SealError>;
    /// True when `envelope` is genuine: it opens under a usable key as
    /// `class`. A write may only carry envelopes that pass this.
    fn verify(&self, class: FieldClass, envelope: &str) -> bool;
    /// An envelope for `plaintext` of `class`, bound to `account` when the
    /// record's id is known (so it opens only in that account's record).
    fn seal_for(
        &self,
        class: FieldClass,
        plaintext: &str,
        account: Option<&str>,
    ) -> Result<String, SealError> {
        let _ = account;
        self.seal(class, plaintext)
    }
    /// [`EnvelopeSealer::verify`] for an envelope in `account`'s record.
    fn verify_for(&self, class: FieldClass, envelope: &str, account: Option<&str>) -> bool {
        let _ = account;
        self.verify(class, envelope)
    }
}

/// What to do with a card number found by a detector in a request field no
/// selector named (a note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedCard {
    /// Refuse the request, naming the field.
    Refuse,
    /// Encrypt the number in place.
    Encrypt,
}

/// How a write request's body is protected before the database sees it.
#[derive(Clone)]
pub struct RequestProtection {
    /// Seals values; `None` means encryption is not configured, so any value
    /// that would need it makes the request fail.
    pub sealer: Option<Arc<dyn EnvelopeSealer>>,
    /// Classes stored only as envelopes.
    pub encrypt: [bool; FieldClass::COUNT],
    /// Classes that also get a `<field>_bidx` blind-index sibling.
    pub blind_index: [bool; FieldClass::COUNT],
    /// Card numbers in unnamed fields.
    pub detected_card: DetectedCard,
}

impl std::fmt::Debug for RequestProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestProtection")
            .field("sealer", &self.sealer.is_some())
            .field("encrypt", &self.encrypt)
            .field("blind_index", &self.blind_index)
            .field("detected_card", &self.detected_card)
            .finish()
    }
}

impl RequestProtection {
    /// True when values of `class` are stored only as envelopes.
    pub fn encrypts(&self, class: FieldClass) -> bool {
        self.encrypt[class.index()]
    }
}

impl RequestProtection {
    /// True when a detector finding may not be stored in the clear: card
    /// numbers, and values of any encrypted class.
    pub fn must_seal(&self, f: &crate::detect::Finding) -> bool {
        f.class() == FieldClass::CardNumber || self.encrypts(f.class())
    }

    /// Write requests only: a card number run together with letters or
    /// other digits (`…4111111111111111AAAA…`), which the word-bounded
    /// detectors do not report, or a look-alike envelope that does not open.
    /// Such text is refused rather than stored.
    pub fn hides_card(&self, text: &str) -> bool {
        if let Some(sealer) = &self.sealer {
            if crate::rewrite::mask::looks_like_envelope(text)
                && !sealer.verify(FieldClass::CardNumber, text)
            {
                return true;
            }
        } else if crate::rewrite::mask::looks_like_envelope(text) {
            return true;
        }
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if !bytes[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let run = &bytes[start..i];
            if run.len() >= 13 {
                // every 13–19 digit window of a long run
                for len in 13..=19.min(run.len()) {
                    for w in run.windows(len) {
                        if crate::detect::validate::card_valid(w) {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// Free text of a write request with every finding that may not be
    /// stored in the clear: `Ok(None)` when there is none; otherwise the
    /// text with each such value replaced by its envelope (when the policy
    /// encrypts detected cards), or an error naming `path`.
    pub fn seal_detected(
        &self,
        text: &str,
        findings: &[crate::detect::Finding],
        path: &dyn Fn() -> String,
        counts: &mut Counts,
    ) -> Result<Option<String>, RewriteError> {
        if !findings.iter().any(|f| self.must_seal(f)) {
            return Ok(None);
        }
        let sealer = match (self.detected_card, self.sealer.as_ref()) {
            (DetectedCard::Encrypt, Some(sealer)) => sealer,
            _ => return Err(RewriteError::ClearCardInRequest { path: path() }),
        };
        let mut rebuilt = String::with_capacity(text.len() + 64);
        let mut last = 0;
        for f in findings.iter().filter(|f| self.must_seal(f)) {
            let (Some(before), Some(value)) = (text.get(last..f.start), text.get(f.start..f.end))
            else {
                return Err(RewriteError::ClearCardInRequest { path: path() });
            };
            rebuilt.push_str(before);
            let class = if self.encrypts(f.class()) {
                f.class()
            } else {
                FieldClass::CardNumber
            };
            let envelope = sealer
                .seal(class, value)
                .map_err(|_| RewriteError::CannotEncrypt { path: path() })?;
            rebuilt.push_str(&envelope);
            counts.sealed += 1;
            last = f.end;
        }
        rebuilt.push_str(text.get(last..).unwrap_or(""));
        Ok(Some(rebuilt))
    }
}

/// Decides which accounts' records are left out of a response (frozen
/// accounts): see [`RewriteSpec::drop_accounts`].
pub trait AccountFilter: Send + Sync + fmt::Debug {
    /// True when records of `account_id` must not be sent. `account_id` is
    /// the record's id value: a string's decoded content (escapes undone), or
    /// a number's text as written (`7` and `7.0` are different ids).
    fn drops(&self, account_id: &str) -> bool;
}

impl<S: BuildHasher + Send + Sync> AccountFilter for HashSet<String, S> {
    fn drops(&self, account_id: &str) -> bool {
        self.contains(account_id)
    }
}

/// Everything a rewriter needs to rewrite one response.
#[derive(Clone)]
pub struct RewriteSpec {
    /// The role's compiled selectors.
    pub rules: Arc<Rules>,
    /// What this response does with each class (the role's actions, possibly
    /// widened by an audited unmask request).
    pub actions: ActionTable,
    /// The compiled detectors.
    pub detectors: Arc<Detectors>,
    /// Limits.
    pub limits: Limits,
    /// Opens envelopes when an action says `decrypt`.
    pub opener: Option<Arc<dyn EnvelopeOpener>>,
    /// Accounts whose records are left out of the body (`None`: every record
    /// is kept, and nothing is held for it). A record is an element the
    /// rules' record path matches (see [`RulesBuilder::record_path`]); its
    /// account is the value of its id member
    /// ([`RulesBuilder::record_id_name`]; in CSV, the column so named).
    ///
    /// - JSON: an object record is held until its id has been read; a record
    ///   of a dropped account then disappears with its separating comma (and
    ///   its key, when it is an object member), any other is released and
    ///   the rest of it streams. A record with no id (or a non-object record)
    ///   is kept. A record held past [`Limits::max_token_bytes`] bytes fails
    ///   with [`RewriteError::RecordTooLarge`].
    /// - A document whose root is the record fails with
    ///   [`RewriteError::RecordWithheld`] instead of being sent (the gateway
    ///   refuses single-record routes of frozen accounts before asking the
    ///   upstream; this is the fail-closed backstop).
    /// - NDJSON: a line whose root record is dropped is left out with its
    ///   line break; records nested in a line are dropped as in JSON.
    /// - CSV: a row whose id cell names a dropped account is left out with
    ///   its line break.
    ///
    /// Dropped records are counted in [`Counts::dropped_records`] only.
    pub drop_accounts: Option<Arc<dyn AccountFilter>>,
}

impl std::fmt::Debug for RewriteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewriteSpec")
            .field("actions", &self.actions)
            .field("limits", &self.limits)
            .field("opener", &self.opener.is_some())
            .field("drop_accounts", &self.drop_accounts.is_some())
            .finish_non_exhaustive()
    }
}

/// A streaming body rewriter.
pub trait BodyRewriter: Send {
    /// Rewrites the next chunk of input, appending output to `out`.
    fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError>;
    /// Ends the body: checks that it was complete and flushes what is held.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError>;
    /// What was done so far.
    fn counts(&self) -> &Counts;
}

/// Runs a whole body through a rewriter in one call (tests, tools, small bodies).
pub fn rewrite_all(rw: &mut dyn BodyRewriter, input: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut out = Vec::with_capacity(input.len());
    rw.write(input, &mut out)?;
    rw.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
#[path = "drop_tests.rs"]
mod drop_tests;

#[cfg(test)]
#[path = "planted_tests.rs"]
mod planted_tests;
