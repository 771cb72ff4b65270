// Compiled only under #[cfg(test)] (see the parent module).
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::{Compression, GzBuilder};

use super::*;
use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::Detectors;
use crate::rewrite::csv::CsvRewriter;
use crate::rewrite::{rewrite_all, JsonRewriter, Limits, RewriteSpec, RulesBuilder};

fn spec() -> RewriteSpec {
    let mut b = RulesBuilder::new();
    b.class_name("ssn", FieldClass::Ssn).unwrap();
    RewriteSpec {
        rules: Arc::new(b.build()),
        actions: ActionTable::uniform(Action::Last4),
        detectors: Arc::new(Detectors::new()),
        limits: Limits::default(),
        opener: None,
        drop_accounts: None,
    }
}

fn csv_body(rows: usize) -> Vec<u8> {
    let mut body = b"id,ssn,name\r\n".to_vec();
    for i in 0..rows {
        body.extend_from_slice(
            format!("{i},123-45-{:04},\"Name, {i}\"\r\n", i % 10_000).as_bytes(),
        );
    }
    body
}

fn plain_rewrite(body: &[u8]) -> Vec<u8> {
    rewrite_all(&mut CsvRewriter::new(spec()), body).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn br(data: &[u8]) -> Vec<u8> {
    let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    e.write_all(data).unwrap();
    e.into_inner()
}

fn compress(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => gzip(data),
        Coding::Deflate => zlib(data),
        Coding::Br => br(data),
    }
}

/// Decodes a whole stream with the crates' own readers (strictly: errors fail).
fn decompress(coding: Coding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        Coding::Gzip => flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap(),
        Coding::Deflate => flate2::read::ZlibDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap(),
        Coding::Br => brotli::Decompressor::new(data, 4096)
            .read_to_end(&mut out)
            .unwrap(),
    };
    out
}

/// Decodes what a stream's prefix holds so far (up to where it stops).
fn decompress_prefix(coding: Coding, data: &[u8]) -> Vec<u8> {
    let mut reader: Box<dyn Read + '_> = match coding {
        Coding::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
        Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(data)),
        Coding::Br => Box::new(brotli::Decompressor::new(data, 4096)),
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = reader.read(&mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    out
}

const CODINGS: [Coding; 3] = [Coding::Gzip, Coding::Deflate, Coding::Br];

fn csv_rewriter(coding: Coding) -> DecodingRewriter {
    DecodingRewriter::new(
        coding,
        Box::new(CsvRewriter::new(spec())),
        DecodeLimits::default(),
    )
}

fn run(coding: Coding, input: &[u8]) -> Result<Vec<u8>, RewriteError> {
    rewrite_all(&mut csv_rewriter(coding), input)
}

fn run_chunks(coding: Coding, input: &[u8], size: usize) -> Result<Vec<u8>, RewriteError> {
    let mut rw = csv_rewriter(coding);
    let mut out = Vec::new();
    for chunk in input.chunks(size) {
        rw.write(chunk, &mut out)?;
    }
    rw.finish(&mut out)?;
    Ok(out)
}

#[test]
fn round_trips_match_rewriting_the_plain_body() {
    let body = csv_body(3000);
    let want = plain_rewrite(&body);
    assert_ne!(want, body);
    for coding in CODINGS {
        let compressed = compress(coding, &body);
        for size in [compressed.len(), 7, 1000] {
            let out = run_chunks(coding, &compressed, size).unwrap();
            assert_eq!(
                decompress(coding, &out),
                want,
                "{coding:?} in chunks of {size}"
            );
        }
        let mut rw = csv_rewriter(coding);
        rewrite_all(&mut rw, &compressed).unwrap();
        assert_eq!(rw.counts().records, 3000);
        assert_eq!(rw.counts().get(FieldClass::Ssn, Action::Last4), 3000);
    }
}

#[test]
fn output_is_produced_as_input_arrives() {
    let body = csv_body(2000);
    let want = plain_rewrite(&body);
    for coding in CODINGS {
        let compressed = compress(coding, &body);
        let mut rw = csv_rewriter(coding);
        let mut out = Vec::new();
        let half = compressed.len() / 2;
        rw.write(&compressed[..half], &mut out).unwrap();
        let early = decompress_prefix(coding, &out);
        assert!(
            early.len() > want.len() / 4,
            "{coding:?}: {} bytes early",
            early.len()
        );
        assert!(want.starts_with(&early), "{coding:?}");
        rw.write(&compressed[half..], &mut out).unwrap();
        rw.finish(&mut out).unwrap();
        assert_eq!(decompress(coding, &out), want);
    }
}

