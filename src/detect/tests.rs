// Compiled only under #[cfg(test)] (see the parent module).
//! Detection tests: positive cases per detector, boundaries, the
//! false-positive corpus, properties, and an ignored throughput probe.

use super::scan::scan_runs;
use super::validate::{card_valid, ssn_valid};
use super::{DetectorKind, DetectorSet, Detectors, Finding};
use proptest::prelude::*;

use DetectorKind::{
    AbaRouting as Aba, BankAccount as Bank, Card, DriversLicense as Dl, Ein, Itin, Passport, Ssn,
};

fn scan_set(text: &str, set: DetectorSet) -> Vec<Finding> {
    let mut out = Vec::new();
    Detectors::new().scan(text.as_bytes(), set, &mut out);
    out
}

/// Findings of every detector as `(kind, matched text)`.
fn found(text: &str) -> Vec<(DetectorKind, &str)> {
    scan_set(text, DetectorSet::ALL)
        .into_iter()
        .map(|f| (f.kind, &text[f.start..f.end]))
        .collect()
}

/// Asserts `text` yields exactly `expected`.
#[track_caller]
fn check(text: &str, expected: &[(DetectorKind, &str)]) {
    let shown: String = text.chars().take(120).collect();
    assert_eq!(found(text), expected, "text: {shown:?}");
}

#[track_caller]
fn none(text: &str) {
    check(text, &[]);
}

fn set_of(kinds: &[DetectorKind]) -> DetectorSet {
    kinds.iter().fold(DetectorSet::NONE, |s, &k| s.with(k))
}

// ---------------------------------------------------------------- SSN / ITIN

#[test]
fn ssn_separator_variants() {
    check("My SSN is 123-45-6789.", &[(Ssn, "123-45-6789")]);
    check("ssn: 123 45 6789", &[(Ssn, "123 45 6789")]);
    check("SSN 123456789 on file", &[(Ssn, "123456789")]);
    check("SSN#123456789", &[(Ssn, "123456789")]);
    check("SS# 123456789", &[(Ssn, "123456789")]);
    check("Tax ID 123456789", &[(Ssn, "123456789")]);
    check("123456789", &[(Ssn, "123456789")]);
    check("  123-45-6789\n", &[(Ssn, "123-45-6789")]);
    // Mixed and dotted separators are how people type them too.
    check("SSN 123-45 6789", &[(Ssn, "123-45 6789")]);
    check("SSN 123 45-6789", &[(Ssn, "123 45-6789")]);
    check("SSN 123.45.6789", &[(Ssn, "123.45.6789")]);
    // Other groupings count only after a taxpayer word.
    check("SSN 123-456789", &[(Ssn, "123-456789")]);
    check("tax id 12345-6789", &[(Ssn, "12345-6789")]);
    none("ref 123-456789");
    none("ref 12345-6789");
    none("SSN 123--45--6789");
}

#[test]
fn ssn_boundaries_and_punctuation() {
    check("123-45-6789", &[(Ssn, "123-45-6789")]);
    check("123-45-6789 is mine", &[(Ssn, "123-45-6789")]);
    check("mine: 123-45-6789", &[(Ssn, "123-45-6789")]);
    check("(123-45-6789)", &[(Ssn, "123-45-6789")]);
    check("\"123-45-6789\"", &[(Ssn, "123-45-6789")]);
    check("[123-45-6789],", &[(Ssn, "123-45-6789")]);
    check("ssn=123-45-6789;", &[(Ssn, "123-45-6789")]);
    check("SSN:\t123-45-6789\r\n", &[(Ssn, "123-45-6789")]);
    check("é123-45-6789é", &[(Ssn, "123-45-6789")]);
    check("a, 123-45-6789, b", &[(Ssn, "123-45-6789")]);
    check("It was 123-45-6789! Really?", &[(Ssn, "123-45-6789")]);
    // Glued to letters: the dashed shape is distinctive enough.
    check("x123-45-6789", &[(Ssn, "123-45-6789")]);
    check("123-45-6789x", &[(Ssn, "123-45-6789")]);
    check("SSN123456789", &[(Ssn, "123456789")]);
    none("ORD123456789");
    none("0123-45-6789");
    none("123-45-67890");
    none("1-123-45-6789");
    none("123-45-6789-1");
    none("A-123-45-6789");
    none("123-45-6789.5");
    none("1.123-45-6789");
    none("+123-45-6789");
    none("$123456789");
    none("123456789@example.com");
    none("_123456789");
    none("123456789_");
    check("SSN 123-45-6789_2", &[(Ssn, "123-45-6789")]);
    check(
        "card 4111 1111 1111 1111_",
        &[(Card, "4111 1111 1111 1111")],
    );
    // Inside longer digit runs.
    none("1234567890123");
    none("1234567890");
    none("12345678901");
    none("Call 1234567890 now");
    none("12345678");
    // The two SSA-rule neighbours of a 9-digit run.
    none("123 456789");
}

