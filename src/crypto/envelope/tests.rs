// Compiled only under #[cfg(test)] (see the parent module).
use super::dangerous::FixedNonce;
use super::*;
use crate::rewrite::mask;
use proptest::prelude::*;

fn key(id: &str, fill: u8) -> DataKey {
    DataKey::from_bytes(KeyId::new(id).unwrap(), &[fill; KEY_LEN])
}

fn kat_key() -> DataKey {
    let mut b = [0u8; KEY_LEN];
    for (i, x) in b.iter_mut().enumerate() {
        *x = i as u8;
    }
    DataKey::from_bytes(KeyId::new("k1").unwrap(), &b)
}

const KAT_NONCE: [u8; NONCE_LEN] = [
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
];

/// The envelope computed independently with ring's AES-256-GCM and the
/// associated data written out by hand from the documented format.
fn ring_envelope(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], head: &str, pt: &str) -> String {
    use ring::aead;
    let k = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key).unwrap());
    let mut buf = pt.as_bytes().to_vec();
    k.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(aad),
        &mut buf,
    )
    .unwrap();
    let mut body = nonce.to_vec();
    body.extend_from_slice(&buf);
    format!("{head}{}", URL_SAFE_NO_PAD.encode(body))
}

#[test]
fn known_answer_card_number() {
    let k = kat_key();
    let env = seal(
        &k,
        FieldClass::CardNumber,
        "4111 1111 1111 1111",
        &FixedNonce(KAT_NONCE),
    )
    .unwrap();
    assert_eq!(
        env,
        "mg1.k1.1111.oKGio6Slpqeoqaqr0ilNHGX6M45TRbbiNkvg70GdaP4x5A4pBsJvXZYcIA0HNrA"
    );
    let independent = ring_envelope(
        k.secret(),
        KAT_NONCE,
        b"maskgate-envelope-v1\0card_number\0k1\x001111",
        "mg1.k1.1111.",
        "4111 1111 1111 1111",
    );
    assert_eq!(env, independent);
    assert_eq!(
        &*open(&k, FieldClass::CardNumber, &env).unwrap(),
        "4111 1111 1111 1111"
    );
}

#[derive(serde::Deserialize)]
struct Vector {
    key_hex: String,
    key_id: String,
    nonce_hex: String,
    class: String,
    plaintext: String,
    aad_hex: String,
    envelope: String,
}

/// The vectors in `tests/data/crypto/envelope_kat.json`: each must seal to
/// the recorded envelope, agree with ring, and open back.
#[test]
fn known_answer_vectors_from_file() {
    let vectors: Vec<Vector> =
        serde_json::from_str(include_str!("../../../tests/data/crypto/envelope_kat.json")).unwrap();
    assert!(vectors.len() >= 4);
    for v in vectors {
        let mut kb = [0u8; 32];
        hex::decode_to_slice(&v.key_hex, &mut kb).unwrap();
        let mut nonce = [0u8; 12];
        hex::decode_to_slice(&v.nonce_hex, &mut nonce).unwrap();
        let class = FieldClass::from_name(&v.class).unwrap();
        let k = DataKey::from_bytes(KeyId::new(&v.key_id).unwrap(), &kb);
        let env = seal(&k, class, &v.plaintext, &FixedNonce(nonce)).unwrap();
        assert_eq!(env, v.envelope, "{}", v.class);
        let parsed = parse(&env).unwrap();
        let aad = hex::decode(&v.aad_hex).unwrap();
        assert_eq!(
            super::aad(class, parsed.key_id(), parsed.last4().as_bytes(), None),
            aad
        );
        let head = format!("mg1.{}.{}.", parsed.key_id(), parsed.last4());
        assert_eq!(env, ring_envelope(&kb, nonce, &aad, &head, &v.plaintext));
        assert_eq!(*open(&k, class, &env).unwrap(), v.plaintext);
    }
}

fn sample(class: FieldClass) -> &'static str {
    match class {
        FieldClass::Ssn => "123-45-6789",
        FieldClass::Tin => "12-3456789",
        FieldClass::Dln => "D1234567",
        FieldClass::Passport => "X12345678",
        FieldClass::CardNumber => "4111 1111 1111 1111",
        FieldClass::CardExpiry => "12/27",
        FieldClass::BankAccount => "000123456789",
        FieldClass::BankRouting => "021000021",
        FieldClass::Dob => "1980-01-31",
    }
}

