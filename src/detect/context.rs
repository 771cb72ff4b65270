//! Keyword context: the words just before a number, read backwards.
//!
//! Only called for digit runs that already have the right shape, so none of
//! this is on the hot path for text without numbers. Every look-back is bounded
//! ([`GAP_MAX`], [`CONTEXT_SPAN`]). Words are whole ASCII words, folded to
//! lower case without apostrophes (so `Driver’s` is `drivers`) into a stack
//! buffer, and looked up by binary search in sorted word tables.

use super::scan::{is_alpha, is_digit, is_word};

/// Most bytes between the end of a keyword and the number it names
/// (`Driver's License Number is: D1234567` has 12), filler words included.
pub(super) const GAP_MAX: usize = 24;

/// How far before a keyword (or a routing number) context words are looked for.
pub(super) const CONTEXT_SPAN: usize = 40;

/// Longest word any table holds; longer words match nothing.
const WORD_MAX: usize = 16;

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
    /// `EIN`, `FEIN`: a dash-less EIN.
    Ein,
    /// `checking #`, `savings no.`: a bank account by itself.
    BankAccount,
    /// `account`, `acct`, `acc`: a bank account only with bank context before
    /// the keyword, which starts at the offset held.
    AccountNeedsContext(usize),
    /// `exp`, `expires`, `valid thru`, `exp date`: a card expiry.
    Expiry,
    /// `SSN`, `TIN`, `ITIN`, `taxid` glued to the digits (`SSN123456789`).
    TaxId,
    /// `bank`, `ACH`, `IBAN`, `DDA`, `EFT`, `draft` right before a number: a
    /// bank account when the number is long enough to be one.
    BankDirect,
}

/// A word folded for lookup: ASCII lower case, apostrophes (`'` and the
/// UTF-8 right single quote) removed, packed little-endian into a `u128` (no
/// table word holds a zero byte, so packing is one-to-one).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Folded(u128);

impl Folded {
    /// Folds `w`; `None` when it is empty or longer than any table word.
    fn new(w: &[u8]) -> Option<Folded> {
        let mut key = 0u128;
        let mut n = 0;
        let mut i = 0;
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
            if n == WORD_MAX {
                return None;
            }
            key |= u128::from(b.to_ascii_lowercase()) << (8 * n);
            n += 1;
            i += 1;
        }
        (n > 0).then_some(Folded(key))
    }

    fn is_in(self, table: &[u128]) -> bool {
        table.binary_search(&self.0).is_ok()
    }

    fn is(self, word: &[u8]) -> bool {
        self.0 == pack(word)
    }
}

/// Packs a word of at most [`WORD_MAX`] bytes little-endian into a `u128`.
const fn pack(w: &[u8]) -> u128 {
    let mut x = 0u128;
    let mut i = 0;
    while i < w.len() && i < WORD_MAX {
        x |= (w[i] as u128) << (8 * i);
        i += 1;
    }
    x
}

