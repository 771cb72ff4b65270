//! Pure validators for the numbers the detectors look for.
//!
//! Every function here takes already-split numeric parts or ASCII digits
//! (`b'0'..=b'9'`), allocates nothing and never panics. A digit slice holding
//! any other byte is invalid.

/// True when every byte of `digits` is an ASCII digit (and there is at least one).
fn all_digits(digits: &[u8]) -> bool {
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// Value of an ASCII digit (the caller has checked it is one).
fn dv(b: u8) -> u32 {
    u32::from(b.wrapping_sub(b'0'))
}

/// Value of the ASCII digits `digits` as a number (at most 9 digits, checked by callers).
fn num(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |acc, &b| acc * 10 + dv(b))
}

/// Luhn (ISO/IEC 7812 mod-10) check over ASCII digits.
///
/// False for an empty slice or one holding a non-digit byte.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if !all_digits(digits) {
        return false;
    }
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        let d = dv(b);
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
    }
    sum % 10 == 0
}

/// SSN validity by the Social Security Administration's rules.
///
/// The area (first three digits) is never 000, 666 or 900–999; the group
/// (middle two) is never 00; the serial (last four) is never 0000. Also
/// rejects the two best-known invalidated numbers: 078-05-1120 (the
/// "Woolworth wallet" SSN) and 219-09-9999 (an SSA advertising sample).
pub fn ssn_valid(area: u16, group: u8, serial: u16) -> bool {
    (1..=899).contains(&area)
        && area != 666
        && (1..=99).contains(&group)
        && (1..=9999).contains(&serial)
        && !matches!((area, group, serial), (78, 5, 1120) | (219, 9, 9999))
}

/// ITIN validity: area (first three digits) 900–999 and the group (middle
/// two digits) in one of the IRS ranges 50–65, 70–88, 90–92 or 94–99.
///
/// The serial (last four digits) is not constrained by the IRS; it only has
/// to fit in four digits. The SSA's advertising block 987-65-4320 to
/// 987-65-4329 (used in samples and forms) is rejected although its group
/// would fit.
pub fn itin_valid(area: u16, group: u8, serial: u16) -> bool {
    (900..=999).contains(&area)
        && matches!(group, 50..=65 | 70..=88 | 90..=92 | 94..=99)
        && serial <= 9999
        && !(area == 987 && group == 65 && (4320..=4329).contains(&serial))
}

/// True when `prefix` (the first two digits of an EIN) is one the IRS assigns.
///
/// Source: IRS, "How EINs are Assigned and Valid EIN Prefixes" (the campus
/// table: Andover 10, 12; Atlanta 60, 67; Austin 50, 53; Brookhaven 01–06, 11,
/// 13, 14, 16, 21–23, 25, 34, 51, 52, 54–59, 65; Cincinnati 30, 32, 35–38, 61;
/// Fresno 15, 24; Kansas City 40, 44; Memphis 94, 95; Ogden 80, 90;
/// Philadelphia 33, 39, 41–43, 46, 48, 62–64, 66, 68, 71–77, 81–88, 91–93, 98,
/// 99; Internet 20, 26, 27, 45–47, 81–88; SBA 31). Their union is 01–06,
/// 10–16, 20–27, 30–48, 50–68, 71–77, 80–88, 90–95, 98–99; never 00, 07–09,
/// 17–19, 28, 29, 49, 69, 70, 78, 79, 89, 96, 97.
pub fn ein_prefix_valid(prefix: u8) -> bool {
    matches!(
        prefix,
        1..=6 | 10..=16 | 20..=27 | 30..=48 | 50..=68 | 71..=77 | 80..=88 | 90..=95 | 98..=99
    )
}

