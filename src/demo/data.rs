//! Deterministic synthetic customer accounts for the demo database.
//!
//! Every value is fake but shaped like the real thing, so the gateway's
//! detectors and validators fire on it:
//!
//! - SSNs use areas 700–728 (railroad-retirement areas, valid per the SSA
//!   format rules but not issued since 1963), groups 01–99, serials 0001–9999.
//! - Card numbers start with public test BINs and carry a valid Luhn digit.
//! - Routing numbers have a Federal Reserve prefix 01–12 and a valid ABA
//!   checksum; EINs use real IRS campus prefixes.
//! - Phone numbers are in the fictional 555-0100..555-0199 block and e-mail
//!   addresses use the reserved `example.com` / `example.org` domains.
//!
//! The generator has its own small PRNG (splitmix64), seeded per account from
//! `(seed, index)`, so `generate(s, n)` is a prefix of `generate(s, n + k)` and
//! the same seed always yields the same bytes.

use serde_json::{Map, Value};

/// The seed the default demo uses.
pub const DEFAULT_SEED: u64 = 2016;

/// The number of accounts the default demo seeds.
pub const DEFAULT_COUNT: usize = 1200;

/// The number the first account id carries (`ACC-100001`).
pub const FIRST_ACCOUNT_NUMBER: u64 = 100_001;

/// Canonical order of an account's top-level fields, used whenever an account
/// is written out (see [`write_account`]), whatever order the JSON map keeps.
pub const FIELD_ORDER: &[&str] = &[
    "id",
    "account_type",
    "name",
    "service_address",
    "mailing_address",
    "phone",
    "email",
    "dob",
    "ssn",
    "tin",
    "drivers_license",
    "passport",
    "cards",
    "bank",
    "notes",
    "status",
    "service_start",
    "container_size",
    "pickup_day",
];

/// Generates `count` synthetic customer accounts from `seed`.
///
/// The result is fully determined by `(seed, count)`; account `i` depends
/// only on `(seed, i)`.
pub fn generate(seed: u64, count: usize) -> Vec<Value> {
    (0..count).map(|i| account(seed, i as u64)).collect()
}

/// Formats an account id from its number (`100001` → `ACC-100001`).
pub fn account_id(number: u64) -> String {
    format!("ACC-{number}")
}

