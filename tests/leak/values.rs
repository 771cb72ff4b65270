//! Synthetic values for the leak corpus: red-flag values that pass the real
//! validators, and benign look-alikes that must not be taken for them. All
//! drawn from a small deterministic PRNG, so the corpus is the same on every
//! machine and every run.

/// SplitMix64: tiny, fast, and good enough to vary a test corpus.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// `n` random ASCII digits.
    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

/// The class of a planted value, as the report names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Ssn,
    Itin,
    Ein,
    Card,
    Expiry,
    Routing,
    BankAccount,
    Dln,
    Passport,
    /// A red-flag container left behind (allowlist roles): its shape leaks.
    Shape,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Ssn => "ssn",
            Class::Itin => "itin",
            Class::Ein => "ein",
            Class::Card => "card",
            Class::Expiry => "expiry",
            Class::Routing => "routing",
            Class::BankAccount => "bank_account",
            Class::Dln => "dln",
            Class::Passport => "passport",
            Class::Shape => "shape",
        }
    }
}

/// A valid SSN's three parts (SSA rules since the 2011 randomization).
pub fn ssn_parts(rng: &mut Rng) -> (String, String, String) {
    loop {
        let area = rng.range(1, 899);
        let group = rng.range(1, 99);
        let serial = rng.range(1, 9999);
        if area == 666
            || (area, group, serial) == (78, 5, 1120)
            || (area, group, serial) == (219, 9, 9999)
        {
            continue;
        }
        return (
            format!("{area:03}"),
            format!("{group:02}"),
            format!("{serial:04}"),
        );
    }
}

/// A valid ITIN's three parts (9XX, IRS group ranges).
pub fn itin_parts(rng: &mut Rng) -> (String, String, String) {
    let groups: Vec<u64> = (50..=65)
        .chain(70..=88)
        .chain(90..=92)
        .chain(94..=99)
        .collect();
    loop {
        let area = rng.range(900, 999);
        let group = *rng.pick(&groups);
        let serial = rng.range(0, 9999);
        if area == 987 && group == 65 && (4320..=4329).contains(&serial) {
            continue;
        }
        return (
            format!("{area:03}"),
            format!("{group:02}"),
            format!("{serial:04}"),
        );
    }
}

/// A valid EIN, `NN-NNNNNNN`.
pub fn ein(rng: &mut Rng) -> String {
    const PREFIXES: [u64; 12] = [1, 4, 10, 12, 20, 27, 36, 45, 52, 68, 77, 94];
    format!("{:02}-{}", rng.pick(&PREFIXES), rng.digits(7))
}

fn luhn_check_digit(body: &str) -> char {
    // The check digit makes the whole number pass: double every second
    // digit counting from the right of the full number.
    let mut sum = 0;
    for (i, c) in body.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

pub fn luhn_ok(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// Issuing networks: prefix and length. The first six are the networks
/// every detector knows; the rest come from a broad IIN table.
pub const NETWORKS: [(&str, usize); 16] = [
    ("4", 16),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("37", 15),
    ("6011", 16),
    ("4", 13),
    ("4", 19),
    ("3530", 16),
    ("36", 14),
    ("62", 17),
    ("65", 16),
    ("2200", 16),
    ("6759", 16),
    ("9792", 16),
    ("5061", 19),
];

/// A Luhn-valid card number of network `net` (index into [`NETWORKS`]).
pub fn card_of(rng: &mut Rng, net: usize) -> String {
    let (prefix, len) = NETWORKS[net];
    let mut body = prefix.to_owned();
    body.push_str(&rng.digits(len - prefix.len() - 1));
    let check = luhn_check_digit(&body);
    body.push(check);
    body
}

/// A card of one of the big networks.
pub fn card(rng: &mut Rng) -> String {
    let net = rng.below(6) as usize;
    card_of(rng, net)
}

/// A 16-digit run starting like a Visa that fails the Luhn check.
pub fn luhn_invalid(rng: &mut Rng) -> String {
    let mut good = card_of(rng, 0);
    let last = good.pop().map_or(0, |c| c as u8 - b'0');
    good.push(char::from(b'0' + (last + 1 + rng.below(8) as u8) % 10));
    good
}

/// Card groups: 4-4-4-4 (or 4-6-5 for 15 digits) joined by `sep`.
pub fn grouped(card: &str, sep: &str) -> String {
    let sizes: &[usize] = match card.len() {
        15 => &[4, 6, 5],
        14 => &[4, 6, 4],
        13 => &[4, 4, 5],
        16 => &[4, 4, 4, 4],
        17 => &[4, 4, 4, 5],
        19 => &[4, 4, 4, 4, 3],
        _ => &[card.len()],
    };
    let mut parts = Vec::new();
    let mut at = 0;
    for &n in sizes {
        parts.push(&card[at..at + n]);
        at += n;
    }
    parts.join(sep)
}

/// A valid ABA routing number.
pub fn routing(rng: &mut Rng) -> String {
    const PREFIXES: [u64; 8] = [1, 2, 9, 11, 12, 21, 31, 61];
    loop {
        let mut d = format!("{:02}{}", rng.pick(&PREFIXES), rng.digits(6));
        let v: Vec<u32> = d.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum = 3 * (v[0] + v[3] + v[6]) + 7 * (v[1] + v[4] + v[7]) + (v[2] + v[5]);
        let check = (10 - sum % 10) % 10;
        d.push(char::from(b'0' + check as u8));
        if d.len() == 9 {
            return d;
        }
    }
}

/// A bank account number: 8 to 12 digits, not starting with 0.
pub fn bank_account(rng: &mut Rng) -> String {
    let n = rng.range(8, 12) as usize;
    format!("{}{}", rng.range(1, 9), rng.digits(n - 1))
}

/// A driver's license number: one letter and 7 digits (California style)
/// or 9 digits.
pub fn dln(rng: &mut Rng) -> String {
    if rng.chance(70) {
        format!("{}{}", rng.pick(&['D', 'B', 'F', 'N', 'Y']), rng.digits(7))
    } else {
        format!("{}{}", rng.range(1, 9), rng.digits(8))
    }
}

/// A passport number: 9 digits or a letter and 8 digits.
pub fn passport(rng: &mut Rng) -> String {
    if rng.chance(50) {
        format!("{}{}", rng.range(1, 9), rng.digits(8))
    } else {
        format!("{}{}", rng.pick(&['C', 'E', 'A']), rng.digits(8))
    }
}

/// A card expiry `MM/YY`.
pub fn expiry(rng: &mut Rng) -> String {
    format!("{:02}/{}", rng.range(1, 12), rng.range(26, 33))
}

// ---- benign look-alikes ----------------------------------------------

pub fn phone(rng: &mut Rng) -> String {
    let (a, b, c) = (
        rng.pick(&["650", "408", "415", "510"]).to_string(),
        format!("{}", rng.range(200, 989)),
        rng.digits(4),
    );
    match rng.below(4) {
        0 => format!("({a}) {b}-{c}"),
        1 => format!("{a}-{b}-{c}"),
        2 => format!("+1 {a} {b} {c}"),
        _ => format!("{a}.{b}.{c}"),
    }
}

pub fn zip4(rng: &mut Rng) -> String {
    format!("9{}-{}", rng.digits(4), rng.digits(4))
}

pub fn date(rng: &mut Rng) -> String {
    let (y, m, d) = (rng.range(2019, 2027), rng.range(1, 12), rng.range(1, 28));
    if rng.chance(50) {
        format!("{y}-{m:02}-{d:02}")
    } else {
        format!("{m:02}/{d:02}/{y}")
    }
}

pub fn timestamp(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            rng.range(1, 12),
            rng.range(1, 28),
            rng.range(0, 23),
            rng.range(0, 59),
            rng.range(0, 59)
        ),
        1 => format!("17{}", rng.digits(8)),
        _ => format!("17{}", rng.digits(11)),
    }
}