#[test]
fn ssn_invalid_numbers() {
    for bad in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-4567",
        "123-45-0000",
        "078-05-1120",
        "219-09-9999",
        "078051120",
        "219099999",
        "666123456",
    ] {
        none(&format!("SSN {bad}"));
    }
    check("SSN 078-05-1121", &[(Ssn, "078-05-1121")]);
    check("SSN 899-99-9999", &[(Ssn, "899-99-9999")]);
    check("SSN 001-01-0001", &[(Ssn, "001-01-0001")]);
}

#[test]
fn itin_detection() {
    check("ITIN 912-70-1234", &[(Itin, "912-70-1234")]);
    check("itin 912 88 1234 filed", &[(Itin, "912 88 1234")]);
    check("ITIN: 912941234", &[(Itin, "912941234")]);
    check("912-50-0000", &[(Itin, "912-50-0000")]);
    check("999-99-1234", &[(Itin, "999-99-1234")]);
    for g in ["49", "66", "69", "89", "93", "00", "10"] {
        none(&format!("ITIN 912-{g}-1234"));
    }
    none("ITIN 987-65-4321");
}

// ----------------------------------------------------------------------- EIN

#[test]
fn ein_detection() {
    check("EIN 12-3456789", &[(Ein, "12-3456789")]);
    check("Employer ID: 94-1234567.", &[(Ein, "94-1234567")]);
    check("FEIN 98-7654321", &[(Ein, "98-7654321")]);
    check("EIN 123456789", &[(Ein, "123456789")]);
    check("fein: 471234567", &[(Ein, "471234567")]);
    for p in [
        "00", "07", "08", "09", "17", "18", "19", "28", "29", "49", "69", "70", "78", "79", "89",
        "96", "97",
    ] {
        none(&format!("EIN {p}-1234567"));
    }
    // Dash form only (without the keyword), and no zero serial.
    none("EIN 12 3456789");
    none("Reg 12-0000000");
    none("12-34567890");
    none("112-3456789");
    none("12-3456789-1");
    // A bare number after EIN must still have a valid prefix.
    check("EIN 073456789", &[(Ssn, "073456789")]);
}

// ---------------------------------------------------------------------- Cards

#[test]
fn card_test_pans_detected() {
    for pan in [
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "3530111333300000",
        "4012888888881881",
        "5105105105105100",
        "30569309025904",
        "6200000000000005",
        "2223003122003222",
        "4222222222222",
    ] {
        let text = format!("Paid with card {pan}, thanks");
        check(&text, &[(Card, pan)]);
        check(pan, &[(Card, pan)]);
    }
}

