//! Keyword context: the words just before a number, read backwards.
//!
//! Only called for digit runs that already have the right shape, so none of
//! this is on the hot path for text without numbers. Every look-back is bounded
//! ([`GAP_MAX`], [`CONTEXT_SPAN`]); words compare case-insensitively and match
//! only whole ASCII words.

use super::scan::{is_alpha, is_digit, is_word};

/// Most bytes between the end of a keyword and the number it names
/// (`Driver's License Number is: D1234567` has 12), filler words included.
pub(super) const GAP_MAX: usize = 24;

/// How far before a keyword (or a routing number) context words are looked for.
pub(super) const CONTEXT_SPAN: usize = 40;

/// What the keyword right before a number says it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Keyword {
    /// No keyword.
    None,
    /// `DL`, `DLN`, `driver's license`, `license #`, `lic no` …
    DriversLicense,
    /// `passport`, `passport no`, `passport #`.
    Passport,
    /// `routing`, `ABA`, `RTN`, `transit`.
    Routing,
    /// `checking #`, `savings no.`: a bank account by itself.
    BankAccount,
    /// `account`, `acct`, `acc`: a bank account only with bank context before
    /// the keyword, which starts at the offset held.
    AccountNeedsContext(usize),
}

/// Bytes that may stand between a keyword and its number.
fn is_gap(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\n' | b'\r' | b':' | b'#' | b'-' | b'.' | b'=' | b'(' | b')' | b'['
            | b']' | b'"' | b'\'' | b','
    )
}

/// Words skipped between a keyword and its number; the first group also marks
/// the keyword as a label (`license no.`, `checking number`).
const NUMBER_WORDS: &[&[u8]] = &[b"no", b"nr", b"nbr", b"num", b"number"];
const FILLER_WORDS: &[&[u8]] = &[b"is", b"was"];

/// `w` equals `target` (lower-case ASCII) ignoring ASCII case and apostrophes
/// (`'` and the UTF-8 right single quote), so `Driver’s` is `drivers`.
pub(super) fn word_is(w: &[u8], target: &[u8]) -> bool {
    let mut i = 0;
    let mut j = 0;
    while i < w.len() {
        let b = w[i];
        if b == b'\'' {
            i += 1;
            continue;
        }
        if w[i..].starts_with(&[0xE2, 0x80, 0x99]) {
            i += 3;
            continue;
        }
        if j >= target.len() || b.to_ascii_lowercase() != target[j] {
            return false;
        }
        i += 1;
        j += 1;
    }
    j == target.len()
}

fn word_in(w: &[u8], list: &[&[u8]]) -> bool {
    list.iter().any(|t| word_is(w, t))
}

/// Start of the letters ending at `end` (ASCII letters only).
fn letters_start(text: &[u8], end: usize) -> usize {
    let mut p = end;
    while p > 0 && is_alpha(text[p - 1]) {
        p -= 1;
    }
    p
}

/// Start of the word ending at `end`, apostrophes inside included
/// (`driver's`, `driver’s`).
fn word_start(text: &[u8], end: usize) -> usize {
    let mut p = letters_start(text, end);
    loop {
        if p >= 2 && text[p - 1] == b'\'' && is_alpha(text[p - 2]) {
            p = letters_start(text, p - 1);
        } else if p >= 4 && text[p - 3..p] == [0xE2, 0x80, 0x99] && is_alpha(text[p - 4]) {
            p = letters_start(text, p - 3);
        } else {
            return p;
        }
    }
}

/// The word before offset `p`, skipping spaces, tabs and dashes (at most 3
/// bytes of them): `(start, end)`, or `None`.
fn prev_word(text: &[u8], p: usize) -> Option<(usize, usize)> {
    let mut q = p;
    while q > 0 && p - q < 3 && matches!(text[q - 1], b' ' | b'\t' | b'-') {
        q -= 1;
    }
    let ws = word_start(text, q);
    (ws < q && !(ws > 0 && is_word(text[ws - 1]))).then_some((ws, q))
}

/// Reads back from `t` (the start of a number token) over gap bytes and filler
/// words, at most [`GAP_MAX`] bytes, to the keyword before it.
pub(super) fn keyword_before(text: &[u8], t: usize) -> Keyword {
    let lo = t.saturating_sub(GAP_MAX);
    let mut p = t;
    let mut labelled = false;
    loop {
        while p > lo && is_gap(text[p - 1]) {
            labelled |= text[p - 1] == b'#';
            p -= 1;
        }
        let ws = word_start(text, p);
        if ws == p || (ws > 0 && is_word(text[ws - 1])) {
            return Keyword::None;
        }
        let w = &text[ws..p];
        if ws >= lo && word_in(w, NUMBER_WORDS) {
            labelled = true;
            p = ws;
            continue;
        }
        if ws >= lo && word_in(w, FILLER_WORDS) {
            p = ws;
            continue;
        }
        return classify(text, ws, w, labelled);
    }
}

