//! Content codings: gzip, deflate and br bodies are decoded as they stream
//! in, rewritten by an inner rewriter, and encoded again the same way.
//!
//! [`DecodingRewriter`] never holds the whole body: compressed input is
//! decoded in small steps into a fixed buffer, each decoded piece goes
//! straight to the inner rewriter, and the inner rewriter's output goes
//! straight to the encoder, which is flushed at the end of every
//! [`BodyRewriter::write`] so output leaves as input arrives.
//!
//! Fail closed: corrupt data, data after the end of the compressed stream,
//! a stream cut short, and a decompression bomb are errors
//! ([`RewriteError::Encoding`]), never a pass-through. A bomb is a body that
//! decodes to more than [`DecodeLimits::max_decompressed_bytes`], or to more
//! than [`DecodeLimits::max_ratio`] times its compressed size once more than
//! 1 MiB has been decoded.

use std::io::Write;

use brotli::enc::StandardAlloc;
use brotli::{BrotliDecompressStream, BrotliResult, BrotliState};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::{Compression, Crc, Decompress, FlushDecompress, Status};

use super::{BodyRewriter, Counts, RewriteError};

/// A content coding maskgate can undo and redo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coding {
    /// `gzip` (or `x-gzip`): RFC 1952, one or more members.
    Gzip,
    /// `deflate`: zlib (RFC 1950) format; raw deflate (RFC 1951), which some
    /// servers send instead, is accepted too. Re-encoded as zlib.
    Deflate,
    /// `br`: Brotli (RFC 7932).
    Br,
}

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub const fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Br => "br",
        }
    }
}

/// A `Content-Encoding` maskgate cannot decode: the body cannot be rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported content encoding")]
pub struct Unsupported;

/// Most codings one body may be wrapped in.
pub const MAX_CODINGS: usize = 4;

/// Parses a `Content-Encoding` field value (several header lines joined with
/// commas) into the codings applied, in the order they were applied.
/// `identity` and empty list elements are skipped, so a body with no real
/// coding gives an empty list. Names are case-insensitive. Anything else, or
/// more than [`MAX_CODINGS`] codings, is [`Unsupported`].
pub fn parse_content_encoding(header: &str) -> Result<Vec<Coding>, Unsupported> {
    let mut codings = Vec::new();
    for element in header.split(',') {
        let name = element.trim_matches([' ', '\t']);
        let coding = if name.is_empty() || name.eq_ignore_ascii_case("identity") {
            continue;
        } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            Coding::Gzip
        } else if name.eq_ignore_ascii_case("deflate") {
            Coding::Deflate
        } else if name.eq_ignore_ascii_case("br") {
            Coding::Br
        } else {
            return Err(Unsupported);
        };
        if codings.len() == MAX_CODINGS {
            return Err(Unsupported);
        }
        codings.push(coding);
    }
    Ok(codings)
}

/// Limits on decoding one body (per coding layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most decoded bytes one body may have (and most encoded bytes too).
    pub max_decompressed_bytes: u64,
    /// Largest decoded/encoded size ratio, checked once more than
    /// [`RATIO_CHECK_AFTER`] bytes have been decoded.
    pub max_ratio: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_decompressed_bytes: 1 << 30,
            max_ratio: 200,
        }
    }
}

/// Decoded bytes after which the compression ratio is checked.
pub const RATIO_CHECK_AFTER: u64 = 1 << 20;

/// Compressed bytes handed to a decoder at a time: keeps the ratio check
/// close to the real ratio however large the caller's chunks are.
const INPUT_STEP: usize = 8 * 1024;
/// Size of the decode buffer: decoded bytes are checked and passed on in
/// pieces of at most this size.
const OUTPUT_STEP: usize = 32 * 1024;
/// Longest gzip header (with its optional name, comment and extra field).
const MAX_GZIP_HEADER: usize = 1 << 17;
/// Brotli encoder quality and window (256 KiB): fast, and small enough to
/// hold one per response.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_LGWIN: u32 = 18;

const fn encoding(reason: &'static str) -> RewriteError {
    RewriteError::Encoding { reason }
}

const CORRUPT: RewriteError = encoding("corrupt compressed data");
const TRAILING: RewriteError = encoding("data after the end of the compressed stream");
const TRUNCATED: RewriteError = encoding("compressed stream is truncated");