pub fn uuid(rng: &mut Rng) -> String {
    let h = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub fn order_id(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => format!("ORD-2026-{}", rng.digits(6)),
        1 => format!("INV{}", rng.digits(7)),
        _ => format!("SO-{}-{}", rng.digits(4), rng.digits(5)),
    }
}

/// Nine digits in SSN shape that no SSN can have: area 000, 666 or 9XX
/// (with a group outside the ITIN ranges), group 00 or serial 0000.
pub fn invalid_ssn(rng: &mut Rng) -> String {
    let (area, group, serial) = match rng.below(5) {
        0 => (
            "000".to_owned(),
            format!("{:02}", rng.range(1, 99)),
            rng.digits(4),
        ),
        1 => (
            "666".to_owned(),
            format!("{:02}", rng.range(1, 99)),
            rng.digits(4),
        ),
        2 => (
            format!("9{:02}", rng.range(0, 99)),
            format!("{:02}", rng.range(10, 49)),
            rng.digits(4),
        ),
        3 => (
            format!("{}", rng.range(100, 665)),
            "00".to_owned(),
            rng.digits(4),
        ),
        _ => (
            format!("{}", rng.range(100, 665)),
            format!("{:02}", rng.range(1, 99)),
            "0000".to_owned(),
        ),
    };
    if rng.chance(50) {
        format!("{area}-{group}-{serial}")
    } else {
        format!("{area} {group} {serial}")
    }
}

/// A customer's own utility account id (the demo's ids are 7 digits).
pub fn utility_id(rng: &mut Rng) -> String {
    format!("100{}", rng.digits(4))
}

pub fn name(rng: &mut Rng) -> String {
    format!(
        "{} {}",
        rng.pick(&["Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro"]),
        rng.pick(&["Lopez", "Nguyen", "Okafor", "Smith", "Tanaka", "Weber", "Young"])
    )
}

pub fn street(rng: &mut Rng) -> String {
    format!(
        "{} {} St",
        rng.range(10, 4999),
        rng.pick(&["Alma", "Bryant", "Cowper", "Emerson", "Hamilton", "Waverley"])
    )
}

/// A benign value of some look-alike kind, with a field name that says so.
pub fn benign_pair(rng: &mut Rng) -> (&'static str, String) {
    match rng.below(10) {
        0 => ("phone", phone(rng)),
        1 => ("zip", zip4(rng)),
        2 => ("created_at", timestamp(rng)),
        3 => ("order_ref", order_id(rng)),
        4 => ("request_uuid", uuid(rng)),
        5 => ("reference_code", invalid_ssn(rng)),
        6 => (
            "meter_reading_kwh",
            format!("{} kWh", rng.range(100, 99999)),
        ),
        7 => (
            "last_payment",
            format!("${}.{:02}", rng.range(1, 999), rng.range(0, 99)),
        ),
        8 => ("promo_code", format!("PROMO{}", rng.digits(4))),
        _ => ("service_date", date(rng)),
    }
}

/// Unicode digit forms: full-width, Arabic-Indic, Devanagari, mathematical bold.
pub fn unicode_digits(s: &str, form: usize) -> String {
    let zero: u32 = match form % 4 {
        0 => 0xFF10,
        1 => 0x0660,
        2 => 0x0966,
        _ => 0x1D7CE,
    };
    s.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_u32(zero + d).unwrap_or(c),
            None => c,
        })
        .collect()
}

/// `s` as the inside of a JSON string with every digit `\u`-escaped.
pub fn u_escaped_digits(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                format!("\\u{:04x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The ASCII digits of `s`.
pub fn digits_only(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}