#[test]
fn round_trip_every_class_and_agree_with_the_rewriter_view() {
    let k = key("k7", 3);
    let nonces = SystemNonces::new();
    for class in FieldClass::ALL {
        let pt = sample(class);
        let env = seal(&k, class, pt, &nonces).unwrap();
        assert_eq!(&*open(&k, class, &env).unwrap(), pt, "{class}");
        assert!(!env.contains(pt));
        let view = mask::envelope_view(&env).expect("rewriter must read the public parts");
        assert_eq!(view.key_id, "k7");
        let want = std::str::from_utf8(&public_last4(pt).unwrap())
            .unwrap()
            .to_owned();
        assert_eq!(view.last4, want);
        assert!(env.starts_with(mask::ENVELOPE_PREFIX));
    }
    assert_eq!(PREFIX, mask::ENVELOPE_PREFIX);
}

#[test]
fn last4_rules() {
    assert_eq!(&public_last4("4111 1111 1111 1234").unwrap(), b"1234");
    assert_eq!(&public_last4("AB12-34cd").unwrap(), b"34cd");
    // Short values show nothing of themselves.
    assert_eq!(&public_last4("12/27").unwrap(), b"xxxx");
    assert_eq!(&public_last4("1234567").unwrap(), b"xxxx");
    assert_eq!(&public_last4("12345678").unwrap(), b"5678");
    assert_eq!(public_last4("1/27"), None);
    assert_eq!(public_last4(""), None);
    // Non-ASCII letters are not shown (the envelope view takes ASCII only).
    assert_eq!(&public_last4("1234567é8").unwrap(), b"5678");
    let k = key("k1", 1);
    let n = SystemNonces::new();
    assert!(matches!(
        seal(&k, FieldClass::CardExpiry, "1/27", &n),
        Err(EnvelopeError::PlaintextTooShort)
    ));
    assert!(matches!(
        seal(
            &k,
            FieldClass::CardNumber,
            &"1".repeat(MAX_PLAINTEXT_LEN + 1),
            &n
        ),
        Err(EnvelopeError::PlaintextTooLong)
    ));
    let longest = "1".repeat(MAX_PLAINTEXT_LEN);
    let env = seal(&k, FieldClass::CardNumber, &longest, &n).unwrap();
    assert!(env.len() <= MAX_ENVELOPE_LEN);
    assert_eq!(*open(&k, FieldClass::CardNumber, &env).unwrap(), longest);
    let short = seal(&k, FieldClass::CardExpiry, "12/27", &n).unwrap();
    assert!(short.starts_with("mg1.k1.xxxx."));
    assert!(mask::envelope_view(&short).is_some());
}

fn body_bytes(env: &str) -> (String, Vec<u8>) {
    let cut = env.rfind('.').unwrap() + 1;
    (
        env[..cut].to_owned(),
        URL_SAFE_NO_PAD.decode(&env[cut..]).unwrap(),
    )
}

#[test]
fn every_bit_flip_of_nonce_ciphertext_and_tag_fails() {
    let k = key("k1", 5);
    let env = seal(
        &k,
        FieldClass::CardNumber,
        "4111 1111 1111 1111",
        &SystemNonces::new(),
    )
    .unwrap();
    let (head, body) = body_bytes(&env);
    assert_eq!(body.len(), NONCE_LEN + 19 + TAG_LEN);
    for i in 0..body.len() {
        for bit in 0..8 {
            let mut b = body.clone();
            b[i] ^= 1 << bit;
            let forged = format!("{head}{}", URL_SAFE_NO_PAD.encode(&b));
            assert!(
                matches!(
                    open(&k, FieldClass::CardNumber, &forged),
                    Err(EnvelopeError::Integrity)
                ),
                "byte {i} bit {bit}"
            );
        }
    }
}

#[test]
fn key_id_last4_and_class_are_bound() {
    let k1 = key("k1", 5);
    // Same key bytes under another id: only the associated data differs.
    let k2 = key("k2", 5);
    let pan = "4111 1111 1111 1111";
    let env = seal(&k1, FieldClass::CardNumber, pan, &SystemNonces::new()).unwrap();
    let moved = env.replacen("mg1.k1.", "mg1.k2.", 1);
    assert!(matches!(
        open(&k2, FieldClass::CardNumber, &moved),
        Err(EnvelopeError::Integrity)
    ));
    // Naming a key that is not the one given is refused before decrypting.
    assert!(matches!(
        open(&k1, FieldClass::CardNumber, &moved),
        Err(EnvelopeError::UnknownKeyId)
    ));
    for fake in ["1112", "0000", "xxxx", "111A"] {
        let changed = env.replacen(".1111.", &format!(".{fake}."), 1);
        assert!(matches!(
            open(&k1, FieldClass::CardNumber, &changed),
            Err(EnvelopeError::Integrity)
        ));
    }
    for class in FieldClass::ALL {
        if class != FieldClass::CardNumber {
            assert!(matches!(
                open(&k1, class, &env),
                Err(EnvelopeError::Integrity)
            ));
        }
    }
}