#[test]
fn card_grouping_variants() {
    check(
        "Card 4111 1111 1111 1111 exp",
        &[(Card, "4111 1111 1111 1111")],
    );
    check(
        "Card 4111-1111-1111-1111.",
        &[(Card, "4111-1111-1111-1111")],
    );
    check("amex 3782-822463-10005", &[(Card, "3782-822463-10005")]);
    check("amex 3782 822463 10005", &[(Card, "3782 822463 10005")]);
    check("diners 3056 930902 5904", &[(Card, "3056 930902 5904")]);
    check(
        "cup 6200 0000 0000 0000 000",
        &[(Card, "6200 0000 0000 0000 000")],
    );
    // Card followed by its expiry or a CVV.
    check(
        "4111 1111 1111 1111 12/25",
        &[(Card, "4111 1111 1111 1111")],
    );
    check("4111 1111 1111 1111 123", &[(Card, "4111 1111 1111 1111")]);
    check(
        "pan=4111111111111111&exp=1225",
        &[(Card, "4111111111111111")],
    );
    // Mixed separators are taken; double separators and bad groups are not.
    check("4111 1111-1111 1111", &[(Card, "4111 1111-1111 1111")]);
    check("4111.1111.1111.1111", &[(Card, "4111.1111.1111.1111")]);
    none("4111  1111  1111  1111");
    none("41 11 11 11 11 11 11 11");
    none("4111-1111-1111-1111-1111");
    check("x4111111111111111", &[(Card, "4111111111111111")]);
    check("4111111111111111x", &[(Card, "4111111111111111")]);
    none("4111111111111112");
    none("41111111111111111");
    check("4111-1111-1111-1111-", &[(Card, "4111-1111-1111-1111")]);
}

#[test]
fn later_longer_candidate_replaces_earlier() {
    // `123 45 4111` is SSN-shaped, but its last group starts a longer card.
    check(
        "ref 123 45 4111 1111 1111 1111",
        &[(Card, "4111 1111 1111 1111")],
    );
    // A shorter later candidate does not replace the earlier one.
    check(
        "4111 1111 1111 1111 45 6789",
        &[(Card, "4111 1111 1111 1111")],
    );
}

#[test]
fn card_wins_over_ssn_shape() {
    // A card whose digits also hold SSN-shaped pieces is one card.
    check("4000 0012 3456 7899", &[(Card, "4000 0012 3456 7899")]);
    check("4000-0012-3456-7899", &[(Card, "4000-0012-3456-7899")]);
    let f = found("SSN 123-45-6789 card 4111111111111111");
    assert_eq!(f, [(Ssn, "123-45-6789"), (Card, "4111111111111111")]);
}

// ------------------------------------------------------------------------ ABA

#[test]
fn aba_with_keyword() {
    check("Routing number: 021000021", &[(Aba, "021000021")]);
    check("routing # 011000015", &[(Aba, "011000015")]);
    check("ABA 122105155", &[(Aba, "122105155")]);
    check("RTN:026009593", &[(Aba, "026009593")]);
    check("transit 061000052 and acct", &[(Aba, "061000052")]);
    check(
        "Wire to Chase, routing and account below: 021000021",
        &[(Aba, "021000021")],
    );
    // Checksum failures are not routing numbers (nor SSNs here: the keyword
    // says what the number is meant to be).
    none("Routing number: 021000022");
    // Bad prefix.
    none("routing 130000006");
}

#[test]
fn aba_alone_only_as_whole_text() {
    check("021000021", &[(Aba, "021000021")]);
    check("  011000015\n", &[(Aba, "011000015")]);
    // In prose without a keyword it is no routing number; group 00 keeps it
    // from being an SSN.
    none("Ref 021000021 attached");
    none("see 021000021 for details");
    // A whole-text number valid as both SSN and routing number is taken for
    // the more sensitive SSN.
    check("122105155", &[(Ssn, "122105155")]);
}

// ------------------------------------------------------------ Driver's license

