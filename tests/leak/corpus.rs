//! The leak corpus of issue #14: bodies written the way real systems write
//! them, each with the red-flag values planted in it (so a leak can be named
//! exactly) and a benign twin of the same shape whose look-alike values must
//! come through unchanged.
//!
//! Deterministic: everything is drawn from [`SEED`]. Each case draws its
//! structure (field layout, format, encoding, status) from one generator
//! and its values from another, so the red body and its benign twin share
//! their structure and differ only in the values and in the names that
//! announce red-flag values.

use std::io::Write;

use super::values::{self as v, Class, Rng};

/// The corpus seed.
pub const SEED: u64 = 0x6d61_736b_6761_7465;

/// Cases per family (each case is a red body and its benign twin).
pub const CASES_PER_FAMILY: usize = 190;

/// The families of issue #14.
pub const FAMILIES: [(u8, &str); 11] = [
    (1, "field names outside the list"),
    (2, "ambiguous names"),
    (3, "type/value shapes"),
    (4, "values in every format"),
    (5, "cards and bank data"),
    (6, "encoded payloads"),
    (7, "response headers"),
    (8, "every status"),
    (9, "media types"),
    (10, "compression"),
    (11, "allowlist roles"),
];

pub fn family_name(family: u8) -> &'static str {
    FAMILIES
        .iter()
        .find(|(f, _)| *f == family)
        .map_or("?", |(_, n)| n)
}

/// How a body is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    Csv,
    Text,
}

/// A content coding applied to a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enc {
    Identity,
    Gzip(u32),
    XGzip,
    Zlib(u32),
    RawDeflate(u32),
    Br(u32),
}

impl Enc {
    pub fn header(self) -> Option<&'static str> {
        match self {
            Enc::Identity => None,
            Enc::Gzip(_) => Some("gzip"),
            Enc::XGzip => Some("x-gzip"),
            Enc::Zlib(_) | Enc::RawDeflate(_) => Some("deflate"),
            Enc::Br(_) => Some("br"),
        }
    }

    pub fn label(self) -> String {
        match self {
            Enc::Identity => "identity".into(),
            Enc::Gzip(l) => format!("gzip-{l}"),
            Enc::XGzip => "x-gzip".into(),
            Enc::Zlib(l) => format!("zlib-{l}"),
            Enc::RawDeflate(l) => format!("raw-deflate-{l}"),
            Enc::Br(q) => format!("br-{q}"),
        }
    }
}

/// A red-flag value planted in a body or a header.
#[derive(Clone, Debug)]
pub struct Planted {
    pub class: Class,
    /// The field, column, label or header that carries it.
    pub field: String,
    /// Every spelling that would count as the value in clear.
    pub spellings: Vec<String>,
}

/// One corpus body as the upstream sends it.
#[derive(Clone, Debug)]
pub struct Body {
    pub family: u8,
    pub case: usize,
    pub benign: bool,
    /// The client certificate (and so the role) that fetches it.
    pub principal: &'static str,
    pub status: u16,
    pub content_type: String,
    pub format: Format,
    pub encoding: Enc,
    /// Extra response headers the upstream sends.
    pub headers: Vec<(String, String)>,
    /// The body before its content coding.
    pub plain: Vec<u8>,
    /// The body as sent (after its content coding).
    pub wire: Vec<u8>,
    pub planted: Vec<Planted>,
    /// Object keys that must not reach the caller (containers an
    /// allowlist emptied).
    pub forbidden_keys: Vec<String>,
    /// Offsets in `wire` at which planted values start and end (empty for
    /// coded bodies, whose planted bytes have no fixed place).
    pub anchors: Vec<(usize, usize)>,
}

impl Body {
    pub fn describe(&self) -> String {
        format!(
            "family {} ({}) case {} {} [{} {:?} {} status {}]",
            self.family,
            family_name(self.family),
            self.case,
            if self.benign { "benign" } else { "red" },
            self.content_type,
            self.format,
            self.encoding.label(),
            self.status
        )
    }
}