/// ABA routing transit number check: nine ASCII digits whose first two are a
/// Federal Reserve routing symbol (00–12 banks, 21–32 thrifts, 61–72
/// electronic, 80 traveler's checks) and whose weighted sum
/// 3·(d1+d4+d7) + 7·(d2+d5+d8) + (d3+d6+d9) is a multiple of 10.
pub fn aba_valid(digits: &[u8; 9]) -> bool {
    if !all_digits(digits) {
        return false;
    }
    let prefix = num(&digits[..2]);
    if !matches!(prefix, 0..=12 | 21..=32 | 61..=72 | 80) {
        return false;
    }
    let d = |i: usize| dv(digits[i]);
    let sum = 3 * (d(0) + d(3) + d(6)) + 7 * (d(1) + d(4) + d(7)) + (d(2) + d(5) + d(8));
    sum % 10 == 0
}

/// Issuer identification number ranges of the card networks, from the
/// networks' published ranges as collected in ISO/IEC 7812 registries (and
/// summarized on Wikipedia's "Payment card number" page, 2024): `(low, high,
/// prefix digits, shortest, longest)`. A number belongs to a network when
/// its first `prefix digits` digits lie in `low..=high` and its length in
/// `shortest..=longest`.
///
/// Broad on purpose: a missed card leaks, while the Luhn check (one random
/// digit run in ten passes it) and the 13–19 length keep look-alikes out.
/// Prefix 7 (fleet and petroleum cards) and 0 have no network here.
pub const IIN_RANGES: &[(u32, u32, usize, usize, usize)] = &[
    // UATP
    (1, 1, 1, 15, 15),
    // Mir, BORICA
    (2200, 2205, 4, 16, 19),
    // Mastercard 2-series
    (2221, 2720, 4, 16, 16),
    // China T-Union
    (31, 31, 2, 19, 19),
    // Diners Club International / Carte Blanche
    (300, 305, 3, 14, 19),
    (3095, 3095, 4, 14, 19),
    (36, 36, 2, 14, 19),
    (38, 39, 2, 14, 19),
    // American Express
    (34, 34, 2, 15, 15),
    (37, 37, 2, 15, 15),
    // JCB
    (3528, 3589, 4, 16, 19),
    // Hipercard
    (3841, 3841, 4, 16, 19),
    // Visa, Visa Electron, Elo (4011, 4312, 4389)
    (4, 4, 1, 13, 13),
    (4, 4, 1, 16, 16),
    (4, 4, 1, 19, 19),
    // Maestro (50, 56–59), Dankort (5019), Verve (506099–506198), Elo
    (50, 50, 2, 13, 19),
    // Mastercard
    (51, 55, 2, 16, 16),
    (56, 59, 2, 13, 19),
    // Maestro (60–69 where no other network), RuPay (60, 65), Discover (6011,
    // 644–649, 65), UnionPay (62), InterPayment (636), InstaPayment (637–639),
    // Troy-like national schemes
    (60, 69, 2, 13, 19),
    // UnionPay (81), RuPay (81, 82), UzCard (8600)
    (81, 82, 2, 16, 19),
    (8600, 8600, 4, 16, 16),
    // Napas (9704), Troy (9792), Humo (9860)
    (9704, 9704, 4, 16, 19),
    (9792, 9792, 4, 16, 16),
    (9860, 9860, 4, 16, 16),
];

/// True when `digits` (13–19 ASCII digits) has the IIN and length of a
/// payment card network in [`IIN_RANGES`].
pub fn card_iin_known(digits: &[u8]) -> bool {
    if !all_digits(digits) || digits.len() < 13 || digits.len() > 19 {
        return false;
    }
    let len = digits.len();
    IIN_RANGES
        .iter()
        .any(|&(low, high, prefix, shortest, longest)| {
            (shortest..=longest).contains(&len) && (low..=high).contains(&num(&digits[..prefix]))
        })
}

