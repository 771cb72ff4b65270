// Compiled only under #[cfg(test)] (see the parent module).
//! Issue #14's property: a planted red-flag value survives no split point,
//! no escape form and no content coding. Run against the rewriters exactly
//! as the gateway builds them ([`content::rewriter_for`]).

use std::io::{Read, Write};
use std::sync::Arc;

use proptest::prelude::*;

use super::content::{rewriter_for, BodyKind, Coding, DecodeLimits};
use super::{Limits, RewriteSpec, RulesBuilder};
use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::{DetectorSet, Detectors};

const SSN: &str = "123-45-6789";
const CARD: &str = "4111111111111111";
const DLN: &str = "D1234567";

fn spec() -> RewriteSpec {
    let mut b = RulesBuilder::new();
    b.detectors(DetectorSet::ALL);
    b.class_name("ssn", FieldClass::Ssn).unwrap();
    b.class_name("drivers_license", FieldClass::Dln).unwrap();
    b.class_name("card_number", FieldClass::CardNumber).unwrap();
    RewriteSpec {
        rules: Arc::new(b.build()),
        actions: ActionTable::uniform(Action::Last4),
        detectors: Arc::new(Detectors::new()),
        limits: Limits::default(),
        opener: None,
        drop_accounts: None,
    }
}

/// The planted values, in the spellings a leak would show.
fn leaked(out: &[u8]) -> Option<&'static str> {
    [SSN, "123456789", CARD, "4111 1111 1111 1111", DLN]
        .into_iter()
        .find(|v| out.windows(v.len()).any(|w| w == v.as_bytes()))
}

/// Rewrites `body` (coded with `codings`) cut at `cuts` (offsets, any order).
fn rewrite_cut(kind: BodyKind, codings: &[Coding], body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut rw = rewriter_for(kind, spec(), codings, DecodeLimits::default()).unwrap();
    let mut points: Vec<usize> = cuts.iter().map(|&c| c % (body.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain([body.len()]) {
        rw.write(&body[last..p], &mut out).unwrap();
        last = p;
    }
    rw.finish(&mut out).unwrap();
    out
}

/// The bodies of one record, in every format, declared as the gateway
/// would see them.
fn bodies() -> Vec<(BodyKind, String)> {
    let json = format!(
        r#"{{"id":"1000234","ssn":"{SSN}","drivers_license":"{DLN}","notes":"card 4111 1111 1111 1111 on file"}}"#
    );
    vec![
        (BodyKind::Json, json.clone()),
        (BodyKind::Ndjson, format!("{json}\n{json}\n")),
        (BodyKind::Text, json.clone()),
        (
            BodyKind::Csv,
            format!("id,ssn,drivers_license,notes\n1000234,{SSN},{DLN},card {CARD}\n"),
        ),
        (
            BodyKind::Text,
            format!("id;ssn;drivers_license\n1000234;{SSN};{DLN}\n"),
        ),
        (
            BodyKind::Text,
            format!("Customer 1000234\nSSN: {SSN}\nDriver's license: {DLN}\ncard {CARD}\n"),
        ),
    ]
}

fn encode(coding: Coding, level: u32, plain: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        Coding::Deflate if level % 2 == 0 => {
            let mut e =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        Coding::Deflate => {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        Coding::Br => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, level, 22);
                e.write_all(plain).unwrap();
            }
            out
        }
    }
}

fn decode(coding: Coding, coded: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        Coding::Gzip => flate2::read::MultiGzDecoder::new(coded)
            .read_to_end(&mut out)
            .unwrap(),
        Coding::Deflate => flate2::read::ZlibDecoder::new(coded)
            .read_to_end(&mut out)
            .unwrap(),
        Coding::Br => brotli::Decompressor::new(coded, 4096)
            .read_to_end(&mut out)
            .unwrap(),
    };
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No split point lets a value through, and the output is the same
    /// however the body is cut.
    #[test]
    fn no_split_point(which in 0usize..6, cuts in proptest::collection::vec(any::<usize>(), 1..4)) {
        let (kind, body) = &bodies()[which];
        let whole = rewrite_cut(*kind, &[], body.as_bytes(), &[]);
        prop_assert_eq!(leaked(&whole), None, "{}", String::from_utf8_lossy(&whole));
        let cut = rewrite_cut(*kind, &[], body.as_bytes(), &cuts);
        prop_assert_eq!(cut, whole);
    }

    /// No escape form of the digits (any subset `\u`-escaped, upper or lower
    /// case hex) lets a named value through.
    #[test]
    fn no_escape_form(mask in proptest::collection::vec(any::<bool>(), 11), upper in any::<bool>()) {
        let mut written = String::new();
        for (c, esc) in SSN.chars().zip(&mask) {
            if *esc {
                let e = format!("\\u{:04x}", c as u32);
                written.push_str(&if upper { e.to_uppercase().replace("\\U", "\\u") } else { e });
            } else {
                written.push(c);
            }
        }
        let body = format!(r#"{{"ssn":"{written}","id":"1000234"}}"#);
        for kind in [BodyKind::Json, BodyKind::Ndjson, BodyKind::Text] {
            let out = rewrite_cut(kind, &[], body.as_bytes(), &[]);
            prop_assert_eq!(leaked(&out), None, "{}", String::from_utf8_lossy(&out));
            prop_assert!(!String::from_utf8_lossy(&out).contains(&written), "{}", String::from_utf8_lossy(&out));
        }
    }

    /// No content coding (gzip, zlib, raw deflate, brotli, at any level)
    /// and no cut of the coded stream lets a value through.
    #[test]
    fn no_encoding(which in 0usize..6, coding in 0usize..3, level in 0u32..10, cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let coding = [Coding::Gzip, Coding::Deflate, Coding::Br][coding];
        let (kind, body) = &bodies()[which];
        let coded = encode(coding, level, body.as_bytes());
        let out = rewrite_cut(*kind, &[coding], &coded, &cuts);
        let plain = decode(coding, &out);
        prop_assert_eq!(leaked(&plain), None, "{}", String::from_utf8_lossy(&plain));
        prop_assert_eq!(plain, rewrite_cut(*kind, &[], body.as_bytes(), &[]));
    }
}