/// One field's value: how it reads in JSON (a complete JSON value) and in
/// CSV or text.
#[derive(Clone, Debug)]
struct Cell {
    json: String,
    text: String,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn str_cell(s: &str) -> Cell {
    Cell {
        json: json_str(s),
        text: s.to_owned(),
    }
}

#[derive(Clone, Debug)]
struct Field {
    name: String,
    cell: Cell,
}

type Record = Vec<Field>;

/// What one twin of a case holds before it is written out.
#[derive(Default)]
struct Draft {
    records: Vec<Record>,
    planted: Vec<Planted>,
    headers: Vec<(String, String)>,
    forbidden_keys: Vec<String>,
}

impl Draft {
    fn plant(&mut self, class: Class, field: &str, canonical: &str, spellings: &[&str]) {
        let mut all: Vec<String> = spellings.iter().map(|s| (*s).to_owned()).collect();
        all.push(canonical.to_owned());
        let digits = v::digits_only(canonical);
        if digits.len() >= 8 {
            all.push(digits);
        }
        all.sort();
        all.dedup();
        all.retain(|s| !s.is_empty());
        self.planted.push(Planted {
            class,
            field: field.to_owned(),
            spellings: all,
        });
    }
}

/// The allowlist-safe fields every record starts with (the non-utilities
/// role may see all of them).
fn base_fields(val: &mut Rng, with_address: bool) -> Record {
    let mut r = vec![
        Field {
            name: "id".into(),
            cell: str_cell(&v::utility_id(val)),
        },
        Field {
            name: "name".into(),
            cell: str_cell(&v::name(val)),
        },
        Field {
            name: "account_type".into(),
            cell: str_cell("residential"),
        },
        Field {
            name: "status".into(),
            cell: str_cell("active"),
        },
        Field {
            name: "phone".into(),
            cell: str_cell(&v::phone(val)),
        },
        Field {
            name: "service_start".into(),
            cell: str_cell(&v::date(val)),
        },
    ];
    if with_address {
        let street = v::street(val);
        let zip = v::zip4(val);
        r.push(Field {
            name: "service_address".into(),
            cell: Cell {
                json: format!(
                    "{{\"street\":{},\"city\":\"Palo Alto\",\"state\":\"CA\",\"zip\":{}}}",
                    json_str(&street),
                    json_str(&zip)
                ),
                text: format!("{street}, Palo Alto CA {zip}"),
            },
        });
    }
    r
}

/// A benign field of a look-alike kind.
fn benign_field(val: &mut Rng) -> Field {
    let (name, value) = v::benign_pair(val);
    Field {
        name: name.into(),
        cell: str_cell(&value),
    }
}

/// A red-flag value in its canonical form, and the spelled forms it is
/// written in here.
struct Red {
    class: Class,
    canonical: String,
    written: String,
}

fn red_value(class: Class, val: &mut Rng) -> Red {
    let canonical = match class {
        Class::Ssn => {
            let (a, g, s) = v::ssn_parts(val);
            format!("{a}-{g}-{s}")
        }
        Class::Itin => {
            let (a, g, s) = v::itin_parts(val);
            format!("{a}-{g}-{s}")
        }
        Class::Ein => v::ein(val),
        Class::Card => v::card(val),
        Class::Expiry => v::expiry(val),
        Class::Routing => v::routing(val),
        Class::BankAccount => v::bank_account(val),
        Class::Dln => v::dln(val),
        Class::Passport => v::passport(val),
        Class::Shape => String::new(),
    };
    Red {
        class,
        written: canonical.clone(),
        canonical,
    }
}

/// The benign counterpart of a red-flag value of `class`: same rough shape.
fn benign_value(class: Class, val: &mut Rng) -> String {
    match class {
        Class::Ssn | Class::Itin => v::invalid_ssn(val),
        Class::Ein => format!("00-{}", val.digits(7)),
        Class::Card => v::luhn_invalid(val),
        Class::Expiry => v::date(val),
        Class::Routing => v::zip4(val),
        Class::BankAccount | Class::Dln | Class::Passport => v::order_id(val),
        Class::Shape => String::new(),
    }
}

/// A field a red-flag value hides in, under `red_name`; its benign twin is a
/// look-alike under `benign_name`.
fn slot(
    d: &mut Draft,
    rec: &mut Record,
    red: bool,
    class: Class,
    red_name: &str,
    benign_name: &str,
    val: &mut Rng,
) {
    if red {
        let r = red_value(class, val);
        d.plant(r.class, red_name, &r.canonical, &[&r.written]);
        rec.push(Field {
            name: red_name.into(),
            cell: str_cell(&r.written),
        });
    } else {
        rec.push(Field {
            name: benign_name.into(),
            cell: str_cell(&benign_value(class, val)),
        });
    }
}

// ---- family 1: field names outside the list ------------------------------

const F1_NAMES: [(Class, &[&str]); 8] = [
    (
        Class::Ssn,
        &[
            "SSN",
            "ssn_no",
            "socialSecurityNumber",
            "primary_holder_ssn",
            "soc_sec_num",
            "holder_ssn_nbr",
            "Social Security No",
            "applicantSSN",
        ],
    ),
    (
        Class::Dln,
        &[
            "dl_no",
            "driversLicenceNumber",
            "driving_licence_no",
            "DLN",
            "driver_lic_num",
            "primaryDriversLicense",
            "Drivers License Nbr",
        ],
    ),
    (
        Class::Passport,
        &[
            "passport_no",
            "passportNbr",
            "holder_passport_num",
            "Passport Number",
        ],
    ),
    (
        Class::Card,
        &[
            "cc_num",
            "ccNumber",
            "card_no",
            "primary_card_pan",
            "PAN",
            "credit_card_nbr",
            "Card Num",
        ],
    ),
    (
        Class::Expiry,
        &[
            "cc_exp",
            "card_exp_date",
            "expiryDate",
            "exp",
            "cardExpiration",
        ],
    ),
    (
        Class::BankAccount,
        &[
            "checking_account_no",
            "savings_acct_num",
            "ach_account",
            "direct_deposit_account",
            "refund_account_number",
            "bank_acct_nbr",
            "checkingAcct",
            "Savings Account",
        ],
    ),
    (
        Class::Routing,
        &[
            "aba_no",
            "rtn",
            "routing_nbr",
            "bank_routing_num",
            "ABA Routing Number",
        ],
    ),
    (
        Class::Ein,
        &[
            "tin_no",
            "ein_num",
            "federal_tax_id_nbr",
            "taxpayerIdNumber",
            "fein",
        ],
    ),
];

const BENIGN_NAMES: [&str; 12] = [
    "order_no",
    "invoice_num",
    "meter_nbr",
    "ticket_no",
    "work_order_number",
    "confirmation_code",
    "promo_code",
    "rate_plan",
    "Premise Number",
    "crew_id",
    "route_code",
    "ref_no",
];

fn family1(st: &mut Rng, val: &mut Rng, red: bool, records: usize) -> Draft {
    let mut d = Draft::default();
    let picks: Vec<(Class, String, String)> = (0..st.range(1, 3))
        .map(|_| {
            let (class, names) = st.pick(&F1_NAMES);
            (
                *class,
                (*st.pick(names)).to_owned(),
                (*st.pick(&BENIGN_NAMES)).to_owned(),
            )
        })
        .collect();
    for _ in 0..records {
        let mut rec = base_fields(val, true);
        for (class, red_name, benign_name) in &picks {
            slot(&mut d, &mut rec, red, *class, red_name, benign_name, val);
        }
        rec.push(benign_field(val));
        d.records.push(rec);
    }
    d
}

// ---- family 2: ambiguous names -------------------------------------------

fn family2(st: &mut Rng, val: &mut Rng, red: bool, records: usize) -> Draft {
    const AMBIGUOUS: [&str; 8] = [
        "account_number",
        "acct_no",
        "account",
        "number",
        "accountNumber",
        "acct_num",
        "Account No",
        "customer_account_nbr",
    ];
    const OWN: [&str; 4] = ["premise_id", "meter_serial", "service_point", "order_ref"];
    let red_name = (*st.pick(&AMBIGUOUS)).to_owned();
    let benign_name = (*st.pick(&OWN)).to_owned();
    let nested = st.chance(30);
    let with_address = st.chance(50);
    let mut d = Draft::default();
    for _ in 0..records {
        let mut rec = base_fields(val, with_address);
        if red {
            let acct = v::bank_account(val);
            d.plant(Class::BankAccount, &red_name, &acct, &[]);
            if nested {
                rec.push(Field {
                    name: "payment_method".into(),
                    cell: Cell {
                        json: format!(
                            "{{\"kind\":\"bank\",{}:{}}}",
                            json_str(&red_name),
                            json_str(&acct)
                        ),
                        text: format!("bank account {acct}"),
                    },
                });
            } else {
                rec.push(Field {
                    name: red_name.clone(),
                    cell: str_cell(&acct),
                });
            }
        } else {
            let own = v::order_id(val);
            if nested {
                rec.push(Field {
                    name: "payment_method".into(),
                    cell: Cell {
                        json: format!(
                            "{{\"kind\":\"bank\",{}:{}}}",
                            json_str(&benign_name),
                            json_str(&own)
                        ),
                        text: format!("bank reference {own}"),
                    },
                });
            } else {
                rec.push(Field {
                    name: benign_name.clone(),
                    cell: str_cell(&own),
                });
            }
        }
        d.records.push(rec);
    }
    d
}

// ---- family 3: type/value shapes -----------------------------------------

fn family3(st: &mut Rng, val: &mut Rng, red: bool, records: usize) -> Draft {
    const SHAPES: [(&str, &str); 4] = [
        ("type", "value"),
        ("name", "value"),
        ("label", "number"),
        ("kind", "id"),
    ];
    const LABELS: [(Class, &[&str]); 6] = [
        (
            Class::Ssn,
            &["SSN", "ssn", "social_security_number", "Social Security"],
        ),
        (
            Class::Dln,
            &["DL", "drivers_license", "Driver's License", "dln"],
        ),
        (Class::Passport, &["passport", "PASSPORT", "Passport No"]),
        (Class::Itin, &["itin", "ITIN"]),
        (
            Class::BankAccount,
            &["checking", "Checking account", "savings_account", "ach"],
        ),
        (Class::Routing, &["routing", "ABA", "routing_number"]),
    ];
    const BENIGN_LABELS: [&str; 5] = ["phone", "order", "meter", "zip", "confirmation"];
    let (tk, vk) = *st.pick(&SHAPES);
    let n = st.range(1, 3) as usize;
    let kinds: Vec<(Class, String, String)> = (0..n)
        .map(|_| {
            let (c, labels) = st.pick(&LABELS);
            (
                *c,
                (*st.pick(labels)).to_owned(),
                (*st.pick(&BENIGN_LABELS)).to_owned(),
            )
        })
        .collect();
    let as_key = st.chance(25);
    let container = (*st.pick(&["identifiers", "documents", "ids", "verification"])).to_owned();
    let mut d = Draft::default();
    for _ in 0..records {
        let mut rec = base_fields(val, false);
        let mut items = Vec::new();
        for (class, label, benign_label) in &kinds {
            if red {
                let r = red_value(*class, val);
                d.plant(r.class, &format!("{container}[{label}]"), &r.canonical, &[]);
                items.push(format!(
                    "{{{}:{},{}:{}}}",
                    json_str(tk),
                    json_str(label),
                    json_str(vk),
                    json_str(&r.canonical)
                ));
            } else {
                let b = match benign_label.as_str() {
                    "phone" => v::phone(val),
                    "zip" => v::zip4(val),
                    _ => v::order_id(val),
                };
                items.push(format!(
                    "{{{}:{},{}:{}}}",
                    json_str(tk),
                    json_str(benign_label),
                    json_str(vk),
                    json_str(&b)
                ));
            }
        }
        rec.push(Field {
            name: container.clone(),
            cell: Cell {
                json: format!("[{}]", items.join(",")),
                text: String::new(),
            },
        });
        if as_key {
            let key = if red {
                let (a, g, s) = v::ssn_parts(val);
                let k = format!("{a}-{g}-{s}");
                d.plant(Class::Ssn, "key of lookups", &k, &[]);
                k
            } else {
                v::uuid(val)
            };
            rec.push(Field {
                name: "lookups".into(),
                cell: Cell {
                    json: format!("{{{}:{{\"status\":\"matched\"}}}}", json_str(&key)),
                    text: String::new(),
                },
            });
        }
        d.records.push(rec);
    }
    d
}

// ---- family 4: values in every format ------------------------------------

fn family4(st: &mut Rng, val: &mut Rng, red: bool, records: usize, format: Format) -> Draft {
    let form = st.below(14);
    let field =
        (*st.pick(&["notes", "memo", "comment", "description", "remarks", "ref"])).to_owned();
    let mut d = Draft::default();
    for _ in 0..records {
        let mut rec = base_fields(val, false);
        let (a, g, s) = if red {
            v::ssn_parts(val)
        } else {
            ("000".into(), "00".into(), "0000".into())
        };
        let benign_ssn = v::invalid_ssn(val);
        let (bd, bg, bs) = {
            let digits = v::digits_only(&benign_ssn);
            (
                digits[0..3].to_owned(),
                digits[3..5].to_owned(),
                digits[5..9].to_owned(),
            )
        };
        let canonical = format!("{a}-{g}-{s}");
        let (x, y, z) = if red {
            (a.clone(), g.clone(), s.clone())
        } else {
            (bd, bg, bs)
        };
        let (written, json_override): (String, Option<String>) = match form {
            0 => (format!("SSN {x}.{y}.{z}"), None),
            1 => (format!("ssn {x} {y} {z} on file"), None),
            2 => (format!("tax id {x}-{y}{z}"), None),
            3 => (format!("SSN#{x}{y}{z}"), None),
            4 => (format!("ssn:{x}-{y}-{z};verified"), None),
            5 => (format!("id={x}-{y}-{z}&ok"), None),
            6 => (
                format!("SSN {}", v::unicode_digits(&format!("{x}-{y}-{z}"), 0)),
                None,
            ),
            7 => (
                format!("SSN {}", v::unicode_digits(&format!("{x}-{y}-{z}"), 1)),
                None,
            ),
            8 => (
                format!("SSN {}", v::unicode_digits(&format!("{x}-{y}-{z}"), 2)),
                None,
            ),
            9 => (
                format!("SSN {}", v::unicode_digits(&format!("{x}{y}{z}"), 3)),
                None,
            ),
            10 if format == Format::Json || format == Format::Ndjson => {
                let s = format!("SSN {x}-{y}-{z}");
                let esc = format!("\"SSN {}\"", v::u_escaped_digits(&format!("{x}-{y}-{z}")));
                (s, Some(esc))
            }
            11 | 12 if format == Format::Json || format == Format::Ndjson => {
                // A card number as a JSON number, plain or in exponent form.
                let card = if red {
                    v::card_of(val, 0)
                } else {
                    v::luhn_invalid(val)
                };
                let json = if form == 11 {
                    card.clone()
                } else {
                    format!("{}.{}e{}", &card[..1], &card[1..], card.len() - 1)
                };
                let name = if red { "card" } else { "order_total_cents" };
                if red {
                    d.plant(Class::Card, name, &card, &[&json]);
                }
                rec.push(Field {
                    name: name.into(),
                    cell: Cell { json, text: card },
                });
                d.records.push(rec);
                continue;
            }
            _ => (format!("SSN {x}-{y}-{z}"), None),
        };
        if red {
            let mut spell = vec![written.clone()];
            if let Some(j) = &json_override {
                spell.push(j.trim_matches('"').to_owned());
            }
            for f in 0..4 {
                spell.push(v::unicode_digits(&canonical, f));
                spell.push(v::unicode_digits(&v::digits_only(&canonical), f));
            }
            let spell: Vec<&str> = spell.iter().map(String::as_str).collect();
            d.plant(Class::Ssn, &field, &canonical, &spell);
        }
        let cell = match json_override {
            Some(json) => Cell {
                json,
                text: written,
            },
            None => str_cell(&written),
        };
        rec.push(Field {
            name: field.clone(),
            cell,
        });
        d.records.push(rec);
    }
    d
}

// ---- family 5: cards and bank data ---------------------------------------

fn family5(st: &mut Rng, val: &mut Rng, red: bool, records: usize) -> Draft {
    let form = st.below(12);
    let net = st.below(v::NETWORKS.len() as u64) as usize;
    let field = (*st.pick(&["notes", "memo", "message", "details"])).to_owned();
    let mut d = Draft::default();
    for _ in 0..records {
        let mut rec = base_fields(val, false);
        let (text, class, canonical, spelled): (String, Class, String, String) = match form {
            0..=2 => {
                let card = if red {
                    v::card_of(val, net)
                } else {
                    v::luhn_invalid(val)
                };
                let sep = [" ", "-", ""][form as usize];
                let g = v::grouped(&card, sep);
                (format!("Card on file: {g}"), Class::Card, card, g)
            }
            3 => {
                let e = if red { v::expiry(val) } else { v::date(val) };
                let label = if red { "card exp" } else { "service date" };
                (format!("{label} {e}"), Class::Expiry, e.clone(), e)
            }
            4 => {
                let r = if red { v::routing(val) } else { v::zip4(val) };
                let g = if red && r.len() == 9 {
                    format!("{}-{}-{}", &r[..4], &r[4..8], &r[8..])
                } else {
                    r.clone()
                };
                let label = if red { "Routing #" } else { "Mail to ZIP" };
                (format!("{label} {g}"), Class::Routing, r, g)
            }
            5 => {
                let a = if red {
                    v::bank_account(val)
                } else {
                    v::order_id(val)
                };
                let label = if red { "Checking Account:" } else { "Order:" };
                (format!("{label} {a}"), Class::BankAccount, a.clone(), a)
            }
            6 => {
                let a = if red {
                    v::bank_account(val)
                } else {
                    v::order_id(val)
                };
                let label = if red {
                    "direct deposit acct#"
                } else {
                    "work order#"
                };
                (format!("{label}{a}"), Class::BankAccount, a.clone(), a)
            }
            7 => {
                let a = if red { v::dln(val) } else { v::order_id(val) };
                let label = if red { "Driver's License:" } else { "Ticket:" };
                (format!("{label} {a}"), Class::Dln, a.clone(), a)
            }
            8 => {
                let a = if red { v::dln(val) } else { v::order_id(val) };
                let label = if red { "DL#" } else { "WO#" };
                (format!("{label}{a} verified"), Class::Dln, a.clone(), a)
            }
            9 => {
                let a = if red {
                    v::passport(val)
                } else {
                    v::order_id(val)
                };
                let label = if red { "Passport No.:" } else { "Booking No.:" };
                (format!("{label} {a}"), Class::Passport, a.clone(), a)
            }
            10 => {
                let a = if red {
                    v::bank_account(val)
                } else {
                    v::order_id(val)
                };
                let r = if red { v::routing(val) } else { v::zip4(val) };
                if red {
                    d.plant(Class::Routing, &field, &r, &[]);
                }
                let t = if red {
                    format!("ACH refund to savings {a} routing {r}")
                } else {
                    format!("Refund mailed, order {a} zip {r}")
                };
                (t, Class::BankAccount, a.clone(), a)
            }
            _ => {
                let card = if red {
                    v::card_of(val, net)
                } else {
                    v::luhn_invalid(val)
                };
                let g = v::grouped(&card, " ");
                let t = if red {
                    let e = v::expiry(val);
                    d.plant(Class::Expiry, &field, &e, &[]);
                    format!("paid with {g} exp {e}")
                } else {
                    format!("paid with {g} on {}", v::date(val))
                };
                (t, Class::Card, card, g)
            }
        };
        if red {
            d.plant(class, &field, &canonical, &[&spelled]);
        }
        rec.push(Field {
            name: field.clone(),
            cell: str_cell(&text),
        });
        d.records.push(rec);
    }
    d
}

// ---- family 6: encoded payloads ------------------------------------------

fn b64(bytes: &[u8], url: bool) -> String {
    use base64::Engine;
    if url {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    } else {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

fn family6(st: &mut Rng, val: &mut Rng, red: bool, records: usize, format: Format) -> Draft {
    let json_format = format == Format::Json || format == Format::Ndjson;
    let form = if json_format {
        st.below(7)
    } else {
        2 + st.below(5)
    };
    let field = (*st.pick(&["payload", "blob", "attachment", "token", "raw", "meta"])).to_owned();
    let mut d = Draft::default();
    for _ in 0..records {
        let mut rec = base_fields(val, false);
        let class = *st.pick(&[Class::Ssn, Class::Card, Class::Ssn, Class::Routing]);
        let (inner_name, inner_value, class) = if red {
            let r = red_value(class, val);
            let name = match class {
                Class::Ssn => "ssn",
                Class::Card => "card_number",
                _ => "routing_number",
            };
            (name, r.canonical, class)
        } else {
            ("phone", v::phone(val), Class::Ssn)
        };
        let inner_json = format!("{{{}:{}}}", json_str(inner_name), json_str(&inner_value));
        let (cell, encoded) = match form {
            0 => {
                // JSON inside a JSON string.
                let once = json_str(&inner_json);
                (
                    Cell {
                        json: once.clone(),
                        text: inner_json.clone(),
                    },
                    once,
                )
            }
            1 => {
                // Triple-encoded.
                let twice = json_str(&json_str(&inner_json));
                let thrice = json_str(&twice);
                (
                    Cell {
                        json: thrice.clone(),
                        text: twice.clone(),
                    },
                    thrice,
                )
            }
            2 => {
                let t = b64(inner_json.as_bytes(), false);
                (str_cell(&t), t)
            }
            3 => {
                let t = b64(
                    format!("customer note: {inner_name} {inner_value}").as_bytes(),
                    true,
                );
                (str_cell(&t), t)
            }
            4 => {
                let t = format!(
                    "data:application/json;base64,{}",
                    b64(inner_json.as_bytes(), false)
                );
                (str_cell(&t), t)
            }
            5 => {
                let claims = format!(
                    "{{\"sub\":\"1000234\",{}:{}}}",
                    json_str(inner_name),
                    json_str(&inner_value)
                );
                let t = format!(
                    "{}.{}.{}",
                    b64(b"{\"alg\":\"HS256\",\"typ\":\"JWT\"}", true),
                    b64(claims.as_bytes(), true),
                    b64(&val.digits(32).into_bytes(), true)
                );
                (str_cell(&t), t)
            }
            _ => {
                let t = format!(
                    "data:text/plain;base64,{}",
                    b64(format!("{inner_name}: {inner_value}").as_bytes(), false)
                );
                (str_cell(&t), t)
            }
        };
        if red {
            let enc_inner = encoded.trim_matches('"').to_owned();
            d.plant(class, &field, &inner_value, &[&enc_inner]);
        }
        rec.push(Field {
            name: field.clone(),
            cell,
        });
        d.records.push(rec);
    }
    d
}

// ---- family 7: response headers ------------------------------------------

fn family7(st: &mut Rng, val: &mut Rng, red: bool) -> Draft {
    let mut d = Draft::default();
    d.records.push(base_fields(val, true));
    let kinds: Vec<u64> = (0..st.range(2, 4)).map(|_| st.below(14)).collect();
    let id = v::utility_id(val);
    for k in kinds {
        let (a, g, s) = v::ssn_parts(val);
        let ssn = format!("{a}-{g}-{s}");
        let card = v::card(val);
        let routing = v::routing(val);
        let acct = v::bank_account(val);
        let dl = v::dln(val);
        let mut extra = String::new();
        let (name, red_value, benign_value, class, canonical): (
            &str,
            String,
            String,
            Class,
            String,
        ) = match k {
            0 => (
                "X-Customer-SSN",
                ssn.clone(),
                String::new(),
                Class::Ssn,
                ssn.clone(),
            ),
            1 => (
                "Location",
                format!("/accounts/{id}?ssn={ssn}&view=full"),
                format!("/accounts/{id}?page=2&view=full"),
                Class::Ssn,
                ssn.clone(),
            ),
            2 => (
                "Location",
                format!(
                    "https://db.internal/accounts/lookup?ssn={}",
                    ssn.replace('-', "%2D")
                ),
                format!("https://db.internal/accounts/lookup?id={id}"),
                Class::Ssn,
                ssn.clone(),
            ),
            3 => (
                "Set-Cookie",
                format!("last_card={card}; Path=/; HttpOnly; Secure"),
                format!("session={}; Path=/; HttpOnly; Secure", v::uuid(val)),
                Class::Card,
                card.clone(),
            ),
            4 => (
                "Content-Disposition",
                format!("attachment; filename=\"statement {ssn}.pdf\""),
                format!("attachment; filename=\"statement {}.pdf\"", v::date(val)),
                Class::Ssn,
                ssn.clone(),
            ),
            5 => (
                "Link",
                format!("</accounts?routing_number={routing}&page=2>; rel=\"next\""),
                "</accounts?offset=100&limit=50>; rel=\"next\"".to_owned(),
                Class::Routing,
                routing.clone(),
            ),
            6 => (
                "X-Debug-Info",
                format!("card {} declined", v::grouped(&card, " ")),
                format!("order {} shipped", v::order_id(val)),
                Class::Card,
                card.clone(),
            ),
            7 => (
                "X-Bank-Account",
                acct.clone(),
                String::new(),
                Class::BankAccount,
                acct.clone(),
            ),
            8 => (
                "X-Holder-DL",
                dl.clone(),
                String::new(),
                Class::Dln,
                dl.clone(),
            ),
            9 => (
                "Refresh",
                format!("0; url=/accounts?card={card}"),
                format!("0; url=/accounts?page={}", val.range(2, 9)),
                Class::Card,
                card.clone(),
            ),
            10 => (
                "Warning",
                format!("299 - \"checking acct {acct} on file\""),
                format!("299 - \"call {} to confirm\"", v::phone(val)),
                Class::BankAccount,
                acct.clone(),
            ),
            12 => {
                let claims = b64(
                    format!("{{\"sub\":\"{id}\",\"ssn\":\"{ssn}\"}}").as_bytes(),
                    true,
                );
                let benign_claims = b64(
                    format!("{{\"sub\":\"{id}\",\"phone\":\"{}\"}}", v::phone(val)).as_bytes(),
                    true,
                );
                let sig = b64(val.digits(24).as_bytes(), true);
                extra = claims.clone();
                (
                    "Set-Cookie",
                    format!("token=eyJhbGciOiJIUzI1NiJ9.{claims}.{sig}; Path=/; Secure"),
                    format!("token=eyJhbGciOiJIUzI1NiJ9.{benign_claims}.{sig}; Path=/; Secure"),
                    Class::Ssn,
                    ssn.clone(),
                )
            }
            13 => (
                "X-Payload",
                b64(format!("customer note: card {card}").as_bytes(), false),
                b64(
                    format!("customer note: order {}", v::order_id(val)).as_bytes(),
                    false,
                ),
                Class::Card,
                card.clone(),
            ),
            _ => (
                "Content-Location",
                format!("/accounts/{id}/cards/{card}"),
                format!("/accounts/{id}/cards/{}", v::uuid(val)),
                Class::Card,
                card.clone(),
            ),
        };
        if red {
            let header_name = name.to_owned();
            d.plant(
                class,
                &header_name,
                &canonical,
                &[&red_value, &canonical.replace('-', "%2D"), &extra],
            );
            d.headers.push((header_name, red_value));
        } else {
            let (n, value) = if benign_value.is_empty() {
                ("X-Customer-Ref", v::order_id(val))
            } else {
                (name, benign_value)
            };
            d.headers.push((n.to_owned(), value));
        }
    }
    d
}

// ---- family 8: every status ----------------------------------------------

fn family8(
    st: &mut Rng,
    val: &mut Rng,
    red: bool,
    format: Format,
) -> (Draft, u16, Option<&'static str>) {
    let status = *st.pick(&[
        400u16, 401, 403, 404, 409, 422, 429, 500, 502, 503, 201, 203,
    ]);
    let mut d = Draft::default();
    let (a, g, s) = v::ssn_parts(val);
    let ssn = format!("{a}-{g}-{s}");
    let card = v::card(val);
    let benign = v::order_id(val);
    let (what, class, canonical) = if st.chance(50) {
        ("ssn", Class::Ssn, ssn)
    } else {
        ("card", Class::Card, card)
    };
    let shown = if red { canonical.clone() } else { benign };
    let key = if red { what } else { "order" };
    let mut content_type = None;
    if status == 201 || status == 203 {
        let mut rec = base_fields(val, true);
        rec.push(Field {
            name: if red {
                what.to_owned()
            } else {
                "order_ref".to_owned()
            },
            cell: str_cell(&shown),
        });
        rec.push(Field {
            name: "notes".into(),
            cell: str_cell(&format!("created from {key} {shown}")),
        });
        if red {
            d.plant(class, what, &canonical, &[]);
        }
        d.records.push(rec);
        return (d, status, None);
    }
    let message = format!("no account matches {key} {shown}");
    let path = format!("/accounts?{key}={shown}");
    if red {
        d.plant(class, "error.message", &canonical, &[]);
    }
    match format {
        Format::Text => {
            d.records.push(vec![
                Field {
                    name: "error".into(),
                    cell: str_cell(&format!("{status} {message}")),
                },
                Field {
                    name: "path".into(),
                    cell: str_cell(&format!("GET {path}")),
                },
            ]);
        }
        _ => {
            if st.chance(50) {
                content_type = Some("application/problem+json");
                d.records.push(vec![
                    Field {
                        name: "type".into(),
                        cell: str_cell("https://db.internal/errors/lookup"),
                    },
                    Field {
                        name: "title".into(),
                        cell: str_cell("Lookup failed"),
                    },
                    Field {
                        name: "status".into(),
                        cell: Cell {
                            json: status.to_string(),
                            text: status.to_string(),
                        },
                    },
                    Field {
                        name: "detail".into(),
                        cell: str_cell(&message),
                    },
                    Field {
                        name: "instance".into(),
                        cell: str_cell(&path),
                    },
                ]);
            } else {
                d.records.push(vec![Field {
                    name: "error".into(),
                    cell: Cell {
                        json: format!(
                            "{{\"code\":\"lookup_failed\",\"message\":{},\"path\":{}}}",
                            json_str(&message),
                            json_str(&path)
                        ),
                        text: message.clone(),
                    },
                }]);
            }
        }
    }
    (d, status, content_type)
}

// ---- family 9: media types -----------------------------------------------

/// Named fields whose values no detector finds without their name, and one
/// a detector finds.
fn named_fields(d: &mut Draft, rec: &mut Record, red: bool, val: &mut Rng, spaced: bool) {
    let names: [(Class, &str, &str, &str); 4] = [
        (
            Class::Dln,
            "drivers_license",
            "Driver License Number",
            "meter_serial",
        ),
        (
            Class::BankAccount,
            "bank_account",
            "Bank Account",
            "work_order",
        ),
        (
            Class::Passport,
            "passport_number",
            "Passport Number",
            "booking_ref",
        ),
        (
            Class::Ssn,
            "ssn",
            "Social Security Number",
            "reference_code",
        ),
    ];
    for (class, name, spaced_name, benign_name) in names {
        let n = if spaced { spaced_name } else { name };
        slot(d, rec, red, class, n, benign_name, val);
    }
}

fn family9(
    st: &mut Rng,
    val: &mut Rng,
    red: bool,
    records: usize,
) -> (Draft, Format, String, CsvStyle) {
    let variant = st.below(14);
    let mut d = Draft::default();
    let spaced = (10..=13).contains(&variant);
    for _ in 0..records {
        let mut rec = base_fields(val, false);
        named_fields(&mut d, &mut rec, red, val, spaced);
        d.records.push(rec);
    }
    let plain = CsvStyle::default();
    let (format, ct, style) = match variant {
        0 => (Format::Json, "application/vnd.api+json", plain),
        1 => (Format::Json, "application/problem+json", plain),
        2 => (Format::Json, "application/hal+json; charset=utf-8", plain),
        3 => (
            Format::Json,
            "application/x-ndjson",
            CsvStyle {
                pretty: true,
                ..plain
            },
        ),
        4 => (
            Format::Json,
            "text/plain",
            CsvStyle {
                pretty: true,
                ..plain
            },
        ),
        5 => (Format::Json, "text/plain; charset=utf-8", plain),
        6 => (Format::Ndjson, "text/plain", plain),
        7 => (Format::Csv, "text/plain", plain),
        8 => (Format::Csv, "text/csv", CsvStyle { bom: true, ..plain }),
        9 => (
            Format::Csv,
            "text/csv; charset=utf-8",
            CsvStyle {
                delimiter: b';',
                ..plain
            },
        ),
        10 => (
            Format::Csv,
            "text/csv",
            CsvStyle {
                delimiter: b'\t',
                ..plain
            },
        ),
        11 => (
            Format::Csv,
            "application/csv",
            CsvStyle {
                crlf: true,
                ..plain
            },
        ),
        12 => (
            Format::Csv,
            "text/tab-separated-values",
            CsvStyle {
                delimiter: b'\t',
                ..plain
            },
        ),
        _ => (
            Format::Csv,
            "text/plain",
            CsvStyle {
                bom: true,
                delimiter: b';',
                crlf: true,
                pretty: false,
            },
        ),
    };
    (d, format, ct.to_owned(), style)
}

// ---- family 10: compression ----------------------------------------------

fn family10(st: &mut Rng, val: &mut Rng, red: bool, records: usize) -> Draft {
    let mut d = Draft::default();
    let with_detected = st.chance(60);
    for _ in 0..records {
        let mut rec = base_fields(val, true);
        named_fields(&mut d, &mut rec, red, val, false);
        if with_detected {
            let (a, g, s) = v::ssn_parts(val);
            let card = v::card(val);
            let text = if red {
                let ssn = format!("{a}-{g}-{s}");
                d.plant(Class::Ssn, "notes", &ssn, &[]);
                d.plant(Class::Card, "notes", &card, &[&v::grouped(&card, " ")]);
                format!("caller gave SSN {ssn}, card {}", v::grouped(&card, " "))
            } else {
                format!("caller gave phone {}, zip {}", v::phone(val), v::zip4(val))
            };
            rec.push(Field {
                name: "notes".into(),
                cell: str_cell(&text),
            });
        }
        d.records.push(rec);
    }
    d
}

// ---- family 11: allowlist roles ------------------------------------------

fn family11(st: &mut Rng, val: &mut Rng, red: bool, records: usize) -> Draft {
    let mut d = Draft::default();
    let containers: Vec<u64> = (0..st.range(1, 3)).map(|_| st.below(4)).collect();
    for _ in 0..records {
        let mut rec = base_fields(val, true);
        if red {
            for &c in &containers {
                let (key, json, text) = match c {
                    0 => {
                        let card = v::card(val);
                        let exp = v::expiry(val);
                        d.plant(Class::Card, "cards[].card_number", &card, &[]);
                        d.plant(Class::Expiry, "cards[].card_expiry", &exp, &[]);
                        (
                            "cards",
                            format!(
                                "[{{\"card_number\":{},\"card_expiry\":{}}}]",
                                json_str(&card),
                                json_str(&exp)
                            ),
                            format!("{card} {exp}"),
                        )
                    }
                    1 => {
                        let r = v::routing(val);
                        let a = v::bank_account(val);
                        d.plant(Class::Routing, "bank.routing_number", &r, &[]);
                        d.plant(Class::BankAccount, "bank.account_number", &a, &[]);
                        (
                            "bank",
                            format!(
                                "{{\"routing_number\":{},\"account_number\":{}}}",
                                json_str(&r),
                                json_str(&a)
                            ),
                            format!("{r} {a}"),
                        )
                    }
                    2 => {
                        let n = v::dln(val);
                        d.plant(Class::Dln, "drivers_license.number", &n, &[]);
                        (
                            "drivers_license",
                            format!("{{\"number\":{},\"state\":\"CA\"}}", json_str(&n)),
                            format!("{n} CA"),
                        )
                    }
                    _ => {
                        let (a, g, s) = v::ssn_parts(val);
                        let ssn = format!("{a}-{g}-{s}");
                        d.plant(Class::Ssn, "identity.ssn", &ssn, &[]);
                        ("identity", format!("{{\"ssn\":{}}}", json_str(&ssn)), ssn)
                    }
                };
                if !d.forbidden_keys.iter().any(|k| k == key) {
                    d.forbidden_keys.push(key.to_owned());
                }
                rec.push(Field {
                    name: key.into(),
                    cell: Cell { json, text },
                });
            }
        }
        d.records.push(rec);
    }
    d
}

// ---- writing bodies ------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CsvStyle {
    delimiter: u8,
    bom: bool,
    crlf: bool,
    /// JSON only: pretty-printed over several lines.
    pretty: bool,
}

impl Default for CsvStyle {
    fn default() -> Self {
        CsvStyle {
            delimiter: b',',
            bom: false,
            crlf: false,
            pretty: false,
        }
    }
}

fn render_record_json(rec: &Record, pretty: bool) -> String {
    let sep = if pretty { ",\n    " } else { "," };
    let members: Vec<String> = rec
        .iter()
        .map(|f| {
            format!(
                "{}:{}{}",
                json_str(&f.name),
                if pretty { " " } else { "" },
                f.cell.json
            )
        })
        .collect();
    if pretty {
        format!("{{\n    {}\n  }}", members.join(sep))
    } else {
        format!("{{{}}}", members.join(sep))
    }
}

fn render_json(records: &[Record], root_record: bool, pretty: bool) -> String {
    if root_record && records.len() == 1 {
        return render_record_json(&records[0], pretty);
    }
    let recs: Vec<String> = records
        .iter()
        .map(|r| render_record_json(r, pretty))
        .collect();
    if pretty {
        format!(
            "{{\n  \"accounts\": [\n  {}\n  ],\n  \"total\": {}\n}}\n",
            recs.join(",\n  "),
            records.len()
        )
    } else {
        format!(
            "{{\"accounts\":[{}],\"total\":{}}}",
            recs.join(","),
            records.len()
        )
    }
}

fn csv_cell(s: &str, delimiter: u8) -> String {
    if s.bytes()
        .any(|b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r')
    {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn render_csv(records: &[Record], style: CsvStyle) -> String {
    let d = char::from(style.delimiter);
    let nl = if style.crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    if style.bom {
        out.push('\u{feff}');
    }
    let header: Vec<String> = records[0]
        .iter()
        .map(|f| csv_cell(&f.name, style.delimiter))
        .collect();
    out.push_str(&header.join(&d.to_string()));
    out.push_str(nl);
    for r in records {
        let cells: Vec<String> = r
            .iter()
            .map(|f| csv_cell(&f.cell.text, style.delimiter))
            .collect();
        out.push_str(&cells.join(&d.to_string()));
        out.push_str(nl);
    }
    out
}

fn humanize(name: &str) -> String {
    name.replace('_', " ")
}

fn render_text(records: &[Record], sentences: bool) -> String {
    let mut out = String::new();
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for f in r {
            if f.cell.text.is_empty() {
                continue;
            }
            if sentences {
                out.push_str(&format!("The {} is {}.\n", humanize(&f.name), f.cell.text));
            } else {
                out.push_str(&format!("{}: {}\n", humanize(&f.name), f.cell.text));
            }
        }
    }
    out
}

pub fn encode(enc: Enc, plain: &[u8]) -> Vec<u8> {
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    let w = |mut e: Box<dyn WriteFinish>| {
        e.write_all_bytes(plain);
        e.done()
    };
    match enc {
        Enc::Identity => plain.to_vec(),
        Enc::Gzip(l) => w(Box::new(GzEncoder::new(Vec::new(), Compression::new(l)))),
        Enc::XGzip => w(Box::new(GzEncoder::new(Vec::new(), Compression::default()))),
        Enc::Zlib(l) => w(Box::new(ZlibEncoder::new(Vec::new(), Compression::new(l)))),
        Enc::RawDeflate(l) => w(Box::new(DeflateEncoder::new(
            Vec::new(),
            Compression::new(l),
        ))),
        Enc::Br(q) => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, q, 22);
                e.write_all(plain).expect("brotli write");
            }
            out
        }
    }
}

trait WriteFinish {
    fn write_all_bytes(&mut self, b: &[u8]);
    fn done(self: Box<Self>) -> Vec<u8>;
}

macro_rules! write_finish {
    ($t:ty) => {
        impl WriteFinish for $t {
            fn write_all_bytes(&mut self, b: &[u8]) {
                self.write_all(b).expect("compress");
            }
            fn done(self: Box<Self>) -> Vec<u8> {
                self.finish().expect("compress")
            }
        }
    };
}

write_finish!(flate2::write::GzEncoder<Vec<u8>>);
write_finish!(flate2::write::ZlibEncoder<Vec<u8>>);
write_finish!(flate2::write::DeflateEncoder<Vec<u8>>);

fn content_type_for(format: Format) -> &'static str {
    match format {
        Format::Json => "application/json",
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv",
        Format::Text => "text/plain; charset=utf-8",
    }
}