/// Where decoded bytes go: the limits, the inner rewriter and the encoder.
struct Feed {
    inner: Box<dyn BodyRewriter>,
    encoder: Option<Encoder>,
    limits: DecodeLimits,
    compressed: u64,
    decompressed: u64,
    plain: Vec<u8>,
    /// The encoder has input it has not flushed.
    dirty: bool,
}

impl Feed {
    fn push(&mut self, bytes: &[u8]) -> Result<(), RewriteError> {
        self.decompressed += bytes.len() as u64;
        if self.decompressed > self.limits.max_decompressed_bytes {
            return Err(encoding("decompressed body is larger than the limit"));
        }
        if self.decompressed > RATIO_CHECK_AFTER
            && self.decompressed > self.compressed.saturating_mul(self.limits.max_ratio)
        {
            return Err(encoding("compression ratio is above the limit"));
        }
        self.plain.clear();
        self.inner.write(bytes, &mut self.plain)?;
        self.encode_plain()
    }

    /// Encodes what the inner rewriter wrote into `plain`.
    fn encode_plain(&mut self) -> Result<(), RewriteError> {
        if self.plain.is_empty() {
            return Ok(());
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(encoding("re-encoding failed"));
        };
        encoder.write_all(&self.plain)?;
        self.plain.clear();
        self.dirty = true;
        Ok(())
    }
}

/// Re-encodes the rewritten body.
enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    Zlib(ZlibEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

const ENCODE_FAILED: RewriteError = encoding("re-encoding failed");

impl Encoder {
    fn new(coding: Coding) -> Encoder {
        match coding {
            Coding::Gzip => Encoder::Gzip(GzEncoder::new(Vec::new(), Compression::default())),
            Coding::Deflate => Encoder::Zlib(ZlibEncoder::new(Vec::new(), Compression::default())),
            Coding::Br => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BROTLI_QUALITY,
                BROTLI_LGWIN,
            ))),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), RewriteError> {
        let r = match self {
            Encoder::Gzip(e) => e.write_all(bytes),
            Encoder::Zlib(e) => e.write_all(bytes),
            Encoder::Brotli(e) => e.write_all(bytes),
        };
        r.map_err(|_| ENCODE_FAILED)
    }

    /// Flushes what was written so far, so that it can be decoded on its own.
    fn flush(&mut self) -> Result<(), RewriteError> {
        let r = match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zlib(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
        };
        r.map_err(|_| ENCODE_FAILED)
    }

    /// Moves the encoded bytes produced so far to `out`.
    fn take_output(&mut self, out: &mut Vec<u8>) {
        let buf = match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Zlib(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
        };
        out.append(buf);
    }

    /// Ends the stream, appending the rest of it to `out`.
    fn finish(self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let rest = match self {
            Encoder::Gzip(e) => e.finish().map_err(|_| ENCODE_FAILED)?,
            Encoder::Zlib(e) => e.finish().map_err(|_| ENCODE_FAILED)?,
            Encoder::Brotli(e) => e.into_inner(),
        };
        out.extend_from_slice(&rest);
        Ok(())
    }
}

/// Inflates a zlib or raw deflate stream (decided by its first two bytes).
struct Inflate {
    sniff: Vec<u8>,
    d: Option<Decompress>,
    done: bool,
}

impl Inflate {
    fn new() -> Inflate {
        Inflate {
            sniff: Vec::new(),
            d: None,
            done: false,
        }
    }

    /// A zlib stream starts with CMF/FLG: method 8, window at most 32 KiB,
    /// and a check making the pair a multiple of 31.
    fn is_zlib(b0: u8, b1: u8) -> bool {
        b0 & 0x0f == 8 && b0 >> 4 <= 7 && (u16::from(b0) << 8 | u16::from(b1)) % 31 == 0
    }

    fn decode(
        &mut self,
        mut input: &[u8],
        buf: &mut [u8],
        feed: &mut Feed,
    ) -> Result<(), RewriteError> {
        if self.d.is_none() {
            let take = (2 - self.sniff.len()).min(input.len());
            self.sniff.extend_from_slice(&input[..take]);
            input = &input[take..];
            let [b0, b1] = self.sniff[..] else {
                return Ok(());
            };
            self.d = Some(Decompress::new(Inflate::is_zlib(b0, b1)));
            let head = [b0, b1];
            self.inflate(&head, buf, feed)?;
        }
        self.inflate(input, buf, feed)
    }