#[test]
fn split_at_every_offset() {
    let body = b"id,ssn\n1,123-45-6789\n2,987-65-4321\n3,\"078-05-1120\"\n";
    let want = plain_rewrite(body);
    for coding in CODINGS {
        let compressed = compress(coding, body);
        for i in 0..=compressed.len() {
            let mut rw = csv_rewriter(coding);
            let mut out = Vec::new();
            rw.write(&compressed[..i], &mut out).unwrap();
            rw.write(&compressed[i..], &mut out).unwrap();
            rw.finish(&mut out).unwrap();
            assert_eq!(decompress(coding, &out), want, "{coding:?} split at {i}");
        }
        let out = run_chunks(coding, &compressed, 1).unwrap();
        assert_eq!(decompress(coding, &out), want, "{coding:?} byte by byte");
    }
}

#[test]
fn deflate_accepts_raw_deflate_and_gzip_accepts_members_and_header_fields() {
    let body = csv_body(50);
    let want = plain_rewrite(&body);
    let out = run(Coding::Deflate, &raw_deflate(&body)).unwrap();
    assert_eq!(decompress(Coding::Deflate, &out), want);
    // Two members make one body.
    let (a, b) = body.split_at(100);
    let two = [gzip(a), gzip(b)].concat();
    let out = run(Coding::Gzip, &two).unwrap();
    assert_eq!(decompress(Coding::Gzip, &out), want);
    // Name, comment and extra field.
    let mut e = GzBuilder::new()
        .filename("accounts.csv")
        .comment("export")
        .extra(vec![1, 2, 3, 4])
        .write(Vec::new(), Compression::fast());
    e.write_all(&body).unwrap();
    let out = run(Coding::Gzip, &e.finish().unwrap()).unwrap();
    assert_eq!(decompress(Coding::Gzip, &out), want);
    // A header checksum, right and wrong.
    let mut header = vec![0x1f, 0x8b, 8, 0x02, 0, 0, 0, 0, 0, 0xff];
    let mut crc = flate2::Crc::new();
    crc.update(&header);
    let hcrc = (crc.sum() & 0xffff) as u16;
    let mut body_crc = flate2::Crc::new();
    body_crc.update(&body);
    let trailer = [
        body_crc.sum().to_le_bytes(),
        (body.len() as u32).to_le_bytes(),
    ]
    .concat();
    let mut good = header.clone();
    good.extend_from_slice(&hcrc.to_le_bytes());
    good.extend_from_slice(&raw_deflate(&body));
    good.extend_from_slice(&trailer);
    let out = run(Coding::Gzip, &good).unwrap();
    assert_eq!(decompress(Coding::Gzip, &out), want);
    header.extend_from_slice(&(hcrc ^ 1).to_le_bytes());
    header.extend_from_slice(&raw_deflate(&body));
    header.extend_from_slice(&trailer);
    assert!(matches!(
        run(Coding::Gzip, &header),
        Err(RewriteError::Encoding { .. })
    ));
}

#[test]
fn empty_bodies() {
    for coding in CODINGS {
        let json = || Box::new(JsonRewriter::new(spec()).allow_empty(true));
        let mut rw = DecodingRewriter::new(coding, json(), DecodeLimits::default());
        assert_eq!(rewrite_all(&mut rw, b"").unwrap(), b"");
        // A compressed empty body stays a valid compressed empty body.
        let mut rw = DecodingRewriter::new(coding, json(), DecodeLimits::default());
        let out = rewrite_all(&mut rw, &compress(coding, b"")).unwrap();
        assert!(!out.is_empty());
        assert_eq!(decompress(coding, &out), b"");
        // The inner rewriter still judges the body.
        let strict = Box::new(JsonRewriter::new(spec()));
        let mut rw = DecodingRewriter::new(coding, strict, DecodeLimits::default());
        assert_eq!(rewrite_all(&mut rw, b""), Err(RewriteError::Empty));
    }
}

#[test]
fn inner_errors_pass_through() {
    for coding in CODINGS {
        let r = run(coding, &compress(coding, b"a,b\n1,2,3\n"));
        assert!(
            matches!(r, Err(RewriteError::Csv { line: 2, .. })),
            "{coding:?}: {r:?}"
        );
    }
}

fn is_encoding_error(r: &Result<Vec<u8>, RewriteError>) -> bool {
    matches!(r, Err(RewriteError::Encoding { .. }))
}

