//! The scanner: digit runs first, then shapes, validators and keywords.
//!
//! The text is walked once for ASCII digit runs with a chunked loop that the
//! compiler vectorizes; nothing else is looked at until a run is found. At each
//! run the scanner builds the chain of runs joined by one separator (`-` or a
//! space), tries the fixed shapes (SSN/ITIN 3-2-4, EIN 2-7, card groups, bare
//! 9 and 13–19 digit numbers) with their validators, and only for runs that
//! could be a keyword-anchored number reads the few bytes before the token
//! backwards for a keyword. Every candidate is merged into the output at once;
//! nothing is allocated except by pushing to the output vector.

use super::context::{
    bank_context_before, card_word_near, glued_keyword, keyword_before, micr_transit_before,
    routing_keyword_near, tax_keyword_near, unlikely_bare_ssn, Keyword,
};
use super::validate::{aba_valid, card_valid, ein_prefix_valid, itin_valid, ssn_valid};
use super::{DetectorKind, DetectorSet, Finding};

/// Most runs a separated number is made of that the shapes look at (cards
/// print in at most five groups); one more tells that a chain goes on.
const MAX_RUNS: usize = 6;

#[inline]
pub(super) fn is_digit(b: u8) -> bool {
    b.wrapping_sub(b'0') < 10
}

#[inline]
pub(super) fn is_alpha(b: u8) -> bool {
    (b | 0x20).wrapping_sub(b'a') < 26
}

/// ASCII letter, digit or underscore: a byte that glues a number into a word.
#[inline]
pub(super) fn is_word(b: u8) -> bool {
    is_digit(b) || is_alpha(b) || b == b'_'
}

/// True when `text` holds at least `min` ASCII digits. Stops as soon as it
/// has seen enough; a text without digits is read in wide chunks.
pub(super) fn has_min_digits(text: &[u8], min: usize) -> bool {
    if min == 0 {
        return true;
    }
    if text.len() < min {
        return false;
    }
    let mut seen = 0usize;
    let mut chunks = text.chunks_exact(64);
    for chunk in &mut chunks {
        let n = chunk.iter().fold(0u8, |n, &b| n + u8::from(is_digit(b)));
        seen += usize::from(n);
        if seen >= min {
            return true;
        }
    }
    seen += chunks.remainder().iter().filter(|&&b| is_digit(b)).count();
    seen >= min
}

/// Offset of the first ASCII digit at or after `from`.
#[inline]
fn next_digit(text: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = text.get(i..i + 32) {
        if chunk.iter().fold(0u8, |a, &b| a | u8::from(is_digit(b))) != 0 {
            break;
        }
        i += 32;
    }
    let rest = text.get(i..)?;
    rest.iter().position(|&b| is_digit(b)).map(|p| p + i)
}

/// End of the digit run starting at `s`.
#[inline]
fn run_end(text: &[u8], s: usize) -> usize {
    let mut e = s;
    while text.get(e).is_some_and(|&b| is_digit(b)) {
        e += 1;
    }
    e
}

/// Byte at `i`, or `None` past either end.
#[inline]
fn byte(text: &[u8], i: usize) -> Option<u8> {
    text.get(i).copied()
}

/// Byte before offset `i` (i.e. at `i - 1`), or `None` at the start.
#[inline]
fn before(text: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).and_then(|j| byte(text, j))
}

/// Can a shape-detected number start at `s` (the first digit)? Not after a
/// letter, digit or `_`; not after `+`, `$`, `@`, `/` or `\` (phone numbers,
/// amounts, handles, paths, dates); not after a `-` glued to a letter or digit
/// (`INV-…`, the middle of a dashed id); not after `.`, `,` or `:` glued to a
/// digit (decimals, thousands, times, IP addresses).
fn start_ok(text: &[u8], s: usize) -> bool {
    match before(text, s) {
        None => true,
        Some(b) if is_word(b) => false,
        Some(b'+' | b'$' | b'@' | b'/' | b'\\') => false,
        Some(b'-') => !before(text, s - 1).is_some_and(is_word),
        Some(b'.' | b',' | b':') => !before(text, s - 1).is_some_and(is_digit),
        Some(_) => true,
    }
}