    fn inflate(
        &mut self,
        mut input: &[u8],
        buf: &mut [u8],
        feed: &mut Feed,
    ) -> Result<(), RewriteError> {
        if self.done {
            return if input.is_empty() {
                Ok(())
            } else {
                Err(TRAILING)
            };
        }
        let Some(d) = self.d.as_mut() else {
            return Err(CORRUPT);
        };
        let (end, rest) = inflate_into(d, input, buf, feed, None)?;
        input = rest;
        if end {
            self.done = true;
            if !input.is_empty() {
                return Err(TRAILING);
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), RewriteError> {
        if self.done {
            Ok(())
        } else {
            Err(TRUNCATED)
        }
    }
}

/// Runs `d` over `input` until it needs more input or the stream ends,
/// passing decoded bytes to `feed` (and to `crc`). Returns whether the stream
/// ended and the input left after its end.
fn inflate_into<'i>(
    d: &mut Decompress,
    mut input: &'i [u8],
    buf: &mut [u8],
    feed: &mut Feed,
    mut crc: Option<&mut Crc>,
) -> Result<(bool, &'i [u8]), RewriteError> {
    loop {
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress(input, buf, FlushDecompress::None)
            .map_err(|_| CORRUPT)?;
        let used = usize::try_from(d.total_in() - in0).map_err(|_| CORRUPT)?;
        let made = usize::try_from(d.total_out() - out0).map_err(|_| CORRUPT)?;
        input = input.get(used..).ok_or(CORRUPT)?;
        if made > 0 {
            let piece = buf.get(..made).ok_or(CORRUPT)?;
            if let Some(crc) = crc.as_deref_mut() {
                crc.update(piece);
            }
            feed.push(piece)?;
        }
        if status == Status::StreamEnd {
            return Ok((true, input));
        }
        if used == 0 && made == 0 {
            return Ok((false, input));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HeaderStep {
    Fixed,
    XLen,
    Extra,
    Name,
    Comment,
    HeaderCrc,
}

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GzPhase {
    /// Reading a member header.
    Header,
    /// Inflating a member's data.
    Body,
    /// Reading a member's CRC-32 and size.
    Trailer,
    /// Between members: the stream may end or another member start.
    Between,
}

/// Decodes a gzip stream of one or more members.
struct Gunzip {
    phase: GzPhase,
    step: HeaderStep,
    flags: u8,
    count: usize,
    header_len: usize,
    xlen: usize,
    header_crc: Crc,
    stored_crc: u16,
    d: Decompress,
    crc: Crc,
    trailer: [u8; 8],
}

impl Gunzip {
    fn new() -> Gunzip {
        Gunzip {
            phase: GzPhase::Header,
            step: HeaderStep::Fixed,
            flags: 0,
            count: 0,
            header_len: 0,
            xlen: 0,
            header_crc: Crc::new(),
            stored_crc: 0,
            d: Decompress::new(false),
            crc: Crc::new(),
            trailer: [0; 8],
        }
    }

    /// Moves to the first header part after `from` that the flags call for.
    fn advance(&mut self, from: HeaderStep) -> bool {
        const ORDER: [(HeaderStep, u8); 4] = [
            (HeaderStep::XLen, FEXTRA),
            (HeaderStep::Name, FNAME),
            (HeaderStep::Comment, FCOMMENT),
            (HeaderStep::HeaderCrc, FHCRC),
        ];
        let next = match from {
            HeaderStep::Fixed => 0,
            HeaderStep::XLen | HeaderStep::Extra => 1,
            HeaderStep::Name => 2,
            HeaderStep::Comment => 3,
            HeaderStep::HeaderCrc => 4,
        };
        self.count = 0;
        match ORDER[next..]
            .iter()
            .find(|(_, flag)| self.flags & flag != 0)
        {
            Some(&(step, _)) => {
                self.step = step;
                false
            }
            None => true,
        }
    }

    /// Reads one header byte; returns true when the header is complete.
    fn header_byte(&mut self, b: u8) -> Result<bool, RewriteError> {
        self.header_len += 1;
        if self.header_len > MAX_GZIP_HEADER {
            return Err(encoding("gzip header is too long"));
        }
        if self.step != HeaderStep::HeaderCrc {
            self.header_crc.update(&[b]);
        }
        match self.step {
            HeaderStep::Fixed => {
                match (self.count, b) {
                    (0, 0x1f) | (1, 0x8b) | (2, 8) | (4..=9, _) => {}
                    (3, flags) if flags & 0xe0 == 0 => self.flags = flags,
                    _ => return Err(encoding("invalid gzip header")),
                }
                self.count += 1;
                if self.count == 10 {
                    return Ok(self.advance(HeaderStep::Fixed));
                }
            }
            HeaderStep::XLen => {
                self.xlen |= usize::from(b) << (8 * self.count);
                self.count += 1;
                if self.count == 2 {
                    if self.xlen == 0 {
                        return Ok(self.advance(HeaderStep::Extra));
                    }
                    self.count = 0;
                    self.step = HeaderStep::Extra;
                }
            }
            HeaderStep::Extra => {
                self.count += 1;
                if self.count == self.xlen {
                    return Ok(self.advance(HeaderStep::Extra));
                }
            }
            HeaderStep::Name | HeaderStep::Comment => {
                if b == 0 {
                    return Ok(self.advance(self.step));
                }
            }
            HeaderStep::HeaderCrc => {
                self.stored_crc |= u16::from(b) << (8 * self.count);
                self.count += 1;
                if self.count == 2 {
                    if (self.header_crc.sum() & 0xffff) as u16 != self.stored_crc {
                        return Err(encoding("gzip header checksum mismatch"));
                    }
                    return Ok(self.advance(HeaderStep::HeaderCrc));
                }
            }
        }
        Ok(false)
    }

    fn start_member(&mut self) {
        self.phase = GzPhase::Header;
        self.step = HeaderStep::Fixed;
        self.flags = 0;
        self.count = 0;
        self.header_len = 0;
        self.xlen = 0;
        self.header_crc.reset();
        self.stored_crc = 0;
        self.d.reset(false);
        self.crc.reset();
    }

    fn decode(
        &mut self,
        mut input: &[u8],
        buf: &mut [u8],
        feed: &mut Feed,
    ) -> Result<(), RewriteError> {
        while let Some((&b, rest)) = input.split_first() {
            match self.phase {
                GzPhase::Between => {
                    if b != 0x1f {
                        return Err(TRAILING);
                    }
                    self.start_member();
                }
                GzPhase::Header => {
                    if self.header_byte(b)? {
                        self.phase = GzPhase::Body;
                    }
                    input = rest;
                }
                GzPhase::Body => {
                    let (end, left) =
                        inflate_into(&mut self.d, input, buf, feed, Some(&mut self.crc))?;
                    input = left;
                    if end {
                        self.phase = GzPhase::Trailer;
                        self.count = 0;
                    } else if !input.is_empty() {
                        return Err(CORRUPT);
                    }
                }
                GzPhase::Trailer => {
                    let slot = self.trailer.get_mut(self.count).ok_or(CORRUPT)?;
                    *slot = b;
                    self.count += 1;
                    input = rest;
                    if self.count == 8 {
                        let [c0, c1, c2, c3, s0, s1, s2, s3] = self.trailer;
                        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
                        let size = u32::from_le_bytes([s0, s1, s2, s3]);
                        if crc != self.crc.sum() || size != self.crc.amount() {
                            return Err(encoding("gzip checksum mismatch"));
                        }
                        self.phase = GzPhase::Between;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), RewriteError> {
        if self.phase == GzPhase::Between {
            Ok(())
        } else {
            Err(TRUNCATED)
        }
    }
}

type BrotliDecoderState = BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>;

/// Decodes a Brotli stream (standard window sizes only).
struct Unbrotli {
    state: Box<BrotliDecoderState>,
    done: bool,
}

impl Unbrotli {
    fn new() -> Unbrotli {
        Unbrotli {
            state: Box::new(BrotliState::new_strict(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            )),
            done: false,
        }
    }

    fn decode(
        &mut self,
        input: &[u8],
        buf: &mut [u8],
        feed: &mut Feed,
    ) -> Result<(), RewriteError> {
        if self.done {
            return if input.is_empty() {
                Ok(())
            } else {
                Err(TRAILING)
            };
        }
        let mut available_in = input.len();
        let mut input_offset = 0;
        let mut total_out = 0;
        loop {
            let mut available_out = buf.len();
            let mut output_offset = 0;
            let result = BrotliDecompressStream(
                &mut available_in,
                &mut input_offset,
                input,
                &mut available_out,
                &mut output_offset,
                buf,
                &mut total_out,
                &mut self.state,
            );
            if output_offset > 0 {
                feed.push(buf.get(..output_offset).ok_or(CORRUPT)?)?;
            }
            match result {
                BrotliResult::ResultFailure => return Err(CORRUPT),
                BrotliResult::NeedsMoreOutput => {}
                BrotliResult::NeedsMoreInput => return Ok(()),
                BrotliResult::ResultSuccess => {
                    self.done = true;
                    return if available_in == 0 {
                        Ok(())
                    } else {
                        Err(TRAILING)
                    };
                }
            }
        }
    }

    fn finish(&self) -> Result<(), RewriteError> {
        if self.done {
            Ok(())
        } else {
            Err(TRUNCATED)
        }
    }
}

enum Decoder {
    Gzip(Box<Gunzip>),
    Deflate(Inflate),
    Br(Unbrotli),
}

impl Decoder {
    fn decode(
        &mut self,
        input: &[u8],
        buf: &mut [u8],
        feed: &mut Feed,
    ) -> Result<(), RewriteError> {
        match self {
            Decoder::Gzip(d) => d.decode(input, buf, feed),
            Decoder::Deflate(d) => d.decode(input, buf, feed),
            Decoder::Br(d) => d.decode(input, buf, feed),
        }
    }

    fn finish(&self) -> Result<(), RewriteError> {
        match self {
            Decoder::Gzip(d) => d.finish(),
            Decoder::Deflate(d) => d.finish(),
            Decoder::Br(d) => d.finish(),
        }
    }
}

/// Decodes one content coding, runs the decoded body through an inner
/// rewriter, and encodes the result with the same coding; see the module docs.
///
/// An empty body (no bytes at all) stays empty: it is not a compressed
/// stream, and the inner rewriter decides whether an empty body is valid.
pub struct DecodingRewriter {
    decoder: Decoder,
    feed: Feed,
    buf: Vec<u8>,
    seen_input: bool,
    poisoned: bool,
}

impl DecodingRewriter {
    /// Wraps `inner` (which sees and writes the decoded body) in `coding`.
    pub fn new(
        coding: Coding,
        inner: Box<dyn BodyRewriter>,
        limits: DecodeLimits,
    ) -> DecodingRewriter {
        let decoder = match coding {
            Coding::Gzip => Decoder::Gzip(Box::new(Gunzip::new())),
            Coding::Deflate => Decoder::Deflate(Inflate::new()),
            Coding::Br => Decoder::Br(Unbrotli::new()),
        };
        DecodingRewriter {
            decoder,
            feed: Feed {
                inner,
                encoder: Some(Encoder::new(coding)),
                limits,
                compressed: 0,
                decompressed: 0,
                plain: Vec::new(),
                dirty: false,
            },
            buf: vec![0; OUTPUT_STEP],
            seen_input: false,
            poisoned: false,
        }
    }

    fn write_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        for step in input.chunks(INPUT_STEP) {
            self.feed.compressed += step.len() as u64;
            if self.feed.compressed > self.feed.limits.max_decompressed_bytes {
                // Endless empty gzip members decode to nothing at all.
                return Err(encoding("compressed body is larger than the limit"));
            }
            self.decoder.decode(step, &mut self.buf, &mut self.feed)?;
        }
        if let Some(encoder) = self.feed.encoder.as_mut() {
            if self.feed.dirty {
                encoder.flush()?;
                self.feed.dirty = false;
            }
            encoder.take_output(out);
        }
        Ok(())
    }

    fn finish_inner(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.seen_input {
            self.decoder.finish()?;
        }
        self.feed.plain.clear();
        self.feed.inner.finish(&mut self.feed.plain)?;
        if !self.seen_input && self.feed.plain.is_empty() {
            return Ok(());
        }
        self.feed.encode_plain()?;
        match self.feed.encoder.take() {
            Some(encoder) => encoder.finish(out),
            None => Err(ENCODE_FAILED),
        }
    }
}

impl BodyRewriter for DecodingRewriter {
    fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.poisoned {
            return Err(RewriteError::Poisoned);
        }
        if input.is_empty() {
            return Ok(());
        }
        self.seen_input = true;
        let mark = out.len();
        self.write_inner(input, out).inspect_err(|_| {
            out.truncate(mark);
            self.poisoned = true;
        })
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.poisoned {
            return Err(RewriteError::Poisoned);
        }
        let mark = out.len();
        self.finish_inner(out).inspect_err(|_| {
            out.truncate(mark);
            self.poisoned = true;
        })
    }

    fn counts(&self) -> &Counts {
        self.feed.inner.counts()
    }
}

#[cfg(test)]
#[path = "encoding_tests.rs"]
mod tests;
