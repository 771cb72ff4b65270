//! Red-flag detectors: find SSNs, TINs, card numbers, routing numbers and
//! keyword-anchored license, passport and bank-account numbers in free text.
//!
//! Pure core: no I/O, no async. Input is UTF-8 text as bytes (only ASCII
//! bytes can be part of a finding); findings are byte ranges into that input.
//!
//! INTERFACE CONTRACT (used by the rewriters; keep these signatures):
//! - `Detectors::new()` compiles everything once; `Detectors` is `Send + Sync`.
//! - `Detectors::min_digits(set)`: a string whose raw bytes hold fewer ASCII
//!   digits than this cannot produce a finding for `set` (a cheap prefilter).
//! - `Detectors::scan(text, set, out)`: appends findings, sorted by `start`,
//!   non-overlapping, to `out` (does not clear it).
//!
//! # Detection rules
//!
//! Every value is a whole token: not preceded or followed by an ASCII letter,
//! digit or `_`; not glued by `-` to another letter or digit, nor by `.`, `,`
//! or `:` to another digit (decimals, IP addresses, times), nor after `+`, `$`,
//! `@`, `/`, `\` (phone numbers, amounts, handles, paths). The pure checks
//! live in [`validate`].
//!
//! - **SSN**: `123-45-6789`, `123 45 6789` or `123456789` (one separator, used
//!   twice, or none) passing [`ssn_valid`]. A dash-less 9-digit run is not an
//!   SSN after a word naming another id (`order`, `invoice`, `meter`,
//!   `account`, `id`, `tracking`, `zip` …), after a lone `#`, after an
//!   upper-case state code (a ZIP+4), or before a unit (`bytes`, `kWh` …);
//!   tax words (`SSN`, `SS#`, `tax id`, `social security`) override that.
//! - **ITIN**: the same shapes passing [`itin_valid`].
//! - **EIN**: `NN-NNNNNNN` with [`ein_prefix_valid`] (dash form), or nine bare
//!   digits right after `EIN`/`FEIN`.
//! - **Card**: 13–19 digits bare, or in 3–5 groups (first 4–6 digits, others
//!   3–6) joined by single spaces or single dashes (not mixed), passing
//!   [`card_valid`] (Luhn, IIN and length). With spaces the longest valid
//!   prefix of the groups is taken, so an expiry or CVV may follow.
//! - **ABA routing**: nine bare digits passing [`aba_valid`], with `routing`,
//!   `ABA`, `RTN` or `transit` in the 40 bytes before, or as the whole
//!   (trimmed) text.
//! - **Driver's license**: after `DL`, `DLN`, `driver's/drivers/driver/driving
//!   license` (or `lic`), or `license`/`lic` with a label (`#`, `no`,
//!   `number`) but not after `business`, `software` and other license kinds: 1–2
//!   letters then 4–14 digits, or 7–14 digits.
//! - **Passport**: after `passport`: optional 1–2 letters then 6–9 digits.
//! - **Bank account**: 4–17 digits, possibly in dash-joined groups, after
//!   `checking`/`savings` with a label (`checking #`, `savings no.`), or after
//!   `account`/`acct`/`acc` with a bank word (`bank`, `checking`, `savings`,
//!   `ACH`, `draft`, `routing`, `ABA`, `EFT`, `deposit`, `IBAN`) in the 40
//!   bytes before the keyword. A plain `Account number 1000234` is a
//!   customer account id and is left alone.
//!
//! Keywords match whole words, case-insensitively (`Driver’s` with a curly
//! apostrophe too); between a keyword and its number at most 24 bytes of
//! separators (`:`, `#`, `-`, `.`, `=`, spaces, brackets, quotes) and the
//! words `no`, `nr`, `num`, `nbr`, `number`, `is`, `was`. Only the number is
//! the finding, not the keyword.
//!
//! When candidates overlap the longer wins; on equal spans the first of:
//! routing (keyword), passport, driver's license, EIN (keyword), card, bank
//! account, SSN, ITIN, EIN, routing (whole text). Overlaps are resolved among
//! all detectors before the enabled set is applied.

use crate::class::FieldClass;

mod context;
mod scan;
#[cfg(test)]
mod tests;
pub mod validate;

pub use validate::{
    aba_valid, card_iin_known, card_valid, ein_prefix_valid, itin_valid, luhn_valid, ssn_valid,
};

/// One kind of detector.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DetectorKind {
    /// SSN by SSA rules.
    Ssn,
    /// ITIN (9XX, IRS group ranges).
    Itin,
    /// EIN with a valid IRS prefix.
    Ein,
    /// Payment card: Luhn and known IIN ranges.
    Card,
    /// ABA routing number with its checksum.
    AbaRouting,
    /// Driver's license number near a keyword.
    DriversLicense,
    /// Passport number near a keyword.
    Passport,
    /// Bank account number near a keyword.
    BankAccount,
    /// Card expiry (`MM/YY`, `MM-YYYY`) after `exp`, `expires`, `valid thru`.
    CardExpiry,
}