#[test]
fn drivers_license() {
    check("Driver's License: D1234567", &[(Dl, "D1234567")]);
    check("Driver’s license D1234567", &[(Dl, "D1234567")]);
    check("Drivers' License: D1234567", &[(Dl, "D1234567")]);
    check("operator's license 12345678", &[(Dl, "12345678")]);
    check("drivers license number is S12345678.", &[(Dl, "S12345678")]);
    check("Driver License No. 12345678", &[(Dl, "12345678")]);
    check("DL# 12345678", &[(Dl, "12345678")]);
    check("DL: CA1234567", &[(Dl, "CA1234567")]);
    check("dl-12345678", &[(Dl, "12345678")]);
    check("DLN A12345678901234", &[(Dl, "A12345678901234")]);
    check("License #: X1234", &[(Dl, "X1234")]);
    check("lic # 1234567", &[(Dl, "1234567")]);
    check("License no 98765432", &[(Dl, "98765432")]);
    check("(DL 1234567)", &[(Dl, "1234567")]);
    // Digits only need 7; letters + 4; at most 14 digits and 2 letters.
    none("DL 123456");
    none("DL 2016");
    none("DL ABC1234567");
    none("DL A123456789012345");
    none("DL 123456789012345");
    none("DL 1234567X");
    // Plain `license` without a label or driver word, other licenses.
    none("license 12345678");
    none("Business license # 12345678");
    none("software license no. 1234567890");
    // Keyword too far away or another word in between.
    none("DL was renewed for customer 12345678");
    none("DL                          12345678");
    // Keyword glued into another word.
    none("MDL 12345678");
    none("HDL 1234567");
}

#[test]
fn passport() {
    check("Passport No. 123456789", &[(Passport, "123456789")]);
    check("passport #X12345678", &[(Passport, "X12345678")]);
    check("PASSPORT: AB1234567 issued", &[(Passport, "AB1234567")]);
    check("passport number is 987654", &[(Passport, "987654")]);
    none("passport 12345");
    none("passport 1234567890");
    none("passport ABC123456");
    none("passport photo 123456");
}

#[test]
fn bank_account() {
    check("Bank account number: 12345678", &[(Bank, "12345678")]);
    check("bank acct 000123456789", &[(Bank, "000123456789")]);
    check("checking # 1234-5678-90", &[(Bank, "1234-5678-90")]);
    check("Savings no. 987654321", &[(Bank, "987654321")]);
    check("Savings acct 9876543", &[(Bank, "9876543")]);
    check(
        "ACH draft from account 000123456789",
        &[(Bank, "000123456789")],
    );
    check(
        "routing 021000021 account 12345678",
        &[(Aba, "021000021"), (Bank, "12345678")],
    );
    check("checking account: 1234", &[(Bank, "1234")]);
    check(
        "Bank account 12345678901234567",
        &[(Bank, "12345678901234567")],
    );
    // Customer account ids are no bank accounts.
    none("Account number 1000234");
    none("account id 12");
    none("acct id 55231");
    none("Account #: 1000234");
    none("Bank account 123");
    none("Bank account 123456789012345678");
    none("Energy savings 1200 kWh");
    check("checking 12345678", &[(Bank, "12345678")]);
    none("checking 1234567");
    none("bankaccount 12345678");
}

#[test]
fn keyword_specific_beats_shape() {
    // A 9-digit value named as passport or license is not reported as SSN.
    check("passport 123456789", &[(Passport, "123456789")]);
    check("DL 123456789", &[(Dl, "123456789")]);
    check("bank account 123-45-6789", &[(Bank, "123-45-6789")]);
    // The set is applied after overlaps are resolved.
    assert!(scan_set("passport 123456789", set_of(&[Ssn])).is_empty());
    assert_eq!(scan_set("passport 123456789", set_of(&[Passport])).len(), 1);
}

#[test]
fn bare_nine_digit_ids_are_not_ssns() {
    none("Order 482915736");
    none("Order #482915736");
    none("Invoice no. 482915736");
    none("Ref: 482915736");
    none("#482915736");
    none("Palo Alto, CA 943011234");
    none("Downloaded 123456789 bytes");
    none("Meter number 123456789");
    none("Txn id 918273645");
    // Tax words win over ids and the hash.
    check("Customer SSN 482915736", &[(Ssn, "482915736")]);
    check("SSN # 482915736", &[(Ssn, "482915736")]);
    check("Social Security number: 482915736", &[(Ssn, "482915736")]);
}