/// A lookup table: the words packed and sorted, at compile time.
const fn table<const N: usize>(words: [&[u8]; N]) -> [u128; N] {
    let mut out = [0u128; N];
    let mut i = 0;
    while i < N {
        out[i] = pack(words[i]);
        i += 1;
    }
    let mut i = 1;
    while i < N {
        let mut j = i;
        while j > 0 && out[j - 1] > out[j] {
            let t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    out
}

/// `words![b"a", b"bc"]`: a `&[u128]` lookup table.
macro_rules! words {
    ($($w:literal),* $(,)?) => {
        &table([$($w as &[u8]),*])
    };
}

/// True when the word `w` (raw text) folds to a word of `table`.
fn word_in(w: &[u8], table: &[u128]) -> bool {
    Folded::new(w).is_some_and(|f| f.is_in(table))
}

// Word tables: lower case, at most WORD_MAX bytes (a test checks both).

/// Words between a keyword and its number that mark the keyword as a label
/// (`license no.`, `checking number`).
pub(super) const NUMBER_WORDS: &[u128] = words![b"nbr", b"no", b"nr", b"num", b"number"];
/// Words skipped between a keyword and its number.
pub(super) const FILLER_WORDS: &[u128] = words![b"is", b"was"];
/// Keywords of a driver's license number by themselves.
pub(super) const DL_WORDS: &[u128] = words![b"dl", b"dln", b"dlno", b"dlnum"];
/// `license` and its short forms: a driver's license after a driver word or
/// with a label.
pub(super) const LICENSE_WORDS: &[u128] = words![b"lic", b"licence", b"license"];
/// Words before `license` that make it a driver's license.
pub(super) const DRIVER_WORDS: &[u128] =
    words![b"driver", b"drivers", b"driving", b"operator", b"operators",];
/// Words before `license` that make it some other license.
pub(super) const OTHER_LICENSE_WORDS: &[u128] = words![
    b"building",
    b"business",
    b"contractor",
    b"contractors",
    b"dog",
    b"electrical",
    b"fcc",
    b"liquor",
    b"marriage",
    b"pet",
    b"plumbing",
    b"product",
    b"professional",
    b"radio",
    b"software",
    b"trade",
    b"vendor",
];
/// Words that name a card's expiry date.
pub(super) const EXPIRY_WORDS: &[u128] = words![
    b"exp",
    b"expdate",
    b"expiration",
    b"expires",
    b"expiring",
    b"expiry",
    b"thru",
];
/// Bank words that name the account number right after them.
pub(super) const DIRECT_BANK_WORDS: &[u128] =
    words![b"ach", b"bank", b"dda", b"draft", b"eft", b"iban"];
/// `good thru`, `valid until`.
pub(super) const VALIDITY_WORDS: &[u128] = words![b"good", b"valid"];
/// Words glued to nine digits that make them a taxpayer number.
pub(super) const GLUED_TAX_WORDS: &[u128] = words![b"itin", b"ssn", b"taxid", b"tin"];
/// Keywords of a dash-less EIN.
pub(super) const EIN_WORDS: &[u128] = words![b"ein", b"fein"];
/// Words that name a routing number.
pub(super) const ROUTING_WORDS: &[u128] = words![b"aba", b"routing", b"rtn", b"transit"];
/// Bank-account keywords by themselves (with a label).
pub(super) const DEPOSIT_ACCOUNT_WORDS: &[u128] = words![b"checking", b"chequing", b"savings"];
/// `account` and its short forms: a bank account only with bank context.
pub(super) const ACCOUNT_WORDS: &[u128] = words![b"acc", b"account", b"acct", b"acnt"];
/// Words that make an `account` a bank account.
pub(super) const BANK_CONTEXT_WORDS: &[u128] = words![
    b"aba",
    b"ach",
    b"bank",
    b"banking",
    b"checking",
    b"chequing",
    b"deposit",
    b"draft",
    b"eft",
    b"iban",
    b"routing",
    b"savings",
];
/// Words after which a bare 9-digit number is an id of some other kind.
pub(super) const OTHER_ID_WORDS: &[u128] = words![
    b"aba",
    b"acc",
    b"account",
    b"acct",
    b"acnt",
    b"affected",
    b"agreement",
    b"amount",
    b"apn",
    b"approval",
    b"asset",
    b"auth",
    b"authorization",
    b"badge",
    b"balance",
    b"batch",
    b"bill",
    b"billing",
    b"build",
    b"bytes",
    b"case",
    b"ccf",
    b"cell",
    b"check",
    b"checking",
    b"checksum",
    b"cheque",
    b"circuit",
    b"claim",
    b"client",
    b"code",
    b"conf",
    b"confirmation",
    b"contract",
    b"count",
    b"cust",
    b"customer",
    b"device",
    b"dl",
    b"dln",
    b"doc",
    b"document",
    b"duration",
    b"ean",
    b"elapsed",
    b"emp",
    b"employee",
    b"err",
    b"errno",
    b"error",
    b"exit",
    b"fax",
    b"feeder",
    b"gallons",
    b"gtin",
    b"hash",
    b"id",
    b"ids",
    b"imei",
    b"incident",
    b"inv",
    b"invoice",
    b"isbn",
    b"item",
    b"job",
    b"kwh",
    b"length",
    b"lic",
    b"license",
    b"limit",
    b"loan",
    b"loc",
    b"location",
    b"lot",
    b"member",
    b"meter",
    b"mobile",
    b"model",
    b"mrn",
    b"mtr",
    b"nonce",
    b"npi",
    b"offset",
    b"ord",
    b"order",
    b"orders",
    b"package",
    b"parcel",
    b"part",
    b"passport",
    b"payment",
    b"permit",
    b"phone",
    b"pid",
    b"pin",
    b"pkg",
    b"pmt",
    b"po",
    b"pole",
    b"policy",
    b"population",
    b"port",
    b"postal",
    b"postcode",
    b"premid",
    b"premise",
    b"premises",
    b"read",
    b"reading",
    b"rec",
    b"receipt",
    b"record",
    b"ref",
    b"reference",
    b"req",
    b"request",
    b"rma",
    b"route",
    b"routing",
    b"rows",
    b"rtn",
    b"said",
    b"savings",
    b"seed",
    b"seq",
    b"sequence",
    b"serial",
    b"service",
    b"session",
    b"shipment",
    b"site",
    b"size",
    b"sku",
    b"sn",
    b"statement",
    b"status",
    b"stmt",
    b"svc",
    b"tel",
    b"telephone",
    b"therms",
    b"ticket",
    b"time",
    b"tkt",
    b"total",
    b"track",
    b"tracking",
    b"trans",
    b"transaction",
    b"transformer",
    b"transit",
    b"txn",
    b"uid",
    b"unit",
    b"upc",
    b"user",
    b"version",
    b"vin",
    b"wo",
    b"work",
    b"zip",
    b"zipcode",
];
/// Words that name a taxpayer number: a bare number after them is kept even
/// after an id word or a `#`.
pub(super) const TAX_ID_WORDS: &[u128] = words![
    b"ein",
    b"fein",
    b"itin",
    b"security",
    b"social",
    b"ss",
    b"ssan",
    b"ssn",
    b"tax",
    b"taxpayer",
    b"tin",
];
/// Words after a number that make it a quantity.
pub(super) const UNIT_WORDS: &[u128] = words![
    b"b",
    b"bytes",
    b"calls",
    b"ccf",
    b"cents",
    b"customers",
    b"days",
    b"dollars",
    b"feet",
    b"ft",
    b"gal",
    b"gallons",
    b"gb",
    b"hcf",
    b"hits",
    b"hours",
    b"items",
    b"kb",
    b"kg",
    b"km",
    b"kw",
    b"kwh",
    b"lbs",
    b"liters",
    b"litres",
    b"mb",
    b"meters",
    b"miles",
    b"min",
    b"mins",
    b"minutes",
    b"ms",
    b"mw",
    b"mwh",
    b"ns",
    b"people",
    b"points",
    b"records",
    b"requests",
    b"residents",
    b"rows",
    b"s",
    b"sec",
    b"seconds",
    b"secs",
    b"tests",
    b"therms",
    b"times",
    b"tons",
    b"units",
    b"us",
    b"usd",
    b"users",
    b"views",
    b"wh",
];
/// Two-letter US state and territory codes, upper case as written:
/// `CA 943011234` is a ZIP+4.
pub(super) const STATE_CODES: &[u128] = words![
    b"AK", b"AL", b"AR", b"AS", b"AZ", b"CA", b"CO", b"CT", b"DC", b"DE", b"FL", b"GA", b"GU",
    b"HI", b"IA", b"ID", b"IL", b"IN", b"KS", b"KY", b"LA", b"MA", b"MD", b"ME", b"MI", b"MN",
    b"MO", b"MP", b"MS", b"MT", b"NC", b"ND", b"NE", b"NH", b"NJ", b"NM", b"NV", b"NY", b"OH",
    b"OK", b"OR", b"PA", b"PR", b"RI", b"SC", b"SD", b"TN", b"TX", b"UT", b"VA", b"VI", b"VT",
    b"WA", b"WI", b"WV", b"WY",
];

/// Bytes that may stand between a keyword and its number.
fn is_gap(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t'
            | b'\n'
            | b'\r'
            | b':'
            | b'#'
            | b'-'
            | b'.'
            | b'='
            | b'('
            | b')'
            | b'['
            | b']'
            | b'"'
            | b'\''
            | b','
    )
}

/// Most letters read back for one word: longer words match nothing, and the
/// cap keeps every look-back bounded.
const LETTERS_MAX: usize = 2 * WORD_MAX;

/// Start of the letters ending at `end` (ASCII letters only, at most
/// [`LETTERS_MAX`]: a longer run looks glued to a letter and matches nothing).
fn letters_start(text: &[u8], end: usize) -> usize {
    let mut p = end;
    while p > 0 && end - p < LETTERS_MAX && is_alpha(text[p - 1]) {
        p -= 1;
    }
    p
}

/// Start of the word ending at `end`, apostrophes inside included
/// (`driver's`, `driver’s`).
fn word_start(text: &[u8], end: usize) -> usize {
    let mut p = letters_start(text, end);
    loop {
        if end - p > LETTERS_MAX {
            return p;
        }
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
        let Some(w) = Folded::new(&text[ws..p]) else {
            return Keyword::None;
        };
        if ws >= lo && w.is_in(NUMBER_WORDS) {
            labelled = true;
            p = ws;
            continue;
        }
        if ws >= lo && w.is_in(FILLER_WORDS) {
            p = ws;
            continue;
        }
        return classify(text, ws, w, labelled);
    }
}

fn classify(text: &[u8], ws: usize, w: Folded, labelled: bool) -> Keyword {
    if w.is_in(DL_WORDS) {
        Keyword::DriversLicense
    } else if w.is_in(LICENSE_WORDS) {
        match prev_word(text, ws) {
            Some((a, b)) if word_in(&text[a..b], DRIVER_WORDS) => Keyword::DriversLicense,
            Some((a, b)) if word_in(&text[a..b], OTHER_LICENSE_WORDS) => Keyword::None,
            _ if labelled => Keyword::DriversLicense,
            _ => Keyword::None,
        }
    } else if w.is_in(EIN_WORDS) {
        Keyword::Ein
    } else if w.is(b"passport") {
        Keyword::Passport
    } else if w.is_in(ROUTING_WORDS) {
        Keyword::Routing
    } else if w.is_in(DEPOSIT_ACCOUNT_WORDS) {
        // `Energy savings 1200 kWh` is no account: without a label (`#`,
        // `no.`, `number`) checking and savings name only numbers long
        // enough to be an account (`to savings 537224158`).
        if labelled {
            Keyword::BankAccount
        } else {
            Keyword::BankDirect
        }
    } else if w.is_in(ACCOUNT_WORDS) {
        Keyword::AccountNeedsContext(ws)
    } else if w.is_in(DIRECT_BANK_WORDS) {
        Keyword::BankDirect
    } else if w.is_in(EXPIRY_WORDS) {
        Keyword::Expiry
    } else if w.is(b"date") || w.is(b"through") || w.is(b"until") {
        // `exp date`, `valid through`, `good until`.
        match prev_word(text, ws) {
            Some((a, b))
                if word_in(&text[a..b], EXPIRY_WORDS) || word_in(&text[a..b], VALIDITY_WORDS) =>
            {
                Keyword::Expiry
            }
            _ => Keyword::None,
        }
    } else {
        Keyword::None
    }
}

/// The keyword the letters glued right before offset `s` spell, as a whole
/// (`routing021000021`, `SSN123456789`, `DL12345678`, `acct#` is not glued):
/// at most [`WORD_MAX`] letters, not themselves glued to a digit before.
pub(super) fn glued_keyword(text: &[u8], s: usize) -> Keyword {
    let ws = letters_start(text, s);
    if ws == s || s - ws > WORD_MAX || (ws > 0 && is_word(text[ws - 1])) {
        return Keyword::None;
    }
    let Some(w) = Folded::new(&text[ws..s]) else {
        return Keyword::None;
    };
    if w.is_in(GLUED_TAX_WORDS) {
        return Keyword::TaxId;
    }
    match classify(text, ws, w, true) {
        Keyword::AccountNeedsContext(_) => Keyword::None,
        k => k,
    }
}

/// Is there a taxpayer word (`SSN`, `tax id`, `social security`) in the
/// [`CONTEXT_SPAN`] bytes before offset `s`?
pub(super) fn tax_keyword_near(text: &[u8], s: usize) -> bool {
    word_within(text, s, TAX_ID_WORDS)
}

/// Words that make a nearby `MM/YY` a card's expiry.
pub(super) const CARD_WORDS: &[u128] = words![
    b"amex",
    b"card",
    b"cc",
    b"credit",
    b"debit",
    b"discover",
    b"mastercard",
    b"visa",
];

/// Is there a card word (`card`, `visa`, `credit` …) in the
/// [`CONTEXT_SPAN`] bytes before offset `s`?
pub(super) fn card_word_near(text: &[u8], s: usize) -> bool {
    word_within(text, s, CARD_WORDS)
}

/// Is the MICR transit symbol (U+2446) right before offset `s`? Cheques
/// print the routing number between two of them.
pub(super) fn micr_transit_before(text: &[u8], s: usize) -> bool {
    s >= 3 && text[s - 3..s] == [0xE2, 0x91, 0x86]
}

/// True when a whole word of `table` ends within [`CONTEXT_SPAN`] bytes
/// before `end` (and at or before `end`).
fn word_within(text: &[u8], end: usize, table: &[u128]) -> bool {
    let lo = end.saturating_sub(CONTEXT_SPAN);
    let mut p = end;
    while p > lo {
        if !is_alpha(text[p - 1]) {
            p -= 1;
            continue;
        }
        let ws = letters_start(text, p);
        let glued_before = ws > 0 && is_word(text[ws - 1]);
        let glued_after = text.get(p).is_some_and(|&b| is_word(b));
        let bounded = !glued_before && !glued_after;
        if bounded && word_in(&text[ws..p], table) {
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
/// `account` keyword starting at `kw_start`?
pub(super) fn bank_context_before(text: &[u8], kw_start: usize) -> bool {
    word_within(text, kw_start, BANK_CONTEXT_WORDS)
}

/// Is the word right after `e` (past at most two spaces) a unit?
fn unit_after(text: &[u8], e: usize) -> bool {
    let mut p = e;
    while p < text.len() && p - e < 2 && text[p] == b' ' {
        p += 1;
    }
    let ws = p;
    while p < text.len() && p - ws <= WORD_MAX && is_alpha(text[p]) {
        p += 1;
    }
    ws < p && !text.get(p).is_some_and(|&b| is_word(b)) && word_in(&text[ws..p], UNIT_WORDS)
}

/// Is a bare 9-digit number at `[s, e)` more likely another kind of id or a
/// quantity than an SSN/ITIN? True after an id word (`Order 482915736`,
/// `Invoice no. 000123456`, `meter # …`, `tracking …`), after a bare `#` not
/// preceded by a tax-id word, after an upper-case state code (`CA 943011234`,
/// a ZIP+4), and before a unit (`123456789 bytes`). Dashed and spaced SSNs
/// (`123-45-6789`) are never second-guessed.
pub(super) fn unlikely_bare_ssn(text: &[u8], s: usize, e: usize) -> bool {
    if unit_after(text, e) {
        return true;
    }
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
        let raw = &text[ws..p];
        let Some(w) = Folded::new(raw) else {
            return hash;
        };
        if ws >= lo && (w.is_in(NUMBER_WORDS) || w.is_in(FILLER_WORDS)) {
            only_spaces = false;
            p = ws;
            continue;
        }
        if w.is_in(TAX_ID_WORDS) {
            return false;
        }
        if w.is_in(OTHER_ID_WORDS) {
            // `Tax ID 123456789` names a taxpayer number after all, and so
            // does `ssn on file 123456789`: a tax-id word shortly before wins
            // (a missed SSN costs more than a masked order number).
            let tax = (w.is(b"id")
                && prev_word(text, ws).is_some_and(|(a, b)| word_in(&text[a..b], TAX_ID_WORDS)))
                || word_within(text, ws, TAX_ID_WORDS);
            return !tax;
        }
        if only_spaces && raw.len() == 2 && STATE_CODES.binary_search(&pack(raw)).is_ok() {
            return true;
        }
        return hash;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpack(x: u128) -> Vec<u8> {
        x.to_le_bytes()
            .into_iter()
            .take_while(|&b| b != 0)
            .collect()
    }

    #[test]
    fn tables_are_sorted_lowercase_and_short() {
        for table in [
            NUMBER_WORDS,
            FILLER_WORDS,
            DL_WORDS,
            LICENSE_WORDS,
            DRIVER_WORDS,
            OTHER_LICENSE_WORDS,
            EIN_WORDS,
            ROUTING_WORDS,
            DEPOSIT_ACCOUNT_WORDS,
            ACCOUNT_WORDS,
            BANK_CONTEXT_WORDS,
            OTHER_ID_WORDS,
            TAX_ID_WORDS,
            UNIT_WORDS,
            EXPIRY_WORDS,
            GLUED_TAX_WORDS,
            DIRECT_BANK_WORDS,
            CARD_WORDS,
            VALIDITY_WORDS,
        ] {
            // Strictly increasing: sorted for binary search, no duplicate.
            for pair in table.windows(2) {
                assert!(
                    pair[0] < pair[1],
                    "{:?}",
                    String::from_utf8_lossy(&unpack(pair[1]))
                );
            }
            for &w in table {
                let bytes = unpack(w);
                assert_eq!(pack(&bytes), w);
                assert!(!bytes.is_empty() && bytes.iter().all(u8::is_ascii_lowercase));
                assert!(Folded::new(&bytes).is_some_and(|f| f.is_in(table)));
            }
        }
        for pair in STATE_CODES.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        assert_eq!(STATE_CODES.len(), 56);
        assert!(STATE_CODES
            .iter()
            .all(|&c| unpack(c).iter().all(u8::is_ascii_uppercase)));
    }

    #[test]
    fn folding() {
        assert!(word_in(b"Driver's", DRIVER_WORDS));
        assert!(word_in("DRIVER\u{2019}S".as_bytes(), DRIVER_WORDS));
        assert!(word_in(b"Drivers'", DRIVER_WORDS));
        assert!(!word_in(b"Drive", DRIVER_WORDS));
        assert!(!word_in(b"abcdefghijklmnopq", DRIVER_WORDS));
        assert!(word_in(b"sSn", TAX_ID_WORDS));
    }

    #[test]
    fn keyword_reading() {
        let kw = |s: &str| keyword_before(s.as_bytes(), s.len());
        assert_eq!(kw("Driver's License Number is: "), Keyword::DriversLicense);
        assert_eq!(kw("drivers lic "), Keyword::DriversLicense);
        assert_eq!(kw("license "), Keyword::None);
        assert_eq!(kw("license # "), Keyword::DriversLicense);
        assert_eq!(kw("Lic. No. "), Keyword::DriversLicense);
        assert_eq!(kw("contractor license # "), Keyword::None);
        assert_eq!(kw("PASSPORT NO: "), Keyword::Passport);
        assert_eq!(kw("Routing #"), Keyword::Routing);
        assert_eq!(kw("savings "), Keyword::BankDirect);
        assert_eq!(kw("savings number "), Keyword::BankAccount);
        assert_eq!(kw("my account "), Keyword::AccountNeedsContext(3));
        assert_eq!(kw("xdl "), Keyword::None);
        assert_eq!(kw("5dl "), Keyword::None);
        assert_eq!(kw(""), Keyword::None);
        assert_eq!(kw("dl is was is was is was is "), Keyword::None);
    }

    #[test]
    fn bank_context_window() {
        let t = b"bank: see account";
        assert!(bank_context_before(t, 11));
        let t = b"banker account";
        assert!(!bank_context_before(t, 7));
        let far = b"bank                                          account";
        assert!(!bank_context_before(far, far.len() - 7));
    }
}
