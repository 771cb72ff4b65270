//! DecodingRewriter around the JSON rewriter: no panic, bounded memory, and
//! (for bodies this target compresses itself) the same result as rewriting
//! the plain body.
//!
//! Header bits 3-4 pick the coding (0-1 gzip, 2 deflate, 3 br); bit 5 set
//! means "the body is plain JSON: compress it first", clear means "the body
//! is the compressed stream as it is".
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use maskgate::rewrite::encoding::{Coding, DecodeLimits, DecodingRewriter};
use maskgate::rewrite::{JsonRewriter, RewriteSpec};
use maskgate_fuzz::{drive, json_valid, spec, split, Input, Outcome};

/// Largest decoded body the target lets through; a bomb must fail here.
const MAX_DECODED: u64 = 8 << 20;

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_decompressed_bytes: MAX_DECODED,
        max_ratio: 200,
    }
}

fn inner(spec: &RewriteSpec) -> JsonRewriter {
    JsonRewriter::new(spec.clone()).allow_empty(true)
}

fn run(coding: Coding, spec: &RewriteSpec, chunks: &[&[u8]]) -> Outcome {
    let mut rw = DecodingRewriter::new(coding, Box::new(inner(spec)), limits());
    drive(&mut rw, chunks)
}

fn compress(coding: Coding, plain: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        Coding::Br => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 18);
                w.write_all(plain).unwrap();
            }
            out
        }
    }
}

/// Decodes what the rewriter wrote (an empty output stays empty).
fn decode(coding: Coding, encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if encoded.is_empty() {
        return out;
    }
    let r = match coding {
        Coding::Gzip => flate2::read::MultiGzDecoder::new(encoded).read_to_end(&mut out),
        Coding::Deflate => flate2::read::ZlibDecoder::new(encoded).read_to_end(&mut out),
        Coding::Br => brotli::Decompressor::new(encoded, 4096).read_to_end(&mut out),
    };
    r.expect("the rewriter's output does not decode");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let coding = match input.variant {
        0 | 1 => Coding::Gzip,
        2 => Coding::Deflate,
        _ => Coding::Br,
    };
    let spec = spec(u8::from(input.extra & 2 != 0));
    let precompress = input.extra & 1 != 0;

    let compressed;
    let body = if precompress {
        compressed = compress(coding, input.body);
        &compressed[..]
    } else {
        input.body
    };
    let whole = run(coding, &spec, &[body]);
    let split = run(coding, &spec, &split(body, input.sizes));
    let decoded = |o: &Outcome| {
        o.as_ref()
            .map(|(out, counts)| (decode(coding, out), counts.clone()))
            .map_err(|_| ())
    };
    let whole_plain = decoded(&whole);
    assert_eq!(whole_plain, decoded(&split), "result depends on chunking");

    if let Ok((plain_out, _)) = &whole_plain {
        assert!(
            (plain_out.len() as u64) < 2 * MAX_DECODED,
            "output larger than the limit allows"
        );
        // `allow_empty`: a body with no document (empty or blank) passes as it is.
        let blank = plain_out
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        assert!(blank || json_valid(plain_out), "decoded output is not JSON");
    }
    if precompress {
        // Same as rewriting the plain body directly.
        let direct = drive(&mut inner(&spec), &[input.body]).map_err(|_| ());
        assert_eq!(whole_plain, direct, "coded and plain rewrites differ");
    }
});