#[test]
fn many_findings_sorted() {
    let text = "SSN 123-45-6789, card 4111 1111 1111 1111, EIN 12-3456789, \
                routing 021000021, DL D1234567, passport 123456789, ITIN 912-70-1234, \
                bank account 55512345, card exp 12/27.";
    let got = found(text);
    assert_eq!(
        got,
        [
            (Ssn, "123-45-6789"),
            (Card, "4111 1111 1111 1111"),
            (Ein, "12-3456789"),
            (Aba, "021000021"),
            (Dl, "D1234567"),
            (Passport, "123456789"),
            (Itin, "912-70-1234"),
            (Bank, "55512345"),
            (DetectorKind::CardExpiry, "12/27"),
        ]
    );
    // Each single-detector set finds its own and nothing else.
    for kind in DetectorKind::ALL {
        let f = scan_set(text, set_of(&[kind]));
        assert_eq!(f.len(), 1, "{kind:?}");
        assert_eq!(f[0].kind, kind);
    }
    assert!(scan_set(text, DetectorSet::NONE).is_empty());
}

#[test]
fn scan_appends_without_clearing() {
    let d = Detectors::new();
    let mut out = vec![Finding {
        start: 100,
        end: 200,
        kind: Card,
    }];
    d.scan(b"SSN 123-45-6789", DetectorSet::ALL, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].start, 100);
    assert_eq!((out[1].start, out[1].end), (4, 15));
}

#[test]
fn input_is_bytes_as_given() {
    // Escapes are not decoded here: the caller hands decoded text.
    none("\\u0031\\u0032\\u0033-45-6789");
    check("SSN\\n123-45-6789", &[(Ssn, "123-45-6789")]);
    check("SSN\n123-45-6789", &[(Ssn, "123-45-6789")]);
    none("");
    none("no digits at all, just words and punctuation!");
}

#[test]
fn long_words_and_runs_are_bounded() {
    let long = "a".repeat(100_000);
    check(&format!("{long} 123-45-6789"), &[(Ssn, "123-45-6789")]);
    check(&format!("{long}123-45-6789"), &[(Ssn, "123-45-6789")]);
    let glued = "a'".repeat(50_000);
    none(&format!("{glued} account 12345678"));
    let digits = "9".repeat(100_000);
    none(&digits);
    none(&"1-".repeat(50_000));
    none(&"12 ".repeat(50_000));
    // A keyword that is the tail of a long word is no keyword.
    check(&format!("{long}passport 123456789"), &[(Ssn, "123456789")]);
    check(&format!("{long}DL 123456789"), &[(Ssn, "123456789")]);
    check(
        &format!("xpassport 12345678901 {long} passport 123456789"),
        &[(Passport, "123456789")],
    );
}

#[test]
fn min_digits_values() {
    let d = Detectors::new();
    assert_eq!(d.min_digits(DetectorSet::ALL), 4);
    assert_eq!(d.min_digits(DetectorSet::NONE), usize::MAX);
    assert_eq!(d.min_digits(set_of(&[Card])), 13);
    assert_eq!(d.min_digits(set_of(&[Ssn, Card])), 9);
    assert_eq!(d.min_digits(set_of(&[Passport, Card])), 6);
    assert_eq!(d.min_digits(set_of(&[Dl])), 4);
    assert_eq!(d.min_digits(set_of(&[Bank])), 4);
    // Shortest findings of each kind hold exactly that many digits.
    check("DL A1234", &[(Dl, "A1234")]);
    check("checking no 1234", &[(Bank, "1234")]);
    check("passport 123456", &[(Passport, "123456")]);
}

// ----------------------------------------------------- False-positive corpus

const FALSE_POSITIVES: &str = include_str!("../../tests/data/detect/false_positives.txt");