#[test]
fn corrupt_data_is_refused() {
    let body = csv_body(200);
    for coding in CODINGS {
        assert!(
            is_encoding_error(&run(coding, b"id,ssn\n1,123-45-6789\n")),
            "{coding:?}"
        );
    }
    // gzip and zlib carry checksums: any flipped byte in the data is caught
    // (by the decoder: the inner rewriter here accepts any bytes).
    for coding in [Coding::Gzip, Coding::Deflate] {
        let good = compress(coding, &body);
        for at in [good.len() / 3, good.len() / 2, good.len() - 3] {
            let mut bad = good.clone();
            bad[at] ^= 0x55;
            let (r, _, _, _) = bomb_run(coding, &bad, DecodeLimits::default(), 1000);
            assert!(
                matches!(r, Err(RewriteError::Encoding { .. })),
                "{coding:?} flipped at {at}: {r:?}"
            );
        }
    }
    let mut bad = br(&body);
    bad[0] = 0xff;
    bad[1] = 0xff;
    assert!(is_encoding_error(&run(Coding::Br, &bad)));
    // Bad gzip headers.
    let good = gzip(&body);
    for (at, value) in [(0, 0x1e), (1, 0x8c), (2, 7), (3, 0x20)] {
        let mut bad = good.clone();
        bad[at] = value;
        assert!(
            is_encoding_error(&run(Coding::Gzip, &bad)),
            "header byte {at}"
        );
    }
}