#[test]
fn last4_must_match_the_plaintext_even_when_authentic() {
    // A faulty sealer that authenticated a wrong last four with the right key.
    let k = kat_key();
    let pan = "4111 1111 1111 1111";
    let env = ring_envelope(
        k.secret(),
        KAT_NONCE,
        b"maskgate-envelope-v1\0card_number\0k1\x009999",
        "mg1.k1.9999.",
        pan,
    );
    assert!(matches!(
        open(&k, FieldClass::CardNumber, &env),
        Err(EnvelopeError::Integrity)
    ));
}

#[test]
fn truncation_and_appending_fail() {
    let k = key("k1", 9);
    let env = seal(
        &k,
        FieldClass::CardNumber,
        "4111 1111 1111 1111",
        &SystemNonces::new(),
    )
    .unwrap();
    for len in 0..env.len() {
        assert!(
            open(&k, FieldClass::CardNumber, &env[..len]).is_err(),
            "len {len}"
        );
    }
    for tail in [
        "A", "AA", "AAA", "AAAA", "=", "==", ".", ".x", " ", "\n", "\0",
    ] {
        let longer = format!("{env}{tail}");
        assert!(
            open(&k, FieldClass::CardNumber, &longer).is_err(),
            "{tail:?}"
        );
    }
    let lead = format!(" {env}");
    assert!(open(&k, FieldClass::CardNumber, &lead).is_err());
}

#[test]
fn parse_names_what_is_wrong() {
    let k = key("k1", 9);
    let env = seal(
        &k,
        FieldClass::CardNumber,
        "4111 1111 1111 1111",
        &SystemNonces::new(),
    )
    .unwrap();
    let (head, body) = body_bytes(&env);
    let b64 = URL_SAFE_NO_PAD.encode(&body);
    assert_eq!(b64.len() % 4, 3, "the last symbol has two spare bits");
    let m = |s: &str| match parse(s) {
        Err(EnvelopeError::Malformed(m)) => Some(m),
        _ => None,
    };
    // Non-canonical: the spare low bits of the last symbol set.
    let mut nc = b64.clone().into_bytes();
    let last = nc.len() - 1;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let pos = alphabet.iter().position(|&c| c == nc[last]).unwrap();
    nc[last] = alphabet[pos ^ 1];
    let nc = format!("{head}{}", String::from_utf8(nc).unwrap());
    assert_eq!(m(&nc), Some(Malformation::NonCanonicalBase64));
    assert!(open(&k, FieldClass::CardNumber, &nc).is_err());
    assert_eq!(m(&format!("{env}=")), Some(Malformation::BadBase64));
    assert_eq!(
        m(&format!("{head}{}", STANDARD_ALPHABET_BODY)),
        Some(Malformation::BadBase64)
    );
    assert_eq!(m(&format!("{env}.x")), Some(Malformation::TrailingPart));
    assert_eq!(m("mg1.k1.1111"), Some(Malformation::MissingPart));
    assert_eq!(m("mg1.k1.1111."), Some(Malformation::MissingPart));
    assert_eq!(m(&format!("mg1..1111.{b64}")), Some(Malformation::BadKeyId));
    assert_eq!(
        m(&format!("mg1.{}.1111.{b64}", "k".repeat(65))),
        Some(Malformation::BadKeyId)
    );
    assert_eq!(
        m(&format!("mg1.k 1.1111.{b64}")),
        Some(Malformation::BadKeyId)
    );
    assert_eq!(
        m(&format!("mg1.k1.111.{b64}")),
        Some(Malformation::BadLast4)
    );
    assert_eq!(
        m(&format!("mg1.k1.11-1.{b64}")),
        Some(Malformation::BadLast4)
    );
    assert_eq!(
        m(&format!(
            "mg1.k1.1111.{}",
            URL_SAFE_NO_PAD.encode([0u8; 31])
        )),
        Some(Malformation::BodyTooShort)
    );
    assert_eq!(
        m(&format!("mg1.k1.1111.{}", "A".repeat(MAX_ENVELOPE_LEN))),
        Some(Malformation::TooLong)
    );
    assert_eq!(m("4111111111111111"), Some(Malformation::NotAnEnvelope));
    assert_eq!(m("MG1.k1.1111.AAAA"), Some(Malformation::NotAnEnvelope));
    assert!(matches!(
        parse(&env.replacen("mg1.", "mg3.", 1)),
        Err(EnvelopeError::UnknownVersion)
    ));
    assert!(matches!(
        parse(&env.replacen("mg1.", "mg10.", 1)),
        Err(EnvelopeError::UnknownVersion)
    ));
    // Errors name facts and never echo input.
    let msg = EnvelopeError::Malformed(Malformation::BadLast4).to_string();
    assert_eq!(msg, "malformed envelope: bad last four");
}