/// The formats a family is written in.
fn formats_for(family: u8) -> &'static [Format] {
    match family {
        1 | 2 | 11 => &[Format::Json, Format::Ndjson, Format::Csv, Format::Json],
        3 => &[Format::Json, Format::Ndjson],
        7 => &[Format::Json],
        8 => &[Format::Json, Format::Json, Format::Text],
        _ => &[Format::Json, Format::Ndjson, Format::Csv, Format::Text],
    }
}

fn pick_encoding(st: &mut Rng, family: u8) -> Enc {
    if family == 10 {
        return match st.below(6) {
            0 | 1 => Enc::Gzip(st.range(0, 9) as u32),
            2 => Enc::XGzip,
            3 => Enc::Zlib(st.range(0, 9) as u32),
            4 => Enc::RawDeflate(st.range(0, 9) as u32),
            _ => Enc::Br(st.range(0, 11) as u32),
        };
    }
    match st.below(100) {
        0..=7 => Enc::Gzip(6),
        8..=11 => Enc::Br(5),
        _ => Enc::Identity,
    }
}

fn find_all(hay: &[u8], needle: &[u8], out: &mut Vec<(usize, usize)>) {
    if needle.is_empty() || needle.len() > hay.len() {
        return;
    }
    for i in 0..=hay.len() - needle.len() {
        if &hay[i..i + needle.len()] == needle {
            out.push((i, i + needle.len()));
        }
    }
}