/// Parses the number out of an account id (`ACC-100001` → `100001`).
pub fn account_number(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("ACC-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes `account` as compact JSON with its top-level fields in
/// [`FIELD_ORDER`] (fields not listed there follow in map order).
pub fn write_account(out: &mut Vec<u8>, account: &Value) -> serde_json::Result<()> {
    let Value::Object(map) = account else {
        return serde_json::to_writer(&mut *out, account);
    };
    out.push(b'{');
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, key: &str, value: &Value| -> serde_json::Result<()> {
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *out, key)?;
        out.push(b':');
        serde_json::to_writer(&mut *out, value)
    };
    for key in FIELD_ORDER {
        if let Some(value) = map.get(*key) {
            field(out, key, value)?;
        }
    }
    for (key, value) in map {
        if !FIELD_ORDER.contains(&key.as_str()) {
            field(out, key, value)?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// Returns the account as one line of compact JSON (no trailing newline), with
/// fields in [`FIELD_ORDER`].
pub fn account_to_string(account: &Value) -> String {
    let mut out = Vec::with_capacity(2048);
    if write_account(&mut out, account).is_err() {
        // Serializing a `Value` into a Vec cannot fail; fall back to serde_json.
        return account.to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| account.to_string())
}

/// True if `s` is an SSN from the synthetic range this demo uses: area
/// 700–728, group 01–99, serial 0001–9999, written `AAA-GG-SSSS` or as nine
/// digits.
pub fn is_synthetic_ssn(s: &str) -> bool {
    let b = s.as_bytes();
    let digits: Vec<u8> = match b.len() {
        11 if b[3] == b'-' && b[6] == b'-' => b
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 6)
            .map(|(_, d)| *d)
            .collect(),
        9 => b.to_vec(),
        _ => return false,
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let num = |range: std::ops::Range<usize>| {
        digits[range]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (area, group, serial) = (num(0..3), num(3..5), num(5..9));
    (700..=728).contains(&area) && group != 0 && serial != 0
}

/// True if `s` (digits, optionally separated by spaces or dashes) passes the
/// Luhn check and has 12–19 digits.
pub fn luhn_valid(s: &str) -> bool {
    let mut digits = Vec::with_capacity(19);
    for c in s.chars() {
        match c {
            '0'..='9' => digits.push(c as u8 - b'0'),
            ' ' | '-' => {}
            _ => return false,
        }
    }
    if !(12..=19).contains(&digits.len()) {
        return false;
    }
    luhn_sum(&digits, false) % 10 == 0
}

/// True if `s` is nine digits with a valid ABA routing checksum
/// (3·(d1+d4+d7) + 7·(d2+d5+d8) + (d3+d6+d9) ≡ 0 mod 10).
pub fn aba_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 9 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let d: Vec<u32> = b.iter().map(|c| u32::from(c - b'0')).collect();
    aba_weighted(&d) % 10 == 0
}

// ---------------------------------------------------------------------------
// PRNG

/// splitmix64: tiny, fast, good enough for synthetic data, and stable.
struct Rng(u64);

impl Rng {
    fn for_account(seed: u64, index: u64) -> Self {
        let mut r = Rng(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // Mix a couple of rounds so neighbouring indexes diverge at once.
        r.next_u64();
        r.next_u64();
        r
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn digit(&mut self) -> u8 {
        self.below(10) as u8
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.digit())).collect()
    }
}

// ---------------------------------------------------------------------------
// Word lists

const FIRST_NAMES: &[&str] = &[
    "Maria", "James", "Linh", "Robert", "Aisha", "David", "Mei", "Carlos", "Priya", "John",
    "Fatima", "Michael", "Sofia", "Wei", "Elena", "Daniel", "Keiko", "Ahmed", "Grace", "Thomas",
    "Olga", "Samuel", "Ana", "Hiroshi", "Nadia", "Patrick", "Lucia", "Arjun", "Emily", "Jorge",
    "Hannah", "Kwame", "Isabel", "Victor", "Ruth", "Minh", "Sarah", "Omar", "Leah", "Diego",
];

const LAST_NAMES: &[&str] = &[
    "Garcia",
    "Nguyen",
    "Smith",
    "Chen",
    "Patel",
    "Johnson",
    "Kim",
    "Martinez",
    "O'Brien",
    "Williams",
    "Tanaka",
    "Lopez",
    "Brown",
    "Singh",
    "Davis",
    "Rossi",
    "Okafor",
    "Miller",
    "Hernandez",
    "Wong",
    "Cohen",
    "Anderson",
    "Ivanova",
    "Silva",
    "Taylor",
    "Haddad",
    "Moore",
    "Yamamoto",
    "Clark",
    "Ramirez",
    "Lee",
    "Walker",
    "Novak",
    "Fischer",
    "Diaz",
    "Murphy",
    "Sato",
    "Young",
    "Khan",
    "Reyes",
];

const BUSINESS_PREFIXES: &[&str] = &[
    "Bayshore",
    "University Avenue",
    "Middlefield",
    "Evergreen",
    "Oak Creek",
    "Cal Ave",
    "Midtown",
    "Baylands",
    "Foothill",
    "Hamilton",
    "Alma Street",
    "Barron Park",
];

const BUSINESS_KINDS: &[&str] = &[
    "Bakery",
    "Dental Group",
    "Auto Care",
    "Cafe",
    "Hardware",
    "Cleaners",
    "Yoga Studio",
    "Books",
    "Veterinary Clinic",
    "Design Studio",
    "Bistro",
    "Florist",
    "Print Shop",
    "Pharmacy",
    "Montessori School",
];

const BUSINESS_SUFFIXES: &[&str] = &["LLC", "Inc.", "", "& Co.", ", LLP", "Partners"];

const STREETS: &[&str] = &[
    "University Ave",
    "Hamilton Ave",
    "Lytton Ave",
    "Middlefield Rd",
    "Embarcadero Rd",
    "Alma St",
    "Bryant St",
    "Waverley St",
    "Cowper St",
    "Webster St",
    "El Camino Real",
    "California Ave",
    "Channing Ave",
    "Homer Ave",
    "Louis Rd",
    "Greer Rd",
    "Colorado Ave",
    "Loma Verde Ave",
];

const ZIPS: &[&str] = &["94301", "94303", "94306"];

const DL_STATES: &[&str] = &[
    "CA", "CA", "CA", "CA", "CA", "CA", "CA", "NV", "OR", "WA", "AZ",
];

const EIN_PREFIXES: &[u32] = &[94, 77, 20, 26, 27, 68];

/// (BIN, total length): Visa 400000/411111, Mastercard 555555/222300,
/// Amex 378282/371449 — all public test ranges.
const CARD_BINS: &[(&str, usize)] = &[
    ("400000", 16),
    ("411111", 16),
    ("555555", 16),
    ("222300", 16),
    ("378282", 15),
    ("371449", 15),
];

const CONTAINER_SIZES: &[&str] = &["32 gal", "64 gal", "96 gal"];

const PICKUP_DAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"];

// ---------------------------------------------------------------------------
// Field generators

fn account(seed: u64, index: u64) -> Value {
    let mut r = Rng::for_account(seed, index);
    let residential = r.chance(80);

    let person_first = *r.pick(FIRST_NAMES);
    let person_last = *r.pick(LAST_NAMES);
    let person = format!("{person_first} {person_last}");
    let name = if residential {
        person.clone()
    } else {
        business_name(&mut r)
    };

    let service_address = address(&mut r);
    let mailing_address = if r.chance(75) {
        service_address.clone()
    } else if r.chance(50) {
        format!("PO Box {}, Palo Alto, CA 94302", r.range(10, 9999))
    } else {
        address(&mut r)
    };
    let phone = phone(&mut r);
    let email = if residential {
        let domain = if r.chance(70) {
            "example.com"
        } else {
            "example.org"
        };
        format!(
            "{}.{}{}@{domain}",
            slug(person_first),
            slug(person_last),
            r.range(1, 99)
        )
    } else {
        format!("ap.{}@example.org", slug(&name))
    };

    let mut m = Map::new();
    m.insert(
        "id".into(),
        Value::String(account_id(FIRST_ACCOUNT_NUMBER + index)),
    );
    m.insert(
        "account_type".into(),
        Value::String(
            if residential {
                "residential"
            } else {
                "commercial"
            }
            .into(),
        ),
    );
    m.insert("name".into(), Value::String(name.clone()));
    m.insert("service_address".into(), Value::String(service_address));
    m.insert("mailing_address".into(), Value::String(mailing_address));
    m.insert("phone".into(), Value::String(phone));
    m.insert("email".into(), Value::String(email));
    if residential {
        m.insert("dob".into(), Value::String(date(&mut r, 1930, 1998)));
    } else {
        m.insert("dob".into(), Value::Null);
    }
    let ssn = if residential {
        let ssn = ssn(&mut r);
        m.insert("ssn".into(), Value::String(ssn.clone()));
        ssn
    } else {
        // The owner's SSN: only ever appears in a note.
        m.insert("tin".into(), Value::String(ein(&mut r)));
        ssn(&mut r)
    };

    let mut dl = Map::new();
    dl.insert(
        "number".into(),
        Value::String(format!(
            "{}{}",
            char::from(b'A' + r.below(26) as u8),
            r.digits(7)
        )),
    );
    dl.insert("state".into(), Value::String((*r.pick(DL_STATES)).into()));
    m.insert("drivers_license".into(), Value::Object(dl));

    if r.chance(20) {
        m.insert(
            "passport".into(),
            Value::String(format!("{}{}", r.range(1, 9), r.digits(8))),
        );
    }

    let card_count = match r.below(10) {
        0..=2 => 0,
        3..=7 => 1,
        _ => 2,
    };
    let cardholder = if residential {
        person.clone()
    } else {
        name.clone()
    };
    let mut cards = Vec::new();
    let mut first_card_digits = None;
    for _ in 0..card_count {
        let digits = card_digits(&mut r);
        let shown = if r.chance(50) {
            digits.clone()
        } else {
            group_card(&digits)
        };
        first_card_digits.get_or_insert(digits);
        let mut card = Map::new();
        card.insert("card_number".into(), Value::String(shown));
        card.insert(
            "card_expiry".into(),
            Value::String(format!("{:02}/{:02}", r.range(1, 12), r.range(17, 22))),
        );
        card.insert("cardholder".into(), Value::String(cardholder.clone()));
        cards.push(Value::Object(card));
    }
    m.insert("cards".into(), Value::Array(cards));

    let mut bank = Map::new();
    bank.insert("routing_number".into(), Value::String(routing(&mut r)));
    let acct_len = r.range(8, 12) as usize;
    bank.insert(
        "account_number".into(),
        Value::String(format!("{}{}", r.range(1, 9), r.digits(acct_len - 1))),
    );
    m.insert("bank".into(), Value::Object(bank));

    m.insert(
        "notes".into(),
        Value::String(note(&mut r, &ssn, first_card_digits.as_deref())),
    );

    let status = match r.below(100) {
        0..=84 => "active",
        85..=94 => "closed",
        _ => "pending",
    };
    m.insert("status".into(), Value::String(status.into()));
    m.insert(
        "service_start".into(),
        Value::String(date(&mut r, 1990, 2016)),
    );
    m.insert(
        "container_size".into(),
        Value::String((*r.pick(CONTAINER_SIZES)).into()),
    );
    m.insert(
        "pickup_day".into(),
        Value::String((*r.pick(PICKUP_DAYS)).into()),
    );
    Value::Object(m)
}

fn business_name(r: &mut Rng) -> String {
    let prefix = r.pick(BUSINESS_PREFIXES);
    let kind = r.pick(BUSINESS_KINDS);
    match *r.pick(BUSINESS_SUFFIXES) {
        "" => format!("{prefix} {kind}"),
        s if s.starts_with(',') => format!("{prefix} {kind}{s}"),
        s => format!("{prefix} {kind} {s}"),
    }
}

fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if c == ' ' && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn address(r: &mut Rng) -> String {
    let number = r.range(100, 4199);
    let street = r.pick(STREETS);
    let zip = r.pick(ZIPS);
    if r.chance(15) {
        format!(
            "{number} {street} Apt {}, Palo Alto, CA {zip}",
            r.range(1, 40)
        )
    } else {
        format!("{number} {street}, Palo Alto, CA {zip}")
    }
}

fn phone(r: &mut Rng) -> String {
    let area = r.pick(&[650, 650, 650, 408, 415]);
    format!("({area}) 555-01{:02}", r.below(100))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn date(r: &mut Rng, from_year: u64, to_year: u64) -> String {
    let year = r.range(from_year, to_year);
    let month = r.range(1, 12);
    let day = r.range(1, days_in_month(year, month));
    format!("{year:04}-{month:02}-{day:02}")
}

fn ssn(r: &mut Rng) -> String {
    format!(
        "{:03}-{:02}-{:04}",
        r.range(700, 728),
        r.range(1, 99),
        r.range(1, 9999)
    )
}

fn ein(r: &mut Rng) -> String {
    format!("{:02}-{}", r.pick(EIN_PREFIXES), r.digits(7))
}

fn luhn_sum(digits: &[u8], payload_only: bool) -> u32 {
    // With `payload_only`, `digits` lacks its check digit, so the rightmost
    // digit is the one doubled.
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let double = if payload_only { i % 2 == 0 } else { i % 2 == 1 };
            let d = u32::from(d);
            if double {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum()
}

fn card_digits(r: &mut Rng) -> String {
    let (bin, len) = *r.pick(CARD_BINS);
    let mut digits: Vec<u8> = bin.bytes().map(|b| b - b'0').collect();
    while digits.len() < len - 1 {
        digits.push(r.digit());
    }
    let check = (10 - luhn_sum(&digits, true) % 10) % 10;
    digits.push(check as u8);
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

/// 16 digits → `4-4-4-4`, 15 (Amex) → `4-6-5`, separated by spaces.
fn group_card(digits: &str) -> String {
    let groups: &[usize] = if digits.len() == 15 {
        &[4, 6, 5]
    } else {
        &[4, 4, 4, 4]
    };
    let mut out = String::with_capacity(digits.len() + 4);
    let mut at = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&digits[at..at + g]);
        at += g;
    }
    out
}

fn aba_weighted(d: &[u32]) -> u32 {
    let w = [3, 7, 1];
    d.iter().enumerate().map(|(i, x)| x * w[i % 3]).sum()
}

fn routing(r: &mut Rng) -> String {
    let prefix = r.range(1, 12);
    let mut d: Vec<u32> = vec![(prefix / 10) as u32, (prefix % 10) as u32];
    while d.len() < 8 {
        d.push(u32::from(r.digit()));
    }
    let check = (10 - aba_weighted(&d) % 10) % 10;
    d.push(check);
    d.iter().map(|x| char::from(b'0' + *x as u8)).collect()
}

fn note(r: &mut Rng, ssn: &str, card: Option<&str>) -> String {
    let roll = r.below(100);
    if roll < 15 {
        let compact: String = ssn.chars().filter(char::is_ascii_digit).collect();
        return match r.below(4) {
            0 => format!("Identity verified by phone; SSN {ssn} confirmed"),
            1 => format!("Deposit waived, ssn on file {compact}"),
            2 => format!("SSN {ssn} given for credit check {}", date(r, 2014, 2016)),
            _ => format!("Collections referral prepared; ssn on file {compact}"),
        };
    }
    if roll < 25 {
        let digits = match card {
            Some(c) if c.len() == 16 => c.to_string(),
            _ => {
                // A fresh Visa test number.
                let mut d: Vec<u8> = b"400000".iter().map(|b| b - b'0').collect();
                while d.len() < 15 {
                    d.push(r.digit());
                }
                let check = (10 - luhn_sum(&d, true) % 10) % 10;
                d.push(check as u8);
                d.iter().map(|x| char::from(b'0' + x)).collect()
            }
        };
        let shown = group_card(&digits);
        return match r.below(3) {
            0 => format!("Past-due balance paid by card {shown}"),
            1 => format!("Customer paid by card {shown} on {}", date(r, 2015, 2016)),
            _ => format!("Deposit paid by card {}", digits),
        };
    }
    let when = date(r, 2014, 2016);
    let call = phone(r);
    match r.below(12) {
        0 => format!("Meter reread requested {when}; call {call}"),
        1 => format!("Paperless billing enrolled {when}"),
        2 => "Prefers contact by email".to_string(),
        3 => "Tenant occupied; landlord mailing address on file".to_string(),
        4 => format!("Green waste cart swap requested {when}"),
        5 => format!("Budget billing plan since {when}"),
        6 => format!("Payment arrangement through {when}"),
        7 => String::new(),
        8 => format!("Medical baseline allowance approved {when}"),
        9 => format!("Gate code on file; dog in yard \u{2014} call {call} before meter read"),
        10 => format!("Solar net metering interconnection {when}"),
        _ => format!("High bill complaint {when}, leak found, adjustment \"pending\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Value> {
        generate(DEFAULT_SEED, DEFAULT_COUNT)
    }

    fn ser(accounts: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for a in accounts {
            write_account(&mut out, a).unwrap();
            out.push(b'\n');
        }
        out
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} not a string in {v}"))
    }

    #[test]
    fn deterministic_and_seed_sensitive() {
        let a = ser(&generate(2016, 300));
        let b = ser(&generate(2016, 300));
        assert_eq!(a, b);
        let c = ser(&generate(2017, 300));
        assert_ne!(a, c);
        // Prefix stability: account i depends only on (seed, i).
        let long = generate(2016, 310);
        assert_eq!(ser(&long[..300]), a);
    }

    #[test]
    fn default_set_has_both_types_and_unique_ids() {
        let accounts = all();
        assert!(accounts.len() >= 1000);
        let residential = accounts
            .iter()
            .filter(|a| a["account_type"] == "residential")
            .count();
        let commercial = accounts
            .iter()
            .filter(|a| a["account_type"] == "commercial")
            .count();
        assert_eq!(residential + commercial, accounts.len());
        let share = residential as f64 / accounts.len() as f64;
        assert!((0.74..0.86).contains(&share), "residential share {share}");
        let ids: std::collections::BTreeSet<&str> = accounts.iter().map(|a| s(a, "id")).collect();
        assert_eq!(ids.len(), accounts.len());
        assert_eq!(s(&accounts[0], "id"), "ACC-100001");
        assert_eq!(s(&accounts[1199], "id"), "ACC-101200");
    }

    #[test]
    fn field_order_on_the_wire() {
        let a = &generate(1, 1)[0];
        let line = account_to_string(a);
        assert!(
            line.starts_with("{\"id\":\"ACC-100001\",\"account_type\":"),
            "{line}"
        );
        assert!(line.ends_with('}'));
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(&back, a);
        let mut last = 0;
        for key in FIELD_ORDER {
            if let Some(pos) = line.find(&format!("\"{key}\":")) {
                assert!(pos >= last, "{key} out of order");
                last = pos;
            }
        }
    }

    #[test]
    fn residential_and_commercial_shapes() {
        for a in all() {
            let residential = a["account_type"] == "residential";
            if residential {
                let ssn = s(&a, "ssn");
                assert!(is_synthetic_ssn(ssn), "{ssn}");
                assert_eq!(ssn.len(), 11);
                assert!(a.get("tin").is_none());
                let dob = s(&a, "dob");
                assert_eq!(dob.len(), 10);
                assert_eq!(&dob[4..5], "-");
            } else {
                assert!(a.get("ssn").is_none());
                assert!(a["dob"].is_null());
                let tin = s(&a, "tin");
                assert_eq!(tin.len(), 10);
                assert_eq!(&tin[2..3], "-");
                let prefix: u32 = tin[..2].parse().unwrap();
                assert!(EIN_PREFIXES.contains(&prefix));
                assert!(tin[3..].bytes().all(|b| b.is_ascii_digit()));
            }
            let dl = &a["drivers_license"];
            let num = dl["number"].as_str().unwrap();
            assert_eq!(num.len(), 8);
            assert!(num.as_bytes()[0].is_ascii_uppercase());
            assert!(num[1..].bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(dl["state"].as_str().unwrap().len(), 2);
            if let Some(p) = a.get("passport") {
                let p = p.as_str().unwrap();
                assert_eq!(p.len(), 9);
                assert!(p.bytes().all(|b| b.is_ascii_digit()));
            }
            let phone = s(&a, "phone");
            assert!(phone.contains(") 555-01"), "{phone}");
            let email = s(&a, "email");
            assert!(
                email.ends_with("@example.com") || email.ends_with("@example.org"),
                "{email}"
            );
            assert!(s(&a, "service_address").contains(", Palo Alto, CA 943"));
            assert!(["active", "closed", "pending"].contains(&s(&a, "status")));
            assert!(CONTAINER_SIZES.contains(&s(&a, "container_size")));
            assert!(PICKUP_DAYS.contains(&s(&a, "pickup_day")));
        }
    }

    #[test]
    fn ssns_are_ssa_valid_and_synthetic() {
        assert!(is_synthetic_ssn("700-01-0001"));
        assert!(is_synthetic_ssn("728999999"));
        assert!(!is_synthetic_ssn("729-01-0001"));
        assert!(!is_synthetic_ssn("699-01-0001"));
        assert!(!is_synthetic_ssn("712-00-1234"));
        assert!(!is_synthetic_ssn("712-34-0000"));
        assert!(!is_synthetic_ssn("123-45-6789"));
        assert!(!is_synthetic_ssn("712-34-567"));
        assert!(!is_synthetic_ssn("712 34 5678"));
        assert!(!is_synthetic_ssn("71a-34-5678"));
        let mut areas = std::collections::BTreeSet::new();
        for a in all() {
            if let Some(ssn) = a.get("ssn").and_then(Value::as_str) {
                let area: u32 = ssn[..3].parse().unwrap();
                // SSA rules: never 000, 666 or 900–999; group and serial nonzero.
                assert!(area != 0 && area != 666 && area < 900);
                assert_ne!(&ssn[4..6], "00");
                assert_ne!(&ssn[7..], "0000");
                assert!(is_synthetic_ssn(ssn));
                areas.insert(area);
            }
        }
        assert!(areas.len() > 20, "areas should spread over 700–728");
    }

    #[test]
    fn cards_are_luhn_valid_test_bins() {
        assert!(luhn_valid("4111 1111 1111 1111"));
        assert!(luhn_valid("378282246310005"));
        assert!(!luhn_valid("4111 1111 1111 1112"));
        let mut total = 0;
        let mut grouped = 0;
        let mut amex = 0;
        for a in all() {
            let cards = a["cards"].as_array().unwrap();
            assert!(cards.len() <= 2);
            for c in cards {
                total += 1;
                let n = c["card_number"].as_str().unwrap();
                assert!(luhn_valid(n), "{n}");
                let digits: String = n.chars().filter(char::is_ascii_digit).collect();
                assert!(CARD_BINS
                    .iter()
                    .any(|(bin, len)| digits.starts_with(bin) && digits.len() == *len));
                if n.contains(' ') {
                    grouped += 1;
                }
                if digits.len() == 15 {
                    amex += 1;
                }
                let exp = c["card_expiry"].as_str().unwrap();
                assert_eq!(exp.len(), 5);
                let month: u32 = exp[..2].parse().unwrap();
                assert!((1..=12).contains(&month));
                assert_eq!(&exp[2..3], "/");
                assert!(!c["cardholder"].as_str().unwrap().is_empty());
            }
        }
        assert!(total > 800, "{total} cards");
        assert!(grouped > 100 && grouped < total - 100);
        assert!(amex > 50);
    }

    #[test]
    fn routing_numbers_have_valid_checksums() {
        assert!(aba_valid("011000015"));
        assert!(!aba_valid("011000016"));
        for a in all() {
            let routing = a["bank"]["routing_number"].as_str().unwrap();
            assert!(aba_valid(routing), "{routing}");
            let prefix: u32 = routing[..2].parse().unwrap();
            assert!((1..=12).contains(&prefix));
            let acct = a["bank"]["account_number"].as_str().unwrap();
            assert!((8..=12).contains(&acct.len()));
            assert!(acct.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn notes_carry_some_ssns_and_cards() {
        let accounts = all();
        let n = accounts.len() as f64;
        let mut ssn_notes = 0;
        let mut card_notes = 0;
        for a in &accounts {
            let note = s(a, "notes");
            let lower = note.to_ascii_lowercase();
            if let Some(at) = lower.find("ssn ") {
                ssn_notes += 1;
                let rest = &note[at + 4..];
                let rest = rest.strip_prefix("on file ").unwrap_or(rest);
                let token: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '-')
                    .collect();
                assert!(is_synthetic_ssn(&token), "{note}");
            }
            if let Some(at) = note.find("by card ") {
                card_notes += 1;
                let token: String = note[at + 8..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == ' ')
                    .collect();
                let token = token.trim();
                assert!(luhn_valid(token), "{note}");
            }
        }
        let ssn_share = ssn_notes as f64 / n;
        let card_share = card_notes as f64 / n;
        assert!((0.10..0.20).contains(&ssn_share), "ssn notes {ssn_share}");
        assert!(
            (0.06..0.14).contains(&card_share),
            "card notes {card_share}"
        );
    }

    #[test]
    fn dates_are_real_dates() {
        for a in all() {
            for key in ["dob", "service_start"] {
                if let Some(d) = a[key].as_str() {
                    let y: u64 = d[..4].parse().unwrap();
                    let m: u64 = d[5..7].parse().unwrap();
                    let day: u64 = d[8..].parse().unwrap();
                    assert!((1..=12).contains(&m));
                    assert!(day >= 1 && day <= days_in_month(y, m), "{d}");
                }
            }
        }
    }

    #[test]
    fn account_ids_parse() {
        assert_eq!(account_number("ACC-100001"), Some(100_001));
        assert_eq!(account_number("ACC-"), None);
        assert_eq!(account_number("ACC-12x"), None);
        assert_eq!(account_number("XYZ-1"), None);
        assert_eq!(account_id(100_002), "ACC-100002");
    }
}