/// Lines whose reading is truly ambiguous: a detector finds something, and a
/// person could not tell either. Kept out of the zero-tolerance corpus and
/// only reported.
const AMBIGUOUS: &[&str] = &[
    // All-nines placeholder: a valid ITIN by the IRS group ranges.
    "Code 999-99-9999",
    // Nine digits after a word that names nothing: could be an SSN.
    "Called about 482915736 yesterday",
    // 19-digit Visa-range number passing Luhn, labelled only `transaction`.
    "Transaction 4111111111111111110",
];

fn corpus_lines() -> impl Iterator<Item = &'static str> {
    FALSE_POSITIVES
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

#[test]
fn false_positive_corpus() {
    let lines: Vec<&str> = corpus_lines().collect();
    assert!(lines.len() >= 150, "corpus has {} lines", lines.len());
    let mut per_kind = [0usize; DetectorKind::ALL.len()];
    let mut hits = Vec::new();
    for line in &lines {
        for (kind, m) in found(line) {
            per_kind[kind as usize] += 1;
            hits.push(format!("{kind:?} {m:?} in {line:?}"));
        }
    }
    for kind in DetectorKind::ALL {
        let n = per_kind[kind as usize];
        println!(
            "false positives {:>16}: {n} / {} lines ({:.2}%)",
            kind.name(),
            lines.len(),
            100.0 * n as f64 / lines.len() as f64
        );
    }
    for line in AMBIGUOUS {
        println!("ambiguous {line:?}: {:?}", found(line));
    }
    assert!(hits.is_empty(), "false positives:\n{}", hits.join("\n"));
}

#[test]
fn ambiguous_lines_are_findings() {
    // They are in the ambiguous list because something fires; if nothing
    // does any more, move them back to the corpus.
    for line in AMBIGUOUS {
        assert!(!found(line).is_empty(), "{line:?}");
    }
}

// ----------------------------------------------------------------- Properties

/// Checks the output contract of one scan.
fn assert_contract(text: &[u8], set: DetectorSet, got: &[Finding]) -> Result<(), TestCaseError> {
    let s = std::str::from_utf8(text).ok();
    let mut prev_end = 0;
    for f in got {
        prop_assert!(f.start < f.end && f.end <= text.len(), "{f:?}");
        prop_assert!(f.start >= prev_end, "overlap or unsorted: {got:?}");
        prop_assert!(set.contains(f.kind));
        prop_assert!(text[f.start..f.end].is_ascii());
        prop_assert!(text[f.start].is_ascii_alphanumeric());
        prop_assert!(text[f.end - 1].is_ascii_digit());
        if let Some(s) = s {
            prop_assert!(s.is_char_boundary(f.start) && s.is_char_boundary(f.end));
        }
        let digits = text[f.start..f.end]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .count();
        prop_assert!(digits >= f.kind.min_digits(), "{f:?} has {digits} digits");
        prev_end = f.end;
    }
    Ok(())
}

/// Text made of pieces that often form findings: keywords, digit groups,
/// separators and noise.
fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("SSN ".to_string()),
        Just("DL# ".to_string()),
        Just("passport no. ".to_string()),
        Just("bank account ".to_string()),
        Just("checking # ".to_string()),
        Just("routing ".to_string()),
        Just("EIN ".to_string()),
        Just("Order ".to_string()),
        Just("driver's license ".to_string()),
        Just("4111".to_string()),
        Just("021000021".to_string()),
        Just("123-45-6789".to_string()),
        Just("912-70-1234".to_string()),
        Just("4111 1111 1111 1111".to_string()),
        Just("378282246310005".to_string()),
        Just("12-3456789".to_string()),
        "[0-9]{1,19}",
        "[A-Za-z]{1,3}",
        "[ \\-#:./,()]{1,2}",
        "[ -~]{0,6}",
        "\\PC{0,3}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn any_set() -> impl Strategy<Value = DetectorSet> {
    any::<u16>().prop_map(|bits| {
        DetectorKind::ALL
            .into_iter()
            .filter(|k| bits & (1 << (*k as u16)) != 0)
            .fold(DetectorSet::NONE, DetectorSet::with)
    })
}

const LOREM: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "Springfield",
    "Hamilton",
    "Avenue",
];