#[test]
fn truncated_streams_are_refused() {
    let body = csv_body(200);
    for coding in CODINGS {
        let good = compress(coding, &body);
        for cut in [1, 2, 5, 9, good.len() / 2, good.len() - 1] {
            let r = run(coding, &good[..cut]);
            assert_eq!(
                r,
                Err(RewriteError::Encoding {
                    reason: "compressed stream is truncated"
                }),
                "{coding:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn trailing_data_is_refused() {
    let body = csv_body(20);
    for coding in CODINGS {
        for tail in [&b"x"[..], b"\0\0\0\0", b"trailing garbage"] {
            let bad = [compress(coding, &body), tail.to_vec()].concat();
            let r = run(coding, &bad);
            assert!(is_encoding_error(&r), "{coding:?} + {tail:?}: {r:?}");
            // The same arriving in its own chunk.
            let mut rw = csv_rewriter(coding);
            let mut out = Vec::new();
            rw.write(&compress(coding, &body), &mut out).unwrap();
            let r2 = rw.write(tail, &mut out).and_then(|()| rw.finish(&mut out));
            assert!(
                matches!(r2, Err(RewriteError::Encoding { .. })),
                "{coding:?}"
            );
        }
    }
}

/// A rewriter that throws its input away, noting how much it saw and the
/// largest single write.
struct Sink {
    seen: Arc<AtomicU64>,
    largest: Arc<AtomicU64>,
    counts: Counts,
}

impl BodyRewriter for Sink {
    fn write(&mut self, input: &[u8], _out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.seen.fetch_add(input.len() as u64, Ordering::Relaxed);
        self.largest
            .fetch_max(input.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), RewriteError> {
        Ok(())
    }
    fn counts(&self) -> &Counts {
        &self.counts
    }
}

fn bomb_run(
    coding: Coding,
    bomb: &[u8],
    limits: DecodeLimits,
    chunk: usize,
) -> (Result<(), RewriteError>, u64, u64, usize) {
    let seen = Arc::new(AtomicU64::new(0));
    let largest = Arc::new(AtomicU64::new(0));
    let sink = Sink {
        seen: seen.clone(),
        largest: largest.clone(),
        counts: Counts::default(),
    };
    let mut rw = DecodingRewriter::new(coding, Box::new(sink), limits);
    let mut out = Vec::new();
    let mut r = Ok(());
    for piece in bomb.chunks(chunk) {
        r = rw.write(piece, &mut out);
        if r.is_err() {
            break;
        }
    }
    if r.is_ok() {
        r = rw.finish(&mut out);
    }
    (
        r,
        seen.load(Ordering::Relaxed),
        largest.load(Ordering::Relaxed),
        out.len(),
    )
}

/// 50 MB of zeros as gzip: 50 members of 1 MB (compressing 1 MB once keeps
/// the test fast in debug builds).
fn gzip_bomb() -> Vec<u8> {
    let member = gzip(&vec![0u8; 1 << 20]);
    member.repeat(50)
}

#[test]
fn decompression_bombs_are_refused_with_bounded_memory() {
    let bomb = gzip_bomb();
    assert!(bomb.len() < 100_000);
    // Over the ratio, even in one big chunk.
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 30,
        max_ratio: 100,
    };
    for chunk in [bomb.len(), 4096] {
        let (r, seen, largest, out) = bomb_run(Coding::Gzip, &bomb, limits, chunk);
        assert_eq!(
            r,
            Err(RewriteError::Encoding {
                reason: "compression ratio is above the limit"
            })
        );
        assert!(seen < 4 << 20, "decoded {seen} bytes before refusing");
        assert!(largest <= 32 * 1024, "largest piece {largest}");
        assert!(out < 64 * 1024, "output {out}");
    }
    // One 50 MB member, and a zlib stream of the same.
    let zeros = vec![0u8; 50 << 20];
    for coding in [Coding::Gzip, Coding::Deflate] {
        let single = compress(coding, &zeros);
        let (r, seen, largest, _) = bomb_run(coding, &single, limits, single.len());
        assert!(
            matches!(r, Err(RewriteError::Encoding { .. })),
            "{coding:?}"
        );
        assert!(seen < 4 << 20 && largest <= 32 * 1024, "{coding:?}");
    }
    drop(zeros);
    // Over the size limit.
    let limits = DecodeLimits {
        max_decompressed_bytes: 10 << 20,
        max_ratio: u64::MAX,
    };
    let (r, seen, _, _) = bomb_run(Coding::Gzip, &bomb, limits, bomb.len());
    assert_eq!(
        r,
        Err(RewriteError::Encoding {
            reason: "decompressed body is larger than the limit"
        })
    );
    assert!(seen <= 10 << 20);
    // Under both limits the same body is fine.
    let limits = DecodeLimits {
        max_decompressed_bytes: 100 << 20,
        max_ratio: u64::MAX,
    };
    let (r, seen, _, _) = bomb_run(Coding::Gzip, &bomb, limits, 65536);
    assert_eq!(r, Ok(()));
    assert_eq!(seen, 50 << 20);
    // Brotli and zlib bombs.
    let zeros = vec![0u8; 8 << 20];
    for coding in [Coding::Br, Coding::Deflate] {
        let bomb = compress(coding, &zeros);
        let (r, seen, largest, _) = bomb_run(coding, &bomb, DecodeLimits::default(), bomb.len());
        assert!(is_encoding_error(&r.map(|()| Vec::new())), "{coding:?}");
        assert!(seen < 4 << 20, "{coding:?} decoded {seen}");
        assert!(largest <= 32 * 1024);
    }
    // Small bodies are never judged by their ratio.
    let small = gzip(&vec![0u8; 1 << 19]);
    let (r, _, _, _) = bomb_run(Coding::Gzip, &small, limits_ratio(2), small.len());
    assert_eq!(r, Ok(()));
}

#[test]
fn endless_empty_members_are_refused() {
    let empty = gzip(b"");
    let stream = empty.repeat(100);
    let limits = DecodeLimits {
        max_decompressed_bytes: 1000,
        max_ratio: 100,
    };
    let (r, seen, _, _) = bomb_run(Coding::Gzip, &stream, limits, 64);
    assert_eq!(
        r,
        Err(RewriteError::Encoding {
            reason: "compressed body is larger than the limit"
        })
    );
    assert_eq!(seen, 0);
    let (r, _, _, _) = bomb_run(Coding::Gzip, &empty.repeat(10), limits, 64);
    assert_eq!(r, Ok(()));
}

fn limits_ratio(max_ratio: u64) -> DecodeLimits {
    DecodeLimits {
        max_ratio,
        ..DecodeLimits::default()
    }
}

#[test]
fn failed_rewriters_stay_failed() {
    let mut rw = csv_rewriter(Coding::Gzip);
    let mut out = Vec::new();
    assert!(rw.write(b"not gzip", &mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(
        rw.write(&gzip(b"a\n"), &mut out),
        Err(RewriteError::Poisoned)
    );
    assert_eq!(rw.finish(&mut out), Err(RewriteError::Poisoned));
}

#[test]
fn content_encoding_headers() {
    use Coding::{Br, Deflate, Gzip};
    let ok: &[(&str, &[Coding])] = &[
        ("gzip", &[Gzip]),
        ("GZIP", &[Gzip]),
        ("x-gzip", &[Gzip]),
        ("deflate", &[Deflate]),
        ("br", &[Br]),
        ("identity", &[]),
        ("", &[]),
        (" , ", &[]),
        ("gzip, br", &[Gzip, Br]),
        ("deflate,identity , gzip", &[Deflate, Gzip]),
        ("gzip,gzip,gzip,gzip", &[Gzip, Gzip, Gzip, Gzip]),
    ];
    for (header, want) in ok {
        assert_eq!(
            parse_content_encoding(header).as_deref(),
            Ok(*want),
            "{header:?}"
        );
    }
    for header in [
        "compress",
        "zstd",
        "gzip, zstd",
        "gzip;q=1",
        "br gzip",
        "gzip,gzip,gzip,gzip,gzip",
        "*",
    ] {
        assert_eq!(
            parse_content_encoding(header),
            Err(Unsupported),
            "{header:?}"
        );
    }
}