/// Words before `license` that make it a driver's license.
const DRIVER_WORDS: &[&[u8]] = &[b"driver", b"drivers", b"driving", b"operator", b"operators"];
/// Words before `license` that make it something else.
const OTHER_LICENSE_WORDS: &[&[u8]] = &[
    b"business",
    b"contractor",
    b"contractors",
    b"software",
    b"product",
    b"vendor",
    b"professional",
    b"trade",
    b"building",
    b"electrical",
    b"plumbing",
    b"liquor",
    b"dog",
    b"pet",
    b"marriage",
    b"radio",
    b"fcc",
];

fn classify(text: &[u8], ws: usize, w: &[u8], labelled: bool) -> Keyword {
    if word_in(w, &[b"dl", b"dln", b"dlno", b"dlnum"]) {
        return Keyword::DriversLicense;
    }
    if word_in(w, &[b"license", b"licence", b"lic"]) {
        return match prev_word(text, ws) {
            Some((a, b)) if word_in(&text[a..b], DRIVER_WORDS) => Keyword::DriversLicense,
            Some((a, b)) if word_in(&text[a..b], OTHER_LICENSE_WORDS) => Keyword::None,
            _ if labelled => Keyword::DriversLicense,
            _ => Keyword::None,
        };
    }
    if word_is(w, b"passport") {
        return Keyword::Passport;
    }
    if word_in(w, ROUTING_WORDS) {
        return Keyword::Routing;
    }
    if word_in(w, &[b"checking", b"savings", b"chequing"]) {
        // `Energy savings 1200 kWh` is no account: standalone checking and
        // savings need a label (`#`, `no.`, `number`).
        return if labelled {
            Keyword::BankAccount
        } else {
            Keyword::None
        };
    }
    if word_in(w, &[b"account", b"acct", b"acc", b"acnt"]) {
        return Keyword::AccountNeedsContext(ws);
    }
    Keyword::None
}

/// Words that name a routing number.
const ROUTING_WORDS: &[&[u8]] = &[b"routing", b"aba", b"rtn", b"transit", b"abarouting"];

/// Words that make an `account` a bank account.
const BANK_CONTEXT_WORDS: &[&[u8]] = &[
    b"bank",
    b"banking",
    b"checking",
    b"savings",
    b"chequing",
    b"ach",
    b"draft",
    b"routing",
    b"aba",
    b"eft",
    b"deposit",
    b"iban",
];

/// True when a whole word of `list` ends within [`CONTEXT_SPAN`] bytes before
/// `end` (and at or before `end`).
fn word_within(text: &[u8], end: usize, list: &[&[u8]]) -> bool {
    let lo = end.saturating_sub(CONTEXT_SPAN);
    let mut p = end;
    while p > lo {
        if !is_alpha(text[p - 1]) {
            p -= 1;
            continue;
        }
        let ws = letters_start(text, p);
        let bounded = !(ws > 0 && is_word(text[ws - 1])) && !text.get(p).is_some_and(|&b| is_word(b));
        if bounded && word_in(&text[ws..p], list) {
            return true;
        }
        p = ws;
    }
    false
}

/// Is there a routing keyword in the [`CONTEXT_SPAN`] bytes before offset `s`?
pub(super) fn routing_keyword_near(text: &[u8], s: usize) -> bool {
    word_within(text, s, ROUTING_WORDS)
}

/// Is there a bank word (`bank`, `checking`, `savings`, `ACH`, `draft`,
/// `routing`, `EFT`, `deposit` …) in the [`CONTEXT_SPAN`] bytes before an
/// `account` keyword starting at `kw_start`, or the keyword's own compound
/// (`bankaccount`)?
pub(super) fn bank_context_before(text: &[u8], kw_start: usize) -> bool {
    word_within(text, kw_start, BANK_CONTEXT_WORDS)
}