const STANDARD_ALPHABET_BODY: &str =
    "oKGio6SlpqeoqaqrKOpChf1Iv/kL3cxyjqLXIC4B2P1ctRFtVfphH6Jl0jy+zqxkfeDD";

#[test]
fn debug_never_shows_key_bytes() {
    let bytes = [0x5a_u8; KEY_LEN];
    let k = DataKey::from_bytes(KeyId::new("k1").unwrap(), &bytes);
    let dbg = format!(
        "{k:?} {:?}",
        parse(&seal(&k, FieldClass::Ssn, "123456789", &SystemNonces::new()).unwrap()).unwrap()
    );
    assert!(!dbg.to_lowercase().contains("5a5a"), "{dbg}");
    assert!(!dbg.contains("WlpaWl"), "{dbg}");
    assert!(!dbg.contains("90, 90"), "{dbg}");
    assert!(dbg.contains("k1"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_value_round_trips(pt in "[0-9A-Za-z -/é]{0,80}", class_i in 0usize..FieldClass::COUNT) {
        let class = FieldClass::ALL[class_i];
        let k = key("k1", 11);
        match seal(&k, class, &pt, &SystemNonces::new()) {
            Ok(env) => {
                prop_assert_eq!(&*open(&k, class, &env).unwrap(), pt.as_str());
                prop_assert!(mask::envelope_view(&env).is_some());
            }
            Err(EnvelopeError::PlaintextTooShort) => {
                prop_assert!(pt.bytes().filter(u8::is_ascii_alphanumeric).count() < 4);
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn any_single_character_change_fails(
        at in 0usize..200,
        with in proptest::char::range('!', '~'),
    ) {
        let k = key("k1", 13);
        let env = seal(&k, FieldClass::CardNumber, "4111 1111 1111 1111", &SystemNonces::new()).unwrap();
        let at = at % env.len();
        let mut chars: Vec<char> = env.chars().collect();
        prop_assume!(chars[at] != with);
        chars[at] = with;
        let changed: String = chars.into_iter().collect();
        prop_assert!(open(&k, FieldClass::CardNumber, &changed).is_err());
    }

    #[test]
    fn parse_never_panics(s in "mg1\\.[a-z0-9._-]{0,120}") {
        let _ = parse(&s);
    }
}

#[test]
fn bound_envelopes_open_only_for_their_account() {
    const CARD: FieldClass = FieldClass::CardNumber;
    let key = DataKey::from_bytes(KeyId::new("k1").unwrap(), &[7; KEY_LEN]);
    let pan = "4111 1111 1111 1111";
    let bound = seal_bound(&key, CARD, pan, "ACC-1", &SystemNonces::new()).unwrap();
    assert!(bound.starts_with("mg2.k1.1111."), "{bound}");
    assert!(parse(&bound).unwrap().is_bound());
    assert_eq!(
        &*open_bound(&key, CARD, &bound, Some("ACC-1")).unwrap(),
        pan
    );
    for other in [Some("ACC-2"), Some("ACC-1 "), Some(""), None] {
        assert!(
            matches!(
                open_bound(&key, CARD, &bound, other),
                Err(EnvelopeError::Integrity)
            ),
            "{other:?}"
        );
    }
    // The v1 form of the same body does not open either (other label).
    let as_v1 = bound.replacen("mg2.", "mg1.", 1);
    assert!(open_bound(&key, CARD, &as_v1, Some("ACC-1")).is_err());
    // Unbound envelopes open for any account.
    let unbound = seal(&key, CARD, pan, &SystemNonces::new()).unwrap();
    assert_eq!(
        &*open_bound(&key, CARD, &unbound, Some("ACC-9")).unwrap(),
        pan
    );
    assert!(matches!(
        seal_bound(&key, CARD, pan, "A\u{0}B", &SystemNonces::new()),
        Err(EnvelopeError::BadAccountId)
    ));
}