impl DetectorKind {
    /// Every detector.
    pub const ALL: [DetectorKind; 9] = [
        DetectorKind::Ssn,
        DetectorKind::Itin,
        DetectorKind::Ein,
        DetectorKind::Card,
        DetectorKind::AbaRouting,
        DetectorKind::DriversLicense,
        DetectorKind::Passport,
        DetectorKind::BankAccount,
        DetectorKind::CardExpiry,
    ];

    /// The class of value this detector finds.
    pub const fn class(self) -> FieldClass {
        match self {
            DetectorKind::Ssn => FieldClass::Ssn,
            DetectorKind::Itin | DetectorKind::Ein => FieldClass::Tin,
            DetectorKind::Card => FieldClass::CardNumber,
            DetectorKind::AbaRouting => FieldClass::BankRouting,
            DetectorKind::DriversLicense => FieldClass::Dln,
            DetectorKind::Passport => FieldClass::Passport,
            DetectorKind::BankAccount => FieldClass::BankAccount,
            DetectorKind::CardExpiry => FieldClass::CardExpiry,
        }
    }

    /// Name used in policy files.
    pub const fn name(self) -> &'static str {
        match self {
            DetectorKind::Ssn => "ssn",
            DetectorKind::Itin => "itin",
            DetectorKind::Ein => "ein",
            DetectorKind::Card => "card",
            DetectorKind::AbaRouting => "aba_routing",
            DetectorKind::DriversLicense => "drivers_license",
            DetectorKind::Passport => "passport",
            DetectorKind::BankAccount => "bank_account",
            DetectorKind::CardExpiry => "card_expiry",
        }
    }

    /// Parses a policy-file detector name.
    pub fn from_name(name: &str) -> Option<DetectorKind> {
        DetectorKind::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Fewest ASCII digits a value this detector finds holds.
    pub const fn min_digits(self) -> usize {
        match self {
            DetectorKind::Ssn
            | DetectorKind::Itin
            | DetectorKind::Ein
            | DetectorKind::AbaRouting => 9,
            DetectorKind::Card => 13,
            DetectorKind::Passport => 6,
            DetectorKind::DriversLicense | DetectorKind::BankAccount | DetectorKind::CardExpiry => {
                4
            }
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of detectors, as a role's policy enables them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct DetectorSet(u16);

impl DetectorSet {
    /// No detector.
    pub const NONE: DetectorSet = DetectorSet(0);
    /// Every detector.
    pub const ALL: DetectorSet = DetectorSet(0x1ff);

    /// Adds one detector.
    pub const fn with(self, kind: DetectorKind) -> DetectorSet {
        DetectorSet(self.0 | kind.bit())
    }

    /// True when `kind` is in the set.
    pub const fn contains(self, kind: DetectorKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// True when the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One red-flag value found in text.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Finding {
    /// Byte offset of the first byte of the value.
    pub start: usize,
    /// Byte offset one past the value's last byte.
    pub end: usize,
    /// What found it.
    pub kind: DetectorKind,
}

impl Finding {
    /// The class of the value found.
    pub const fn class(&self) -> FieldClass {
        self.kind.class()
    }
}

/// The compiled detectors.
#[derive(Debug, Default)]
pub struct Detectors {}

impl Detectors {
    /// Compiles the detectors.
    pub fn new() -> Detectors {
        Detectors {}
    }

    /// Fewest ASCII digits a text must hold for `set` to find anything in it.
    ///
    /// The least over the detectors in `set` of: SSN, ITIN, EIN and ABA 9;
    /// card 13; passport 6; driver's license and bank account 4. For the empty
    /// set, `usize::MAX` (nothing is ever found).
    pub fn min_digits(&self, set: DetectorSet) -> usize {
        const FOUR: DetectorSet = DetectorSet::NONE
            .with(DetectorKind::DriversLicense)
            .with(DetectorKind::BankAccount)
            .with(DetectorKind::CardExpiry);
        const NINE: DetectorSet = DetectorSet::NONE
            .with(DetectorKind::Ssn)
            .with(DetectorKind::Itin)
            .with(DetectorKind::Ein)
            .with(DetectorKind::AbaRouting);
        // Called for every string: bit tests, not a loop over the kinds.
        if set.0 & FOUR.0 != 0 {
            4
        } else if set.contains(DetectorKind::Passport) {
            6
        } else if set.0 & NINE.0 != 0 {
            9
        } else if set.contains(DetectorKind::Card) {
            13
        } else {
            usize::MAX
        }
    }

    /// False when `text` holds too few ASCII digits for `set` to find
    /// anything (one vectorized pass).
    pub fn may_find(&self, text: &[u8], set: DetectorSet) -> bool {
        !set.is_empty() && scan::has_min_digits(text, self.min_digits(set))
    }

    /// Appends the findings of `set` in `text` to `out`, sorted and non-overlapping.
    ///
    /// Overlaps are resolved among all detectors before `set` is applied (the
    /// longer value wins, then the more specific detector), so what a value is
    /// taken for does not depend on which detectors a role enables. Text with
    /// fewer than [`Detectors::min_digits`] digits costs one vectorized pass.
    pub fn scan(&self, text: &[u8], set: DetectorSet, out: &mut Vec<Finding>) {
        if set.is_empty() || !scan::has_min_digits(text, self.min_digits(set)) {
            return;
        }
        scan::scan_runs(text, set, out);
    }
}