/// Words after which a bare 9-digit number is an id of some other kind.
const OTHER_ID_WORDS: &[&[u8]] = &[
    b"order", b"ord", b"orders", b"po", b"invoice", b"inv", b"meter", b"mtr", b"account", b"acct",
    b"acc", b"acnt", b"id", b"ids", b"ref", b"reference", b"confirmation", b"conf", b"ticket",
    b"tkt", b"case", b"tracking", b"track", b"claim", b"permit", b"premise", b"premises",
    b"service", b"svc", b"customer", b"cust", b"client", b"bill", b"billing", b"statement",
    b"stmt", b"transaction", b"txn", b"trans", b"work", b"wo", b"job", b"serial", b"sn", b"phone",
    b"tel", b"telephone", b"fax", b"mobile", b"cell", b"zip", b"zipcode", b"postal", b"postcode",
    b"routing", b"aba", b"rtn", b"transit", b"member", b"policy", b"contract", b"loan", b"check",
    b"cheque", b"receipt", b"item", b"sku", b"part", b"model", b"batch", b"lot", b"device",
    b"asset", b"unit", b"apn", b"parcel", b"request", b"req", b"incident", b"record", b"file",
    b"document", b"doc", b"reading", b"read", b"kwh", b"gallons", b"ccf", b"therms", b"balance",
    b"amount", b"total", b"employee", b"emp", b"badge", b"vin", b"imei", b"upc", b"isbn", b"pin",
    b"code", b"route", b"location", b"loc", b"site", b"pole", b"transformer", b"circuit",
    b"feeder", b"premid", b"said", b"agreement", b"session", b"user", b"uid", b"sequence",
    b"seq", b"version", b"build", b"port", b"pid", b"rma", b"shipment", b"package", b"pkg",
    b"payment", b"pmt", b"auth", b"authorization", b"approval", b"npi",
    b"license", b"lic", b"passport", b"dl", b"dln", b"checking", b"savings",
];

/// Words that name a taxpayer number: a bare number after them is kept even
/// after a `#`.
const TAX_ID_WORDS: &[&[u8]] = &[
    b"ssn", b"ss", b"ssan", b"social", b"security", b"tin", b"itin", b"taxpayer", b"tax",
];

/// Two-letter US state and territory codes: `CA 943011234` is a ZIP+4.
const STATE_CODES: &[&[u8; 2]] = &[
    b"AL", b"AK", b"AZ", b"AR", b"CA", b"CO", b"CT", b"DE", b"FL", b"GA", b"HI", b"ID", b"IL",
    b"IN", b"IA", b"KS", b"KY", b"LA", b"ME", b"MD", b"MA", b"MI", b"MN", b"MS", b"MO", b"MT",
    b"NE", b"NV", b"NH", b"NJ", b"NM", b"NY", b"NC", b"ND", b"OH", b"OK", b"OR", b"PA", b"RI",
    b"SC", b"SD", b"TN", b"TX", b"UT", b"VT", b"VA", b"WA", b"WV", b"WI", b"WY", b"DC", b"PR",
    b"VI", b"GU", b"AS", b"MP",
];

/// Is a bare 9-digit number at `s` more likely another kind of id than an
/// SSN/ITIN? True after an id word (`Order 482915736`, `Invoice no.
/// 000123456`, `meter # …`, `tracking …`), after a bare `#` not preceded by a
/// tax-id word, and after an upper-case state code (`CA 943011234`, a ZIP+4).
/// Dashed and spaced SSNs (`123-45-6789`) are never second-guessed.
pub(super) fn unlikely_bare_ssn(text: &[u8], s: usize) -> bool {
    let lo = s.saturating_sub(GAP_MAX);
    let mut p = s;
    let mut hash = false;
    let mut only_spaces = true;
    loop {
        while p > lo && is_gap(text[p - 1]) {
            hash |= text[p - 1] == b'#';
            only_spaces &= text[p - 1] == b' ';
            p -= 1;
        }
        let ws = word_start(text, p);
        if ws == p || (ws > 0 && is_digit(text[ws - 1])) {
            return hash;
        }
        let w = &text[ws..p];
        if ws >= lo && (word_in(w, NUMBER_WORDS) || word_in(w, FILLER_WORDS)) {
            only_spaces = false;
            p = ws;
            continue;
        }
        if word_in(w, TAX_ID_WORDS) {
            return false;
        }
        if word_in(w, OTHER_ID_WORDS) {
            // `Tax ID 123456789` names a taxpayer number after all.
            let tax = word_in(w, &[b"id", b"no", b"number"])
                && prev_word(text, ws).is_some_and(|(a, b)| word_in(&text[a..b], TAX_ID_WORDS));
            return !tax;
        }
        if only_spaces && p - ws == 2 && STATE_CODES.iter().any(|c| c[..] == *w) {
            return true;
        }
        return hash;
    }
}