/// Writes one twin of a case.
#[allow(clippy::too_many_arguments)]
fn finish_body(
    family: u8,
    case: usize,
    benign: bool,
    d: Draft,
    format: Format,
    content_type: String,
    style: CsvStyle,
    root_record: bool,
    sentences: bool,
    encoding: Enc,
    status: u16,
) -> Body {
    let plain = match format {
        Format::Json => render_json(&d.records, root_record, style.pretty),
        Format::Ndjson => {
            let mut s = String::new();
            for r in &d.records {
                s.push_str(&render_record_json(r, false));
                s.push('\n');
            }
            s
        }
        Format::Csv => render_csv(&d.records, style),
        Format::Text => render_text(&d.records, sentences),
    }
    .into_bytes();
    let wire = encode(encoding, &plain);
    let mut anchors = Vec::new();
    if encoding == Enc::Identity {
        for p in &d.planted {
            for s in &p.spellings {
                find_all(&plain, s.as_bytes(), &mut anchors);
            }
        }
        anchors.sort_unstable();
        anchors.dedup();
    }
    Body {
        family,
        case,
        benign,
        principal: if family == 11 {
            "non-utilities"
        } else {
            "customer-service"
        },
        status,
        content_type,
        format,
        encoding,
        headers: d.headers,
        plain,
        wire,
        planted: d.planted,
        forbidden_keys: d.forbidden_keys,
        anchors,
    }
}