fn words() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop::sample::select(LOREM).prop_map(str::to_string), 0..8)
}

fn valid_ssn() -> impl Strategy<Value = (u16, u8, u16)> {
    (1u16..=899, 1u8..=99, 1u16..=9999).prop_filter("SSA-valid", |&(a, g, s)| ssn_valid(a, g, s))
}

/// A Luhn-valid card number of a known network.
fn valid_card() -> impl Strategy<Value = String> {
    let brand = prop::sample::select(
        &[
            ("4", 16usize),
            ("4", 13),
            ("51", 16),
            ("2221", 16),
            ("37", 15),
            ("6011", 16),
            ("3530", 16),
            ("36", 14),
            ("62", 19),
        ][..],
    );
    (brand, prop::collection::vec(0u8..10, 19)).prop_map(|((prefix, len), fill)| {
        let mut d: Vec<u8> = prefix.bytes().collect();
        d.extend(fill.iter().map(|x| b'0' + x).take(len - 1 - prefix.len()));
        for check in b'0'..=b'9' {
            d.push(check);
            if card_valid(&d) {
                break;
            }
            d.pop();
        }
        String::from_utf8(d).unwrap_or_default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_utf8_never_panics(text in "\\PC{0,200}", set in any_set()) {
        let mut out = Vec::new();
        Detectors::new().scan(text.as_bytes(), set, &mut out);
        assert_contract(text.as_bytes(), set, &out)?;
    }

    #[test]
    fn random_bytes_never_panic(text in prop::collection::vec(any::<u8>(), 0..200), set in any_set()) {
        let mut out = Vec::new();
        Detectors::new().scan(&text, set, &mut out);
        assert_contract(&text, set, &out)?;
    }

    #[test]
    fn tricky_text_keeps_contract(text in tricky_text(), set in any_set()) {
        let mut out = Vec::new();
        Detectors::new().scan(text.as_bytes(), set, &mut out);
        assert_contract(text.as_bytes(), set, &out)?;
        // A subset's findings are exactly the full scan's findings of that subset.
        let mut all = Vec::new();
        Detectors::new().scan(text.as_bytes(), DetectorSet::ALL, &mut all);
        all.retain(|f| set.contains(f.kind));
        prop_assert_eq!(out, all);
    }

    #[test]
    fn min_digits_is_a_lower_bound(text in tricky_text(), set in any_set()) {
        // Without the prefilter, any finding still holds at least
        // min_digits(set) digits, so a text with fewer finds nothing.
        let mut out = Vec::new();
        scan_runs(text.as_bytes(), set, &mut out);
        let d = Detectors::new();
        let digits = text.bytes().filter(u8::is_ascii_digit).count();
        if digits < d.min_digits(set) {
            prop_assert!(out.is_empty(), "{out:?}");
        }
        for f in &out {
            let n = text.as_bytes()[f.start..f.end].iter().filter(|b| b.is_ascii_digit()).count();
            prop_assert!(n >= d.min_digits(set));
        }
        // And the prefilter drops nothing scan_runs would find.
        let mut filtered = Vec::new();
        d.scan(text.as_bytes(), set, &mut filtered);
        prop_assert_eq!(filtered, out);
    }

    #[test]
    fn planted_ssn_is_found(
        (area, group, serial) in valid_ssn(),
        before in words(),
        after in words(),
        style in 0usize..3,
    ) {
        let ssn = match style {
            0 => format!("{area:03}-{group:02}-{serial:04}"),
            1 => format!("{area:03} {group:02} {serial:04}"),
            _ => format!("{area:03}{group:02}{serial:04}"),
        };
        let mut parts = before.clone();
        parts.push(ssn.clone());
        parts.extend(after);
        let text = parts.join(" ");
        let start = before.iter().map(|w| w.len() + 1).sum::<usize>();
        let got = scan_set(&text, DetectorSet::ALL);
        prop_assert_eq!(
            got,
            vec![Finding { start, end: start + ssn.len(), kind: Ssn }],
            "text {:?}", text
        );
    }

    #[test]
    fn planted_card_is_found(
        pan in valid_card(),
        before in words(),
        after in words(),
        style in 0usize..3,
    ) {
        let shown = match style {
            0 => pan.clone(),
            _ => {
                let sep = if style == 1 { " " } else { "-" };
                // How cards print: 4-4-5, 4-6-4, 4-6-5, 4-4-4-4, 4-4-4-4-3.
                let sizes: &[usize] = match pan.len() {
                    13 => &[4, 4, 5],
                    14 => &[4, 6, 4],
                    15 => &[4, 6, 5],
                    16 => &[4, 4, 4, 4],
                    _ => &[4, 4, 4, 4, 3],
                };
                let mut groups = Vec::new();
                let mut i = 0;
                for &n in sizes {
                    groups.push(&pan[i..i + n]);
                    i += n;
                }
                groups.join(sep)
            }
        };
        let mut parts = before.clone();
        parts.push(shown.clone());
        parts.extend(after);
        let text = parts.join(" ");
        let start = before.iter().map(|w| w.len() + 1).sum::<usize>();
        let got = scan_set(&text, DetectorSet::ALL);
        prop_assert_eq!(
            got,
            vec![Finding { start, end: start + shown.len(), kind: Card }],
            "text {:?}", text
        );
    }

    #[test]
    fn digitless_text_finds_nothing(text in "[^0-9]{0,300}") {
        prop_assert!(scan_set(&text, DetectorSet::ALL).is_empty());
    }
}

// ------------------------------------------------------------- Throughput

/// `cargo test --release -- --ignored --nocapture throughput`
#[test]
#[ignore]
fn throughput() {
    use std::time::Instant;
    let plain = "Jane Q. Public, Hamilton Avenue, Palo Alto, California; \
                 notes: customer prefers email contact, gate code on file. ";
    let mixed = "Account 1000234 meter 55231 read 2016-02-08 10:15, $1,234.56 due; \
                 call (650) 329-2161. SSN 123-45-6789 card 4111 1111 1111 1111. ";
    let d = Detectors::new();
    for (name, unit) in [("plain", plain), ("mixed", mixed)] {
        let mut text = String::new();
        while text.len() < 10 << 20 {
            text.push_str(unit);
        }
        let mut out = Vec::new();
        let reps = 5;
        let t = Instant::now();
        for _ in 0..reps {
            out.clear();
            d.scan(text.as_bytes(), DetectorSet::ALL, &mut out);
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name}: {:.0} MB/s whole-text ({} findings)",
            (reps * text.len()) as f64 / secs / 1e6,
            out.len()
        );
        // Per JSON string value: many short strings.
        let values: Vec<&str> = unit.split(", ").collect();
        let t = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..200_000 {
            for v in &values {
                out.clear();
                d.scan(v.as_bytes(), DetectorSet::ALL, &mut out);
                bytes += v.len();
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name}: {:.0} MB/s as short values ({:.1} ns/value)",
            bytes as f64 / secs / 1e6,
            secs * 1e9 / (200_000 * values.len()) as f64
        );
    }
    // The false-positive corpus as JSON string values: numbers everywhere.
    let values: Vec<&str> = corpus_lines().collect();
    let mut out = Vec::new();
    let t = Instant::now();
    let mut bytes = 0usize;
    let reps = 20_000;
    for _ in 0..reps {
        for v in &values {
            out.clear();
            d.scan(v.as_bytes(), DetectorSet::ALL, &mut out);
            bytes += v.len();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "corpus values: {:.0} MB/s ({:.1} ns/value, {} values)",
        bytes as f64 / secs / 1e6,
        secs * 1e9 / (reps * values.len()) as f64,
        values.len()
    );
}

#[test]
fn regression_ssn_on_file_bare_digits() {
    let d = Detectors::new();
    let mut out = Vec::new();
    d.scan(
        b"Deposit waived, ssn on file 717596476",
        DetectorSet::ALL,
        &mut out,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].kind, DetectorKind::Ssn);
}