/// Can a number end at `e` (one past its last digit)? The mirror of
/// [`start_ok`]: not before a letter, digit, `_`, `@`, `%`, `/` or `\`; not
/// before a `-` glued to a letter or digit; not before `.`, `,` or `:` glued to
/// a digit. A space is never a joiner here (a card may be followed by its
/// expiry).
fn end_ok(text: &[u8], e: usize) -> bool {
    match byte(text, e) {
        None => true,
        Some(b) if is_word(b) => false,
        Some(b'@' | b'%' | b'/' | b'\\') => false,
        Some(b'-') => !byte(text, e + 1).is_some_and(is_word),
        Some(b'.' | b',' | b':') => !byte(text, e + 1).is_some_and(is_digit),
        Some(_) => true,
    }
}

/// True when the text around `[s, e)` is only ASCII white space.
fn whole_text(text: &[u8], s: usize, e: usize) -> bool {
    text.get(..s)
        .is_some_and(|t| t.iter().all(u8::is_ascii_whitespace))
        && text
            .get(e..)
            .is_some_and(|t| t.iter().all(u8::is_ascii_whitespace))
}

/// Value of ASCII digits (at most 9; callers slice digit runs).
fn num(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

/// Is `b` a byte that may join two digit groups of one number (`-`, a
/// space, `.`)? Groups may mix them (`123-45 6789`, `4111.1111-1111 1111`).
#[inline]
fn is_joiner(b: u8) -> bool {
    matches!(b, b'-' | b' ' | b'.')
}

/// Digit runs starting at one run and joined by single separators.
struct Chain {
    /// `(start, end)` of each run.
    runs: [(usize, usize); MAX_RUNS],
    /// How many of `runs` are filled (at least one).
    len: usize,
    /// The first separator (`b'-'`, `b' '`, `b'.'`), or 0 for a lone run.
    sep: u8,
    /// How many runs from the first are joined by `-` alone (at least 1).
    dashed: usize,
}

impl Chain {
    fn build(text: &[u8], s: usize, e: usize) -> Chain {
        let mut chain = Chain {
            runs: [(s, e); MAX_RUNS],
            len: 1,
            sep: 0,
            dashed: 1,
        };
        let sep = match byte(text, e) {
            Some(c) if is_joiner(c) && byte(text, e + 1).is_some_and(is_digit) => c,
            _ => return chain,
        };
        chain.sep = sep;
        let mut all_dash = true;
        let mut end = e;
        while chain.len < MAX_RUNS
            && byte(text, end).is_some_and(is_joiner)
            && byte(text, end + 1).is_some_and(is_digit)
        {
            all_dash &= byte(text, end) == Some(b'-');
            let rs = end + 1;
            let re = run_end(text, rs);
            chain.runs[chain.len] = (rs, re);
            chain.len += 1;
            if all_dash {
                chain.dashed = chain.len;
            }
            end = re;
        }
        chain
    }

    fn run_len(&self, i: usize) -> usize {
        self.runs[i].1 - self.runs[i].0
    }
}

/// A candidate finding with its tie-break rank.
#[derive(Clone, Copy)]
struct Cand {
    start: usize,
    end: usize,
    kind: DetectorKind,
    rank: u8,
}

// Ranks break ties between candidates covering the same bytes: a keyword
// that names the number beats a shape, a validated card beats a keyword guess
// at a bank account, and a bare checksum-only routing number loses to all.
const RANK_ABA_KEYWORD: u8 = 20;
const RANK_PASSPORT: u8 = 18;
const RANK_DL: u8 = 16;
const RANK_EIN_KEYWORD: u8 = 15;
const RANK_CARD: u8 = 14;
const RANK_BANK: u8 = 12;
const RANK_SSN: u8 = 10;
const RANK_ITIN: u8 = 8;
const RANK_EIN: u8 = 6;
const RANK_ABA_ALONE: u8 = 2;
const RANK_EXPIRY: u8 = 4;
/// Most bytes between a card number and the expiry that belongs to it.
const CARD_EXPIRY_SPAN: usize = 24;

impl Cand {
    fn new(start: usize, end: usize, kind: DetectorKind, rank: u8) -> Cand {
        Cand {
            start,
            end,
            kind,
            rank,
        }
    }

    /// Longer wins; equal lengths go to the higher rank.
    fn beats(&self, other: &Cand) -> bool {
        (self.end - self.start, self.rank) > (other.end - other.start, other.rank)
    }
}

fn keep_best(best: &mut Option<Cand>, c: Cand) {
    match best {
        Some(b) if !c.beats(b) => {}
        _ => *best = Some(c),
    }
}

/// Scans every digit run of `text`, resolving overlaps among all detectors,
/// then keeps the findings of `set`. Appends to `out` after `out`'s current
/// length only. No digit-count prefilter: see [`has_min_digits`].
pub(super) fn scan_runs(text: &[u8], set: DetectorSet, out: &mut Vec<Finding>) {
    let base = out.len();
    // The last candidate merged and the index of its finding in `out`.
    let mut last: Option<(Cand, usize)> = None;
    let mut i = 0;
    while let Some(s) = next_digit(text, i) {
        let e = run_end(text, s);
        if let Some(c) = best_at(text, s, e) {
            match last {
                Some((prev, at)) if c.start < prev.end => {
                    if c.beats(&prev) {
                        out[at] = Finding {
                            start: c.start,
                            end: c.end,
                            kind: c.kind,
                        };
                        last = Some((c, at));
                    }
                }
                _ => {
                    out.push(Finding {
                        start: c.start,
                        end: c.end,
                        kind: c.kind,
                    });
                    last = Some((c, out.len() - 1));
                }
            }
        }
        i = e;
    }
    // An expiry is a card's only next to one: a card number found shortly
    // before it, or a card word (`visa exp 12/27`). Alone, `exp 12/27` is
    // a date.
    let mut last_card_end = None;
    let mut w = base;
    for r in base..out.len() {
        let f = out[r];
        match f.kind {
            DetectorKind::Card => last_card_end = Some(f.end),
            DetectorKind::CardExpiry => {
                let after_card = last_card_end.is_some_and(|e| f.start - e <= CARD_EXPIRY_SPAN);
                if !after_card && !card_word_near(text, f.start) {
                    continue;
                }
            }
            _ => {}
        }
        out[w] = f;
        w += 1;
    }
    out.truncate(w);
    if set != DetectorSet::ALL {
        let mut w = base;
        for r in base..out.len() {
            if set.contains(out[r].kind) {
                out[w] = out[r];
                w += 1;
            }
        }
        out.truncate(w);
    }
}

/// The best candidate whose digits start with the run `[s, e)`.
fn best_at(text: &[u8], s: usize, e: usize) -> Option<Cand> {
    let mut best = None;
    let chain = Chain::build(text, s, e);
    let run = e - s;
    let digits = &text[s..e];

    let start = start_ok(text, s);
    // Letters (or `_`) glued right before the digits: `SSN123456789`,
    // `ref_4111111111111111`. Shapes that validate strongly (cards, dashed
    // SSNs) are taken all the same; a bare nine only after a tax or routing
    // keyword.
    let glued = !start && glued_letter(before(text, s));
    if start || glued {
        // Bare numbers: the run alone.
        if run == 9 && end_ok(text, e) {
            if start {
                bare_nine(text, s, e, &mut best);
            } else {
                glued_nine(text, s, e, &mut best);
            }
        } else if (13..=19).contains(&run)
            && (end_ok(text, e) || glued_letter(byte(text, e)))
            && card_valid(digits)
        {
            keep_best(&mut best, Cand::new(s, e, DetectorKind::Card, RANK_CARD));
        }
        if chain.len >= 2 {
            separated(text, &chain, start, &mut best);
        }
    }
    if run <= 2 {
        expiry(text, s, e, &mut best);
    }

    keyworded(text, s, e, &chain, &mut best);
    best
}

/// A letter or `_`: glue that a strongly validated number may carry.
fn glued_letter(b: Option<u8>) -> bool {
    b.is_some_and(|b| is_alpha(b) || b == b'_')
}

/// Nine digits glued to a keyword: `SSN123456789`, `routing021000021`.
fn glued_nine(text: &[u8], s: usize, e: usize, best: &mut Option<Cand>) {
    let d = &text[s..e];
    match glued_keyword(text, s) {
        Keyword::TaxId => {
            let (area, group, serial) = split_ssn(&d[..3], &d[3..5], &d[5..9]);
            if ssn_valid(area, group, serial) {
                keep_best(best, Cand::new(s, e, DetectorKind::Ssn, RANK_SSN));
            } else if itin_valid(area, group, serial) {
                keep_best(best, Cand::new(s, e, DetectorKind::Itin, RANK_ITIN));
            }
        }
        Keyword::Routing => {
            let mut nine = [0u8; 9];
            nine.copy_from_slice(d);
            if aba_valid(&nine) {
                keep_best(
                    best,
                    Cand::new(s, e, DetectorKind::AbaRouting, RANK_ABA_KEYWORD),
                );
            }
        }
        _ => {}
    }
}

/// `MM/YY`, `MM/YYYY`, `MM-YY` after an expiry keyword (`exp 12/27`,
/// `valid thru 01/2030`).
fn expiry(text: &[u8], s: usize, e: usize, best: &mut Option<Cand>) {
    if !start_ok(text, s) || !matches!(byte(text, e), Some(b'/' | b'-')) {
        return;
    }
    let ys = e + 1;
    let ye = run_end(text, ys);
    if !matches!(ye - ys, 2 | 4) || !end_ok(text, ye) || e - s == 0 {
        return;
    }
    let month = num(&text[s..e]);
    if !(1..=12).contains(&month) || keyword_before(text, s) != Keyword::Expiry {
        return;
    }
    keep_best(
        best,
        Cand::new(s, ye, DetectorKind::CardExpiry, RANK_EXPIRY),
    );
}

/// A lone run of nine digits: SSN, ITIN or routing number.
fn bare_nine(text: &[u8], s: usize, e: usize, best: &mut Option<Cand>) {
    let d = &text[s..e];
    let (area, group, serial) = split_ssn(&d[..3], &d[3..5], &d[5..9]);
    let ssn = ssn_valid(area, group, serial);
    let itin = !ssn && itin_valid(area, group, serial);
    if (ssn || itin) && !unlikely_bare_ssn(text, s, e) {
        let (kind, rank) = if ssn {
            (DetectorKind::Ssn, RANK_SSN)
        } else {
            (DetectorKind::Itin, RANK_ITIN)
        };
        keep_best(best, Cand::new(s, e, kind, rank));
    }
    let mut nine = [0u8; 9];
    nine.copy_from_slice(d);
    if aba_valid(&nine) {
        if routing_keyword_near(text, s) || micr_transit_before(text, s) {
            keep_best(
                best,
                Cand::new(s, e, DetectorKind::AbaRouting, RANK_ABA_KEYWORD),
            );
        } else if whole_text(text, s, e) {
            keep_best(
                best,
                Cand::new(s, e, DetectorKind::AbaRouting, RANK_ABA_ALONE),
            );
        }
    }
}

fn split_ssn(area: &[u8], group: &[u8], serial: &[u8]) -> (u16, u8, u16) {
    // At most 3, 2 and 4 digits: the casts cannot truncate.
    (num(area) as u16, num(group) as u8, num(serial) as u16)
}

/// Numbers written in groups: SSN/ITIN `3-2-4` (`-`, space or `.`), EIN
/// `2-7`, cards in 3 to 5 groups, routing numbers in `3-3-3` or `4-4-1`
/// after a routing keyword. `start` is false when letters are glued before
/// the first group: then only the strongly validated shapes count.
fn separated(text: &[u8], chain: &Chain, start: bool, best: &mut Option<Cand>) {
    let (s, _) = chain.runs[0];
    let end_glued_ok = |end: usize| end_ok(text, end) || glued_letter(byte(text, end));
    // SSN / ITIN: the first three runs are 3, 2 and 4 digits.
    if chain.len >= 3 && chain.run_len(0) == 3 && chain.run_len(1) == 2 && chain.run_len(2) == 4 {
        let end = chain.runs[2].1;
        if end_glued_ok(end) {
            let r = |i: usize| &text[chain.runs[i].0..chain.runs[i].1];
            let (area, group, serial) = split_ssn(r(0), r(1), r(2));
            if ssn_valid(area, group, serial) {
                keep_best(best, Cand::new(s, end, DetectorKind::Ssn, RANK_SSN));
            } else if itin_valid(area, group, serial) {
                keep_best(best, Cand::new(s, end, DetectorKind::Itin, RANK_ITIN));
            }
        }
    }
    // Nine digits in other groupings (`123-456789`, `12345-6789`) after a
    // taxpayer word: typed by hand, still an SSN.
    if start && chain.len >= 2 {
        let mut nine = [0u8; 9];
        let mut n = 0;
        let mut end = None;
        for k in 0..chain.len.min(3) {
            let (rs, re) = chain.runs[k];
            if n + (re - rs) > 9 {
                break;
            }
            nine[n..n + (re - rs)].copy_from_slice(&text[rs..re]);
            n += re - rs;
            if n == 9 && k >= 1 {
                end = Some(re);
            }
        }
        let shaped = chain.len >= 3
            && chain.run_len(0) == 3
            && chain.run_len(1) == 2
            && chain.run_len(2) == 4;
        let ein_shaped = chain.run_len(0) == 2 && chain.run_len(1) == 7;
        if let (Some(end), false) = (end, shaped || ein_shaped) {
            if end_ok(text, end) && tax_keyword_near(text, s) {
                let (area, group, serial) = split_ssn(&nine[..3], &nine[3..5], &nine[5..9]);
                if ssn_valid(area, group, serial) {
                    keep_best(best, Cand::new(s, end, DetectorKind::Ssn, RANK_SSN));
                } else if itin_valid(area, group, serial) {
                    keep_best(best, Cand::new(s, end, DetectorKind::Itin, RANK_ITIN));
                }
            }
        }
    }
    // Routing numbers as banks print them in groups.
    if start && chain.len >= 3 {
        let shape = (chain.run_len(0), chain.run_len(1), chain.run_len(2));
        let end = chain.runs[2].1;
        if matches!(shape, (3, 3, 3) | (4, 4, 1)) && end_ok(text, end) {
            let mut nine = [0u8; 9];
            let mut n = 0;
            for k in 0..3 {
                let (rs, re) = chain.runs[k];
                nine[n..n + (re - rs)].copy_from_slice(&text[rs..re]);
                n += re - rs;
            }
            if aba_valid(&nine) && routing_keyword_near(text, s) {
                keep_best(
                    best,
                    Cand::new(s, end, DetectorKind::AbaRouting, RANK_ABA_KEYWORD),
                );
            }
        }
    }
    // EIN: exactly `NN-NNNNNNN` (a longer dashed chain fails end_ok).
    if start && chain.dashed >= 2 && chain.run_len(0) == 2 && chain.run_len(1) == 7 {
        let end = chain.runs[1].1;
        let (ps, _) = chain.runs[0];
        let (rs, re) = chain.runs[1];
        if end_ok(text, end)
            && ein_prefix_valid(num(&text[ps..ps + 2]) as u8)
            && num(&text[rs..re]) != 0
        {
            keep_best(best, Cand::new(s, end, DetectorKind::Ein, RANK_EIN));
        }
    }
    // Cards: first group 4-6 digits, the others 3-6, 13-19 digits in all;
    // the longest valid prefix of the chain wins.
    if (4..=6).contains(&chain.run_len(0)) && chain.len >= 3 {
        let mut buf = [0u8; 19];
        let mut n = 0;
        let mut found = None;
        for k in 0..chain.len {
            let (rs, re) = chain.runs[k];
            if (k > 0 && !(3..=6).contains(&(re - rs))) || n + (re - rs) > 19 {
                break;
            }
            buf[n..n + (re - rs)].copy_from_slice(&text[rs..re]);
            n += re - rs;
            // UATP numbers (prefix 1) print 4-6-5 only: other groupings of a
            // leading 1 are readings and ids.
            let uatp_ok =
                buf[0] != b'1' || (k == 2 && chain.run_len(0) == 4 && chain.run_len(1) == 6);
            if k >= 2 && n >= 13 && uatp_ok && end_glued_ok(re) && card_valid(&buf[..n]) {
                found = Some(re);
            }
        }
        if let Some(end) = found {
            keep_best(best, Cand::new(s, end, DetectorKind::Card, RANK_CARD));
        }
    }
}

/// Keyword-anchored numbers: driver's license, passport, bank account, and
/// routing numbers named by a keyword.
fn keyworded(text: &[u8], s: usize, e: usize, chain: &Chain, best: &mut Option<Cand>) {
    let run = e - s;
    if run < 4 {
        // A bank account may be dashed groups of any size; others need 4+
        // digits in this run.
        if chain.dashed < 2 || before(text, s).is_some_and(is_word) {
            return;
        }
    }
    // Letters glued before the digits (DL/passport prefixes, at most 2).
    let mut t = s;
    while t > 0 && s - t < 3 && is_alpha(text[t - 1]) {
        t -= 1;
    }
    let mut letters = s - t;
    // A whole keyword glued to the digits (`DL12345678`, `checking000123`).
    let glued_kw = if before(text, s).is_some_and(is_alpha) {
        glued_keyword(text, s)
    } else {
        Keyword::None
    };
    if glued_kw != Keyword::None {
        t = s;
        letters = 0;
    } else if letters > 2 || before(text, t).is_some_and(is_word) {
        return;
    }
    // Bank-account token: the dashed chain (or the run), no letters.
    let bank_end = if chain.dashed >= 2 {
        chain.runs[chain.dashed - 1].1
    } else {
        e
    };
    let bank_digits: usize = if chain.dashed >= 2 {
        (0..chain.dashed).map(|i| chain.run_len(i)).sum()
    } else {
        run
    };
    let bank_shape = letters == 0 && (4..=17).contains(&bank_digits) && end_ok(text, bank_end);
    let alnum_shape = end_ok(text, e) && (4..=14).contains(&run);
    if !bank_shape && !alnum_shape {
        return;
    }
    let kw = if glued_kw != Keyword::None {
        glued_kw
    } else {
        keyword_before(text, t)
    };
    match kw {
        Keyword::None | Keyword::Expiry | Keyword::TaxId => {}
        Keyword::DriversLicense => {
            if alnum_shape && (letters >= 1 || run >= 7) {
                keep_best(best, Cand::new(t, e, DetectorKind::DriversLicense, RANK_DL));
            }
        }
        Keyword::Passport => {
            if alnum_shape && (6..=9).contains(&run) {
                keep_best(best, Cand::new(t, e, DetectorKind::Passport, RANK_PASSPORT));
            }
        }
        Keyword::Routing => {
            // Routing numbers are handled with their checksum in bare_nine;
            // nothing else to do here.
        }
        Keyword::Ein => {
            // `EIN 123456789`: the dash-less form, only right after the keyword.
            if alnum_shape
                && letters == 0
                && run == 9
                && ein_prefix_valid(num(&text[s..s + 2]) as u8)
                && num(&text[s + 2..e]) != 0
            {
                keep_best(best, Cand::new(t, e, DetectorKind::Ein, RANK_EIN_KEYWORD));
            }
        }
        Keyword::BankAccount => {
            if bank_shape {
                keep_best(
                    best,
                    Cand::new(t, bank_end, DetectorKind::BankAccount, RANK_BANK),
                );
            }
        }
        Keyword::BankDirect => {
            if bank_shape && bank_digits >= 8 {
                keep_best(
                    best,
                    Cand::new(t, bank_end, DetectorKind::BankAccount, RANK_BANK),
                );
            }
        }
        Keyword::AccountNeedsContext(kw_start) => {
            if bank_shape && bank_context_before(text, kw_start) {
                keep_best(
                    best,
                    Cand::new(t, bank_end, DetectorKind::BankAccount, RANK_BANK),
                );
            }
        }
    }
}