/// Both twins of one case of `family`.
fn case(family: u8, case: usize) -> [Body; 2] {
    let base = SEED ^ (u64::from(family) << 48) ^ (case as u64).wrapping_mul(0x9E37_79B9);
    let mut twins = Vec::with_capacity(2);
    for benign in [false, true] {
        let mut st = Rng::new(base);
        let mut val = Rng::new(base ^ if benign { 0xB5 } else { 0x4E });
        let red = !benign;
        let records = if st.chance(60) {
            1
        } else {
            st.range(2, 3) as usize
        };
        let mut format = *st.pick(formats_for(family));
        let mut style = CsvStyle {
            pretty: st.chance(30),
            ..CsvStyle::default()
        };
        if format == Format::Csv {
            style.crlf = st.chance(30);
        }
        let root_record = records == 1 && st.chance(50);
        let sentences = st.chance(30);
        let mut encoding = pick_encoding(&mut st, family);
        let mut status = 200;
        let mut content_type: Option<String> = None;
        let d = match family {
            1 => family1(&mut st, &mut val, red, records),
            2 => family2(&mut st, &mut val, red, records),
            3 => family3(&mut st, &mut val, red, records),
            4 => family4(&mut st, &mut val, red, records, format),
            5 => family5(&mut st, &mut val, red, records),
            6 => family6(&mut st, &mut val, red, records, format),
            7 => {
                encoding = Enc::Identity;
                family7(&mut st, &mut val, red)
            }
            8 => {
                let (d, s, ct) = family8(&mut st, &mut val, red, format);
                status = s;
                content_type = ct.map(str::to_owned);
                d
            }
            9 => {
                let (d, f, ct, s) = family9(&mut st, &mut val, red, records);
                format = f;
                style = s;
                content_type = Some(ct);
                d
            }
            10 => family10(&mut st, &mut val, red, records),
            _ => family11(&mut st, &mut val, red, records),
        };
        let content_type = content_type.unwrap_or_else(|| content_type_for(format).to_owned());
        twins.push(finish_body(
            family,
            case,
            benign,
            d,
            format,
            content_type,
            style,
            root_record,
            sentences,
            encoding,
            status,
        ));
    }
    let benign = twins.pop().expect("two twins");
    let red = twins.pop().expect("two twins");
    [red, benign]
}

/// Every body of `family`: red bodies and benign twins, in case order.
pub fn family_bodies(family: u8) -> Vec<Body> {
    (0..CASES_PER_FAMILY)
        .flat_map(|c| case(family, c))
        .collect()
}