/// A payment card number: a known IIN and length ([`card_iin_known`]) that
/// passes the Luhn check ([`luhn_valid`]).
pub fn card_valid(digits: &[u8]) -> bool {
    card_iin_known(digits) && luhn_valid(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every single-digit change of a Luhn-valid number breaks the check.
    fn all_single_changes_fail(pan: &str) {
        let bytes = pan.as_bytes();
        for i in 0..bytes.len() {
            for d in b'0'..=b'9' {
                if d == bytes[i] {
                    continue;
                }
                let mut v = bytes.to_vec();
                v[i] = d;
                assert!(
                    !luhn_valid(&v),
                    "{} passes Luhn",
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }

    #[test]
    fn luhn_known_test_pans() {
        for pan in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "4012888888881881",
            "5105105105105100",
            "371449635398431",
            "30569309025904",
            "38520000023237",
            "6011000990139424",
            "3566002020360505",
            "4222222222222",
            "2223003122003222",
            "6200000000000005",
        ] {
            assert!(luhn_valid(pan.as_bytes()), "{pan}");
            assert!(card_iin_known(pan.as_bytes()), "{pan}");
            assert!(card_valid(pan.as_bytes()), "{pan}");
            all_single_changes_fail(pan);
        }
    }

    #[test]
    fn luhn_rejects_garbage() {
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"4111 1111 1111 1111"));
        assert!(!luhn_valid(b"411111111111111a"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(luhn_valid(b"0"));
        assert!(luhn_valid(b"18"));
        assert!(!luhn_valid(b"19"));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_valid(123, 45, 6789));
        assert!(ssn_valid(1, 1, 1));
        assert!(ssn_valid(899, 99, 9999));
        assert!(ssn_valid(665, 1, 1));
        assert!(ssn_valid(667, 1, 1));
        // Area 000, 666, 900-999.
        assert!(!ssn_valid(0, 45, 6789));
        assert!(!ssn_valid(666, 45, 6789));
        for area in 900..=999 {
            assert!(!ssn_valid(area, 45, 6789), "{area}");
        }
        assert!(!ssn_valid(1000, 45, 6789));
        // Group 00, serial 0000.
        assert!(!ssn_valid(123, 0, 6789));
        assert!(!ssn_valid(123, 45, 0));
        assert!(!ssn_valid(123, 100, 6789));
        assert!(!ssn_valid(123, 45, 10000));
        // Invalidated numbers.
        assert!(!ssn_valid(78, 5, 1120));
        assert!(!ssn_valid(219, 9, 9999));
        assert!(ssn_valid(78, 5, 1121));
        assert!(ssn_valid(219, 9, 9998));
    }

    #[test]
    fn itin_group_ranges() {
        let ok = |g| itin_valid(912, g, 1234);
        for g in [50, 51, 64, 65, 70, 71, 87, 88, 90, 91, 92, 94, 95, 98, 99] {
            assert!(ok(g), "{g}");
        }
        for g in [0, 1, 10, 49, 66, 67, 68, 69, 89, 93, 100] {
            assert!(!ok(g), "{g}");
        }
        assert!(itin_valid(900, 70, 0));
        assert!(itin_valid(999, 99, 9999));
        assert!(!itin_valid(899, 70, 1234));
        assert!(!itin_valid(1000, 70, 1234));
        assert!(!itin_valid(912, 70, 10000));
        // SSA advertising block.
        assert!(!itin_valid(987, 65, 4320));
        assert!(!itin_valid(987, 65, 4329));
        assert!(itin_valid(987, 65, 4330));
        assert!(itin_valid(987, 65, 4319));
        // ITINs and SSNs are disjoint.
        for area in 900..=999 {
            for g in 0..=99 {
                assert!(!(itin_valid(area, g, 1) && ssn_valid(area, g, 1)));
            }
        }
    }

    #[test]
    fn ein_prefixes() {
        let valid: Vec<u8> = (0..=99).filter(|&p| ein_prefix_valid(p)).collect();
        let expected: Vec<u8> = [
            1..=6,
            10..=16,
            20..=27,
            30..=48,
            50..=68,
            71..=77,
            80..=88,
            90..=95,
            98..=99,
        ]
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(valid, expected);
        for p in [
            0, 7, 8, 9, 17, 18, 19, 28, 29, 49, 69, 70, 78, 79, 89, 96, 97, 100, 255,
        ] {
            assert!(!ein_prefix_valid(p), "{p}");
        }
        for p in [
            1, 6, 10, 16, 20, 27, 30, 31, 47, 48, 50, 68, 71, 77, 80, 88, 90, 95, 98, 99,
        ] {
            assert!(ein_prefix_valid(p), "{p}");
        }
    }

    #[test]
    fn aba_checksum_and_prefix() {
        for rtn in [
            b"021000021", // JPMorgan Chase NY
            b"011000015", // Federal Reserve Boston
            b"122105155", // Wells Fargo AZ
            b"011401533",
            b"091000019",
            b"026009593",
            b"061000052",
            b"111000025",
            b"121000358",
            b"322271627",
        ] {
            assert!(aba_valid(rtn), "{}", String::from_utf8_lossy(rtn));
            for i in 0..9 {
                for d in b'0'..=b'9' {
                    if d == rtn[i] {
                        continue;
                    }
                    let mut v = *rtn;
                    v[i] = d;
                    assert!(!aba_valid(&v), "{}", String::from_utf8_lossy(&v));
                }
            }
        }
        // Checksum fine, prefix not a routing symbol (13-20, 33-60, 73-79, 81-99).
        assert!(!aba_valid(b"130000006"));
        assert!(!aba_valid(b"990000000"));
        assert!(!aba_valid(b"500000005"));
        assert!(!aba_valid(b"02100002a"));
        // 80 is a valid prefix.
        let mut v = *b"800000006";
        assert!(aba_valid(&v));
        v[8] = b'1';
        assert!(!aba_valid(&v));
    }

    #[test]
    fn iin_ranges_and_lengths() {
        let pan = |prefix: &str, len: usize| {
            let mut v = prefix.as_bytes().to_vec();
            v.resize(len, b'0');
            v
        };
        let ok = |p: &str, l: usize| card_iin_known(&pan(p, l));
        assert!(ok("4", 13) && ok("4", 16) && ok("4", 19));
        assert!(!ok("4", 14) && !ok("4", 15) && !ok("4", 17));
        for p in ["51", "55", "2221", "2720", "2500"] {
            assert!(ok(p, 16), "{p}");
            assert!(!ok(p, 15), "{p}");
        }
        // Maestro, Mir, UATP, UnionPay 81, RuPay, Troy, Humo, Napas.
        for (p, l) in [
            ("50", 16),
            ("56", 13),
            ("2200", 16),
            ("1", 15),
            ("81", 16),
            ("82", 16),
            ("9792", 16),
            ("9860", 16),
            ("9704", 19),
            ("6", 19),
        ] {
            assert!(ok(p, l), "{p} {l}");
        }
        for p in ["2206", "2721", "7", "80", "9", "0", "33"] {
            assert!(!ok(p, 16), "{p}");
        }
        assert!(!ok("1", 16));
        assert!(ok("34", 15) && ok("37", 15) && !ok("34", 16) && !ok("33", 15));
        for p in ["6011", "644", "649", "65", "622126", "622925", "62"] {
            assert!(ok(p, 16), "{p}");
            assert!(ok(p, 19), "{p}");
        }
        for p in ["6010", "643", "60", "63", "64", "66", "67", "68", "69"] {
            assert!(ok(p, 16), "{p}: Maestro and national schemes");
        }
        for p in ["3528", "3589"] {
            assert!(ok(p, 16), "{p}");
            assert!(!ok(p, 15), "{p}");
        }
        assert!(!ok("3527", 16) && !ok("3590", 16));
        for p in ["300", "305", "36", "38", "39"] {
            assert!(ok(p, 14), "{p}");
            assert!(!ok(p, 13), "{p}");
        }
        assert!(!ok("306", 14) && !ok("31", 16) && !ok("32", 16));
        assert!(!card_iin_known(b"411111111111"));
        assert!(!card_iin_known(b"41111111111111111111"));
        assert!(!card_iin_known(b"411111111111111x"));
    }
}
