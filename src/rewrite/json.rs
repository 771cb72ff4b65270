//! Streaming JSON (and NDJSON) rewriter.
//!
//! A resumable byte-level state machine: input arrives in chunks of any size,
//! every byte is validated against RFC 8259, and output is the input with the
//! values the rules select masked, redacted or removed. Untouched bytes are
//! copied as spans, never re-serialized; only the tokens a rule or detector
//! must look at are held (and copied only when they straddle chunks).
//!
//! Removal works on held bytes: a member's separator and key are held until
//! its value's first byte says whether it stays, so a removed member takes its
//! comma with it and the output stays valid JSON.
//!
//! Dropping records (only when [`RewriteSpec::drop_accounts`] is set): the
//! output of an object record, from its separating comma (and key) on, is
//! held until its id member has been read. A record of a dropped account is
//! then cut out of the held output (the container's comma bookkeeping is
//! rewound, as for a removed member); any other record is released and the
//! rest of it streams. Held output lives in `out` while the chunk lasts and
//! moves into a side buffer between chunks, so nothing is copied for a record
//! that is decided within one chunk.

use std::borrow::Cow;
use std::sync::Arc;

use memchr::memchr2;

use super::mask::{
    self, decode_json_string, envelope_view, looks_like_envelope, write_json_string,
};
use super::rules::{MemberMatch, NodeSet};
use super::value::{apply_findings, effective_plain, mask_unnamed_at, may_hide_value};
use super::{
    BodyRewriter, ClearMark, Counts, RequestProtection, RewriteError, RewriteSpec, SyntaxError,
    MAX_ACCOUNT_IDS,
};
use crate::class::{Action, FieldClass};
use crate::detect::{DetectorKind, DetectorSet, Finding};

/// Where the bytes between the current span start and the cursor go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Copied to the output unchanged.
    Pass,
    /// Held until a decision (member prefix) or a transform (captured value).
    Hold,
    /// Dropped (a removed member).
    Discard,
}

/// What the rules say about a value and everything below it.
#[derive(Clone, Copy, Debug)]
struct Ctx {
    /// Class inherited from the nearest selected ancestor, or selected here.
    class: Option<FieldClass>,
    /// Allowed by the allowlist (always true outside allowlist mode).
    allowed: bool,
    /// Path-trie nodes active for children.
    nodes: NodeSet,
    /// The value is a customer record (its id field names the account).
    record: bool,
    /// For a container: the class its name's words say its members hold
    /// (generic value members of an object, scalar elements of an array).
    descriptor: Option<FieldClass>,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    object: bool,
    emitted_any: bool,
    ctx: Ctx,
    /// Write requests: length of the JSON pointer before this container.
    path_len: usize,
    /// Write requests: elements seen (array index of the next one).
    count: u32,
    /// What this container's generic values hold: from its name's words or
    /// from a descriptor member (`"type": "ssn"`).
    descriptor: Option<FieldClass>,
    /// Output from a generic value member on is held until the object
    /// closes, in case a descriptor member comes after the value.
    typed: bool,
    /// A descriptor member has been read (whether or not it named a class):
    /// the object says what its generic values are.
    described: bool,
    /// The container had a member or element in the input.
    had_children: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    const fn accepting(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Start,
    ObjectFirst,
    ObjectKey,
    Colon,
    Value,
    ArrayFirst,
    AfterValue,
    End,
    Str,
    Num(Num),
    Lit,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StrKind {
    Key,
    Pass,
    Capture,
    Skip,
}

/// The member whose key has been read and whose value has not started.
#[derive(Clone, Debug, Default)]
struct Pending {
    member: MemberMatch,
    /// The held bytes start with the separating comma.
    has_comma: bool,
    /// Held offset of the key's opening quote.
    key_off: usize,
    /// Held offset just past the key's closing quote.
    key_end: usize,
    /// A key that itself held a red-flag value, re-encoded masked.
    key_rewrite: Option<Vec<u8>>,
}

/// The counts a dropped record must not leave behind, as they were when it
/// started.
#[derive(Clone, Copy, Debug)]
struct CountsMark {
    acted: [[u64; Action::COUNT]; FieldClass::COUNT],
    detected: u64,
    records: u64,
    not_allowed: u64,
    sealed: u64,
    account_ids: usize,
}

impl CountsMark {
    fn of(c: &Counts) -> CountsMark {
        CountsMark {
            acted: c.acted,
            detected: c.detected,
            records: c.records,
            not_allowed: c.not_allowed,
            sealed: c.sealed,
            account_ids: c.account_ids.len(),
        }
    }

    /// Undoes everything counted since the mark, except integrity errors.
    fn restore(&self, c: &mut Counts) {
        c.acted = self.acted;
        c.detected = self.detected;
        c.records = self.records;
        c.not_allowed = self.not_allowed;
        c.sealed = self.sealed;
        c.account_ids.truncate(self.account_ids);
    }
}

/// An object record that has started and not yet ended (drop filter only).
#[derive(Clone, Copy, Debug)]
struct OpenRecord {
    /// `stack.len()` while the record's own frame is the innermost.
    depth: usize,
    /// Offset of the record's first output byte (its separator) in the held
    /// output; meaningful while `holding`.
    start: usize,
    /// Its output is held: its id has not been read yet.
    holding: bool,
    /// Its id names a dropped account.
    dropped: bool,
    /// The document root (or an NDJSON line) is the record.
    root: bool,
    /// The parent container's `emitted_any` before this record.
    parent_emitted: bool,
    counts: CountsMark,
}

/// A counted record being read: the clear values released since it started
/// are its own (see [`Counts::record_done`]). Only the outermost record is
/// marked; the document root only until a record below it starts.
#[derive(Clone, Copy, Debug)]
struct RecordMark {
    /// `stack.len()` while the record's own frame is the innermost.
    depth: usize,
    /// The document root (or an NDJSON line): counted when it ends, if no
    /// record was found below it.
    root: bool,
    clear: ClearMark,
}

/// Output held for records whose fate is not known yet (drop filter only).
/// The held output is `buf` followed by `out[base..]` of the current call.
#[derive(Debug, Default)]
struct Held {
    /// Held output carried over from earlier chunks.
    buf: Vec<u8>,
    /// Where in the caller's `out` the held output continues; `Some` exactly
    /// while some open record is holding.
    base: Option<usize>,
    /// Open object records, innermost last.
    open: Vec<OpenRecord>,
    /// Objects whose generic values wait for a descriptor, innermost last.
    typed: Vec<TypedHold>,
    /// Allowlist roles: containers held until something in them is kept,
    /// innermost last.
    empty: Vec<EmptyHold>,
}

/// A container an allowlist may empty: its output (with its member prefix)
/// is held until a value inside it is kept. Emptied, it goes whole: `{}`
/// or `[{}]` where a customer's cards or identity documents were would
/// tell what the customer has.
#[derive(Debug)]
struct EmptyHold {
    /// `stack.len()` while the container's frame is the innermost.
    depth: usize,
    /// Offset of its first output byte (separator or key) in the held output.
    start: usize,
    /// The parent container's `emitted_any` before this container.
    parent_emitted: bool,
    /// Nothing inside it has been kept yet.
    holding: bool,
}

/// An object held because a generic value member (`"value": …`) came before
/// any member saying what it holds.
#[derive(Debug)]
struct TypedHold {
    /// `stack.len()` while the object's frame is the innermost.
    depth: usize,
    /// The generic values written so far, in order.
    values: Vec<TypedValue>,
}

/// One generic value inside a [`TypedHold`]: where its output is in the held
/// output, and the value as it came in, to be masked if a descriptor names
/// its class.
#[derive(Debug)]
struct TypedValue {
    start: usize,
    end: usize,
    raw: Vec<u8>,
    number: bool,
    has_escape: bool,
    /// The class the member's name gives when no descriptor says otherwise
    /// (`number` is ambiguous: masked as a bank account).
    fallback: Option<FieldClass>,
}

impl Held {
    fn len(&self, out: &[u8]) -> usize {
        self.buf.len() + self.base.map_or(0, |b| out.len() - b)
    }

    fn any_holding(&self) -> bool {
        !self.typed.is_empty()
            || self.open.iter().any(|r| r.holding)
            || self.empty.iter().any(|h| h.holding)
    }

    /// Replaces held output `[start, end)` with `bytes`.
    fn replace(&mut self, out: &mut Vec<u8>, start: usize, end: usize, bytes: &[u8]) {
        let base = self.base.unwrap_or(out.len());
        if start < self.buf.len() && end > self.buf.len() {
            self.buf.extend(out.drain(base..));
        }
        if end <= self.buf.len() {
            self.buf.splice(start..end, bytes.iter().copied());
        } else {
            let at = base + (start - self.buf.len());
            out.splice(at..at + (end - start), bytes.iter().copied());
        }
    }

    /// Cuts the held output back to `start` bytes.
    fn truncate(&mut self, out: &mut Vec<u8>, start: usize) {
        let base = self.base.unwrap_or(out.len());
        if start >= self.buf.len() {
            out.truncate(base + (start - self.buf.len()));
        } else {
            self.buf.truncate(start);
            out.truncate(base);
        }
    }

    /// Nothing is held any more: the carried-over bytes go out in front of
    /// this call's held bytes.
    fn release(&mut self, out: &mut Vec<u8>) {
        if let Some(base) = self.base.take() {
            if !self.buf.is_empty() {
                out.splice(base..base, self.buf.drain(..));
            }
        }
    }

    fn clear(&mut self) {
        self.buf = Vec::new();
        self.base = None;
        self.open.clear();
        self.typed.clear();
        self.empty.clear();
    }
}

struct Io<'a> {
    chunk: &'a [u8],
    span: usize,
    out: &'a mut Vec<u8>,
}

/// Streaming JSON rewriter; see the module docs.
pub struct JsonRewriter {
    spec: RewriteSpec,
    sequence: bool,
    allow_empty: bool,
    state: State,
    stack: Vec<Frame>,
    mode: Mode,
    hold: Vec<u8>,
    skip_depth: Option<usize>,
    str_kind: StrKind,
    str_is_key: bool,
    str_has_escape: bool,
    esc: u8,
    utf8_need: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    lit: &'static [u8],
    lit_pos: usize,
    pend: Pending,
    cap: Ctx,
    top_records: u64,
    top_object: bool,
    values_seen: u64,
    end_newline: bool,
    consumed: u64,
    counts: Counts,
    poisoned: bool,
    findings: Vec<Finding>,
    text: String,
    /// The next value is a record's id: collect it.
    want_id: bool,
    /// The document's own id, kept only if it turns out to be the record.
    root_id: Option<String>,
    /// Write requests: how the body is protected.
    protect: Option<Arc<RequestProtection>>,
    /// Write requests: JSON pointer of the current container.
    path: String,
    /// Write requests: the current member's key or index.
    seg: String,
    /// Write requests: the last key read (decoded).
    pend_key: String,
    /// Write requests: the member being read is dropped (a client-supplied
    /// blind index).
    drop_member: bool,
    /// Drop filter: records whose fate is not known yet.
    held: Held,
    /// Drop filter: the value being captured is a removed record id, read
    /// only to decide the record's fate and never written.
    id_hidden: bool,
    /// Drop filter: a record below the current top-level value has started,
    /// so the value itself is not a record.
    top_nested: bool,
    /// The value being read is a generic value of a held typed object.
    typed_value: bool,
    /// The value being read is a descriptor's: its text may name the class
    /// of the object's generic values.
    descriptor_value: bool,
    /// How many encodings this document was found inside (JSON in a string,
    /// base64): bounds how deep strings are looked into.
    decode_depth: u8,
    /// The counted record being read, if any (for per-record clear counts).
    record_mark: Option<RecordMark>,
    /// The id of that record, once read: envelopes bound to an account
    /// open (and are sealed) only for it.
    record_account: Option<String>,
    /// Records marked so far (their index in document order).
    records_marked: usize,
    /// Each marked record's id, in order (collected by a first pass over a
    /// write body, see [`JsonRewriter::collect_record_ids`]).
    record_ids: Option<Vec<Option<String>>>,
    /// Record ids from a first pass: a record's id is known from its first
    /// byte, wherever its id member is.
    record_id_hints: Vec<Option<String>>,
}

/// Bytes that may appear in a JSON string as they are and need no further
/// look: printable ASCII other than `"` and `\`.
const STRING_PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x80 {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// Up to this many string bytes are scanned a word at a time before
/// switching to a SIMD search.
const SHORT_STRING: usize = 64;

/// Bytes of `bytes` before the first one that is not [`STRING_PLAIN`]
/// (`"`, `\`, a control byte or a non-ASCII byte).
#[inline]
fn plain_prefix(bytes: &[u8]) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut k = 0;
    while k + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[k..k + 8]);
        let w = u64::from_le_bytes(word);
        let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
        // The lowest flagged byte is exact for each test (borrows only
        // flag bytes above a true hit), so it is exact for their union.
        let special = zero(w ^ (LO * u64::from(b'"')))
            | zero(w ^ (LO * u64::from(b'\\')))
            | (w.wrapping_sub(LO * 0x20) & !w & HI)
            | (w & HI);
        if special != 0 {
            return k + (special.trailing_zeros() / 8) as usize;
        }
        k += 8;
    }
    while k < bytes.len() && STRING_PLAIN[bytes[k] as usize] {
        k += 1;
    }
    k
}

const fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// True when every byte is printable ASCII (no control byte, no non-ASCII);
/// written branch-free so it vectorizes.
fn printable_ascii(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(0u8, |acc, &b| acc | ((b.wrapping_sub(0x20) | b) & 0x80))
        == 0
}

fn count_digits(bytes: &[u8]) -> usize {
    bytes.iter().map(|b| b.is_ascii_digit() as usize).sum()
}

impl JsonRewriter {
    /// A rewriter for one JSON document.
    pub fn new(spec: RewriteSpec) -> JsonRewriter {
        JsonRewriter {
            spec,
            sequence: false,
            allow_empty: false,
            state: State::Start,
            stack: Vec::new(),
            mode: Mode::Pass,
            hold: Vec::new(),
            skip_depth: None,
            str_kind: StrKind::Pass,
            str_is_key: false,
            str_has_escape: false,
            esc: 0,
            utf8_need: 0,
            utf8_lo: 0x80,
            utf8_hi: 0xBF,
            lit: b"",
            lit_pos: 0,
            pend: Pending::default(),
            cap: Ctx {
                class: None,
                allowed: true,
                nodes: NodeSet::EMPTY,
                record: false,
                descriptor: None,
            },
            top_records: 0,
            top_object: false,
            values_seen: 0,
            end_newline: false,
            consumed: 0,
            counts: Counts::default(),
            poisoned: false,
            findings: Vec::new(),
            text: String::new(),
            want_id: false,
            root_id: None,
            protect: None,
            path: String::new(),
            seg: String::new(),
            pend_key: String::new(),
            drop_member: false,
            held: Held::default(),
            id_hidden: false,
            top_nested: false,
            typed_value: false,
            descriptor_value: false,
            decode_depth: 0,
            record_mark: None,
            record_account: None,
            records_marked: 0,
            record_ids: None,
            record_id_hints: Vec::new(),
        }
    }

    /// A rewriter for a write request's JSON body: values of encrypted
    /// classes become envelopes, card numbers in unnamed fields are refused
    /// (or encrypted), client-supplied `*_bidx` members are dropped. The
    /// spec's actions should all be `clear` (a write is not masked).
    pub fn for_request(spec: RewriteSpec, protect: Arc<RequestProtection>) -> JsonRewriter {
        let mut rw = JsonRewriter::new(spec);
        rw.protect = Some(protect);
        rw
    }

    /// Makes this rewriter note each record's id ([`JsonRewriter::take_record_ids`]).
    pub fn collect_record_ids(&mut self) {
        self.record_ids = Some(Vec::new());
    }

    /// Each record's id (`None`: no plain id; an empty id: two ids), in
    /// document order, as noted since [`JsonRewriter::collect_record_ids`].
    pub fn take_record_ids(&mut self) -> Vec<Option<String>> {
        self.record_ids.take().unwrap_or_default()
    }

    /// Record ids a first pass over the same body noted: envelopes are bound
    /// to (and checked against) their record's account even when its id
    /// member comes after them.
    pub fn use_record_ids(&mut self, ids: Vec<Option<String>>) {
        self.record_id_hints = ids;
    }

    /// A record was marked: its id, if a first pass knows it.
    fn next_record(&mut self) -> Option<String> {
        let index = self.records_marked;
        self.records_marked += 1;
        if let Some(ids) = &mut self.record_ids {
            ids.push(None);
        }
        self.record_id_hints.get(index).cloned().flatten()
    }

    /// [`JsonRewriter::for_request`] for NDJSON bodies.
    pub fn ndjson_for_request(spec: RewriteSpec, protect: Arc<RequestProtection>) -> JsonRewriter {
        let mut rw = JsonRewriter::ndjson(spec);
        rw.protect = Some(protect);
        rw
    }

    /// A rewriter for NDJSON: JSON values separated by newlines (empty body allowed).
    pub fn ndjson(spec: RewriteSpec) -> JsonRewriter {
        let mut rw = JsonRewriter::new(spec);
        rw.sequence = true;
        rw.allow_empty = true;
        rw
    }

    /// A rewriter for a document found `depth` encodings deep inside another.
    pub(crate) fn nested(mut self, depth: u8) -> JsonRewriter {
        self.decode_depth = depth;
        self
    }

    /// Accepts an empty body (no document at all) as valid.
    pub fn allow_empty(mut self, allow: bool) -> JsonRewriter {
        self.allow_empty = allow;
        self
    }

    fn syntax(&self, pos: usize, kind: SyntaxError) -> RewriteError {
        RewriteError::Syntax {
            offset: self.consumed + pos as u64,
            kind,
        }
    }

    fn held_len(&self, io: &Io<'_>, pos: usize) -> usize {
        self.hold.len() + (pos - io.span)
    }

    /// Ends the current mode at `pos` (settling its bytes) and starts `mode`.
    fn set_mode(&mut self, io: &mut Io<'_>, pos: usize, mode: Mode) {
        match self.mode {
            Mode::Pass => io.out.extend_from_slice(&io.chunk[io.span..pos]),
            Mode::Hold => self.hold.extend_from_slice(&io.chunk[io.span..pos]),
            Mode::Discard => {}
        }
        io.span = pos;
        self.mode = mode;
    }

    /// Emits the held member prefix (dropping its comma when it is the
    /// container's first kept member) and continues in pass mode.
    fn release_held(&mut self, io: &mut Io<'_>, pos: usize, drop_comma: bool) {
        match self.mode {
            Mode::Pass => return,
            Mode::Discard => {
                io.span = pos;
                self.mode = Mode::Pass;
                return;
            }
            Mode::Hold => {}
        }
        let key_rewrite = self.pend.key_rewrite.take();
        if self.hold.is_empty() && key_rewrite.is_none() {
            // Everything held is still in this chunk: keep it in the pass span.
            if drop_comma {
                io.span += 1;
            }
            self.mode = Mode::Pass;
            return;
        }
        self.hold.extend_from_slice(&io.chunk[io.span..pos]);
        io.span = pos;
        let start = usize::from(drop_comma);
        match key_rewrite {
            Some(key) if self.pend.key_end <= self.hold.len() && self.pend.key_off >= start => {
                io.out
                    .extend_from_slice(&self.hold[start..self.pend.key_off]);
                io.out.extend_from_slice(&key);
                io.out.extend_from_slice(&self.hold[self.pend.key_end..]);
            }
            _ => io.out.extend_from_slice(&self.hold[start..]),
        }
        self.hold.clear();
        self.mode = Mode::Pass;
    }

    /// Drops whatever is held and starts discarding.
    fn drop_held(&mut self, io: &mut Io<'_>, pos: usize) {
        if self.mode == Mode::Hold {
            self.hold.clear();
            io.span = pos;
            self.mode = Mode::Discard;
        } else {
            self.set_mode(io, pos, Mode::Discard);
        }
    }

    fn run(&mut self, io: &mut Io<'_>) -> Result<(), RewriteError> {
        let chunk = io.chunk;
        let len = chunk.len();
        let mut pos = 0;
        while pos < len {
            pos = match self.state {
                State::Str => self.string(io, pos)?,
                State::Num(n) => self.number(io, pos, n)?,
                State::Lit => {
                    let want = self.lit[self.lit_pos];
                    if chunk[pos] != want {
                        return Err(self.syntax(pos, SyntaxError::UnexpectedByte));
                    }
                    self.lit_pos += 1;
                    if self.lit_pos == self.lit.len() {
                        self.after_scalar(io, pos + 1);
                    }
                    pos + 1
                }
                _ => {
                    let b = chunk[pos];
                    if is_ws(b) {
                        if b == b'\n' && self.state == State::End {
                            self.end_newline = true;
                            if self.mode == Mode::Discard {
                                // The rest of a dropped NDJSON line.
                                io.span = pos + 1;
                                self.mode = Mode::Pass;
                            }
                        }
                        pos + 1
                    } else {
                        self.structural(io, pos, b)?
                    }
                }
            };
        }
        match self.mode {
            Mode::Pass => io.out.extend_from_slice(&chunk[io.span..]),
            Mode::Hold => {
                self.hold.extend_from_slice(&chunk[io.span..]);
                let limit = self.spec.limits.max_token_bytes;
                if self.hold.len() > limit.saturating_add(64) {
                    return Err(RewriteError::TokenTooLarge { limit });
                }
            }
            Mode::Discard => {}
        }
        io.span = len;
        Ok(())
    }

    fn structural(&mut self, io: &mut Io<'_>, pos: usize, b: u8) -> Result<usize, RewriteError> {
        match self.state {
            State::Start => self.begin_top_value(io, pos, b),
            State::End => {
                if !self.sequence {
                    Err(self.syntax(pos, SyntaxError::TrailingData))
                } else if !self.end_newline {
                    Err(self.syntax(pos, SyntaxError::ValuesOnOneLine))
                } else {
                    self.begin_top_value(io, pos, b)
                }
            }
            State::ObjectFirst => match b {
                b'"' => Ok(self.begin_key(io, pos)),
                b'}' => self.close(io, pos, true),
                _ => Err(self.syntax(pos, SyntaxError::UnexpectedByte)),
            },
            State::ObjectKey => match b {
                b'"' => Ok(self.begin_key(io, pos)),
                b'}' => Err(self.syntax(pos, SyntaxError::TrailingComma)),
                _ => Err(self.syntax(pos, SyntaxError::UnexpectedByte)),
            },
            State::Colon => {
                if b == b':' {
                    self.state = State::Value;
                    Ok(pos + 1)
                } else {
                    Err(self.syntax(pos, SyntaxError::UnexpectedByte))
                }
            }
            State::Value => {
                if b == b']' {
                    Err(self.syntax(pos, SyntaxError::TrailingComma))
                } else {
                    self.begin_value(io, pos, b)
                }
            }
            State::ArrayFirst => {
                if b == b']' {
                    self.close(io, pos, false)
                } else {
                    self.begin_value(io, pos, b)
                }
            }
            State::AfterValue => match b {
                b',' => Ok(self.comma(io, pos)),
                b'}' => self.close(io, pos, true),
                b']' => self.close(io, pos, false),
                _ => Err(self.syntax(pos, SyntaxError::UnexpectedByte)),
            },
            State::Str | State::Num(_) | State::Lit => {
                Err(self.syntax(pos, SyntaxError::UnexpectedByte))
            }
        }
    }

    fn comma(&mut self, io: &mut Io<'_>, pos: usize) -> usize {
        let object = self.stack.last().is_some_and(|f| f.object);
        if self.skip_depth.is_none() {
            self.set_mode(io, pos, Mode::Hold);
            self.pend.has_comma = true;
            self.pend.key_rewrite = None;
        }
        self.state = if object {
            State::ObjectKey
        } else {
            State::Value
        };
        pos + 1
    }

    fn begin_key(&mut self, io: &mut Io<'_>, pos: usize) -> usize {
        self.str_is_key = true;
        if self.skip_depth.is_some() {
            self.str_kind = StrKind::Skip;
        } else {
            if self.mode != Mode::Hold {
                self.set_mode(io, pos, Mode::Hold);
                self.pend.has_comma = false;
                self.pend.key_rewrite = None;
            }
            self.pend.key_off = self.held_len(io, pos);
            self.str_kind = StrKind::Key;
        }
        self.begin_string();
        pos + 1
    }

    fn begin_string(&mut self) {
        self.state = State::Str;
        self.str_has_escape = false;
        self.esc = 0;
        self.utf8_need = 0;
    }

    fn begin_top_value(
        &mut self,
        io: &mut Io<'_>,
        pos: usize,
        b: u8,
    ) -> Result<usize, RewriteError> {
        self.values_seen += 1;
        self.top_records = self.counts.records;
        self.top_object = b == b'{';
        let ctx = Ctx {
            class: None,
            allowed: !self.spec.rules.is_allowlist(),
            nodes: self.spec.rules.root_nodes(),
            record: self.spec.rules.root_is_record() && b == b'{',
            descriptor: None,
        };
        self.want_id = false;
        self.record_mark = ctx.record.then(|| RecordMark {
            depth: 1,
            root: true,
            clear: self.counts.clear_mark(),
        });
        self.record_account = if ctx.record { self.next_record() } else { None };
        if self.protect.is_some() {
            self.path.clear();
            self.seg.clear();
        }
        if self.spec.drop_accounts.is_some() {
            self.top_nested = false;
            if ctx.record {
                self.open_record(io, pos, true, false);
            }
        }
        self.start_value(io, pos, b, ctx)
    }

    fn begin_value(&mut self, io: &mut Io<'_>, pos: usize, b: u8) -> Result<usize, RewriteError> {
        if self.skip_depth.is_some() {
            return self.start_value(io, pos, b, self.cap);
        }
        let Some(parent) = self.stack.last().copied() else {
            return Err(self.syntax(pos, SyntaxError::UnexpectedByte));
        };
        if let Some(top) = self.stack.last_mut() {
            top.had_children = true;
        }
        let member = if parent.object {
            self.pend.member
        } else {
            self.spec.rules.match_index(parent.ctx.nodes)
        };
        let container = b == b'{' || b == b'[';
        let strong = member.class.or(parent.ctx.class);
        // What the name's words (or the object's descriptor) say, where no
        // exact name or path decided.
        let weak = if !parent.object
            || (member.generic_value && (parent.descriptor.is_some() || parent.described))
        {
            parent.descriptor
        } else if member.generic_value && parent.typed {
            // Decided when the object closes: a descriptor may follow.
            None
        } else if container {
            member.container_class
        } else {
            member.word_class
        };
        let class = if container { strong } else { strong.or(weak) };
        let ctx = Ctx {
            class,
            allowed: parent.ctx.allowed || member.allowed_subtree,
            nodes: member.nodes,
            record: member.record,
            descriptor: if container { weak } else { None },
        };
        self.want_id = parent.object && member.record_id && parent.ctx.record;
        let kept_by_allowlist = parent.ctx.allowed || member.allowed_value;
        let action = strong.or(weak).map(|c| self.spec.actions.get(c));
        // A red-flag container an allowlist does not keep goes whole: even
        // emptied (`"cards":[{}]`) its shape would tell what it held.
        let red_flag_container = container && strong.or(weak).is_some();
        let mut remove = action == Some(Action::Remove)
            || (!kept_by_allowlist && (!container || red_flag_container));
        if self.protect.is_some() {
            self.seg.clear();
            if parent.object {
                self.seg.push_str(&self.pend_key);
                remove = self.drop_member;
            } else {
                use std::fmt::Write as _;
                let _ = write!(self.seg, "{}", parent.count);
            }
            if let Some(top) = self.stack.last_mut() {
                top.count += 1;
            }
        }
        if remove {
            self.typed_value = false;
            self.descriptor_value = false;
            match (strong.or(weak), action) {
                (Some(c), Some(Action::Remove)) => self.counts.add(c, Action::Remove),
                _ => self.counts.not_allowed += 1,
            }
            self.drop_held(io, pos);
            if self.want_id
                && self.spec.drop_accounts.is_some()
                && matches!(b, b'"' | b'-' | b'0'..=b'9')
            {
                // A removed id still decides whether its record is sent:
                // read it (start_value captures it), write nothing.
                self.id_hidden = true;
                return self.start_value(io, pos, b, ctx);
            }
            self.skip_depth = Some(self.stack.len());
            return self.start_value(io, pos, b, ctx);
        }
        let drop_comma = self.pend.has_comma && !parent.emitted_any;
        if member.record && self.spec.drop_accounts.is_some() {
            self.nested_record(io, pos, b == b'{', parent.emitted_any)?;
        }
        let empty_check = container
            && !ctx.allowed
            && !member.record
            && self.spec.rules.is_allowlist()
            && self.protect.is_none();
        if empty_check {
            let start = self.start_holding(io, pos);
            self.held.empty.push(EmptyHold {
                depth: self.stack.len() + 1,
                start,
                parent_emitted: parent.emitted_any,
                holding: true,
            });
        }
        self.release_held(io, pos, drop_comma);
        if let Some(top) = self.stack.last_mut() {
            top.emitted_any = true;
        }
        if !empty_check && self.held.empty.iter().any(|h| h.holding) {
            // Something is kept: every container around it is not empty.
            for h in &mut self.held.empty {
                h.holding = false;
            }
            if !self.held.any_holding() {
                self.check_held(io.out)?;
                self.held.release(io.out);
            }
        }
        if member.record {
            self.counts.records += 1;
            if self.record_mark.is_none_or(|m| m.root) && matches!(b, b'{' | b'[') {
                // A record below the root: the root is not one, and values
                // up to here were outside any record.
                self.record_mark = Some(RecordMark {
                    depth: self.stack.len() + 1,
                    root: false,
                    clear: self.counts.clear_mark(),
                });
                self.record_account = self.next_record();
            }
        }
        self.start_value(io, pos, b, ctx)
    }

    /// Starts the token of a value whose fate is decided.
    fn start_value(
        &mut self,
        io: &mut Io<'_>,
        pos: usize,
        b: u8,
        ctx: Ctx,
    ) -> Result<usize, RewriteError> {
        let skipping = self.skip_depth.is_some();
        let action = ctx.class.map(|c| self.spec.actions.get(c));
        match b {
            b'{' | b'[' => {
                if self.stack.len() >= self.spec.limits.max_depth {
                    return Err(RewriteError::TooDeep {
                        limit: self.spec.limits.max_depth,
                    });
                }
                let object = b == b'{';
                let path_len = self.path.len();
                if self.protect.is_some() && !self.stack.is_empty() {
                    self.path.push('/');
                    push_pointer_segment(&self.seg, &mut self.path);
                }
                self.stack.push(Frame {
                    object,
                    emitted_any: false,
                    ctx,
                    path_len,
                    count: 0,
                    descriptor: ctx.descriptor,
                    typed: false,
                    described: false,
                    had_children: false,
                });
                self.typed_value = false;
                self.descriptor_value = false;
                self.state = if object {
                    State::ObjectFirst
                } else {
                    State::ArrayFirst
                };
            }
            b'"' => {
                self.str_is_key = false;
                self.str_kind = if skipping {
                    StrKind::Skip
                } else {
                    match (ctx.class, action) {
                        _ if self.want_id || self.protect.is_some() => StrKind::Capture,
                        _ if self.typed_value || self.descriptor_value => StrKind::Capture,
                        (Some(c), _) if self.protect.as_ref().is_some_and(|p| p.encrypts(c)) => {
                            StrKind::Capture
                        }
                        (Some(c), Some(Action::Clear)) => {
                            self.counts.add(c, Action::Clear);
                            StrKind::Pass
                        }
                        (Some(_), _) => StrKind::Capture,
                        (None, _) if !self.spec.rules.detector_set().is_empty() => StrKind::Capture,
                        (None, _) => StrKind::Pass,
                    }
                };
                if self.str_kind == StrKind::Capture {
                    self.set_mode(io, pos, Mode::Hold);
                    self.cap = ctx;
                }
                self.begin_string();
            }
            b'-' | b'0'..=b'9' => {
                if !skipping {
                    let capture = match (ctx.class, action) {
                        _ if self.want_id || self.protect.is_some() => true,
                        _ if self.typed_value => true,
                        (Some(c), _) if self.protect.as_ref().is_some_and(|p| p.encrypts(c)) => {
                            true
                        }
                        (Some(c), Some(Action::Clear)) => {
                            self.counts.add(c, Action::Clear);
                            false
                        }
                        (Some(_), _) => true,
                        (None, _) => self.spec.rules.detector_set().contains(DetectorKind::Card),
                    };
                    if capture {
                        self.set_mode(io, pos, Mode::Hold);
                        self.cap = ctx;
                    }
                }
                self.state = State::Num(match b {
                    b'-' => Num::Minus,
                    b'0' => Num::Zero,
                    _ => Num::Int,
                });
            }
            b't' | b'f' | b'n' => {
                self.typed_value = false;
                self.descriptor_value = false;
                self.begin_lit(match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                });
            }
            _ => return Err(self.syntax(pos, SyntaxError::UnexpectedByte)),
        }
        Ok(pos + 1)
    }

    fn begin_lit(&mut self, word: &'static [u8]) {
        self.lit = word;
        self.lit_pos = 1;
        self.state = State::Lit;
    }

    fn close(&mut self, io: &mut Io<'_>, pos: usize, object: bool) -> Result<usize, RewriteError> {
        let Some(frame) = self.stack.pop() else {
            return Err(self.syntax(pos, SyntaxError::UnexpectedByte));
        };
        if frame.object != object {
            return Err(self.syntax(pos, SyntaxError::MismatchedClose));
        }
        if self.protect.is_some() {
            self.path.truncate(frame.path_len);
        }
        if frame.typed {
            if self.mode == Mode::Pass {
                io.out.extend_from_slice(&io.chunk[io.span..pos + 1]);
                io.span = pos + 1;
            }
            let class = |fallback: Option<FieldClass>| {
                frame
                    .descriptor
                    .or(if frame.described { None } else { fallback })
            };
            self.close_typed(io.out, &class)?;
        }
        if self
            .held
            .empty
            .last()
            .is_some_and(|h| h.depth == self.stack.len() + 1)
        {
            self.close_emptiable(io, pos + 1, frame.had_children)?;
        }
        if self
            .held
            .open
            .last()
            .is_some_and(|r| r.depth == self.stack.len() + 1)
        {
            self.close_record(io, pos + 1)?;
        }
        if let Some(mark) = self
            .record_mark
            .filter(|m| !m.root && m.depth == self.stack.len() + 1)
        {
            self.counts.record_done(&mark.clear);
            self.record_mark = None;
            self.record_account = None;
        }
        self.after_scalar(io, pos + 1);
        Ok(pos + 1)
    }

    /// Drop filter: a record below the root starts at `pos` (its member
    /// prefix, if any, is still held or in the pass span). An object record
    /// is held from here on, separator and key included.
    fn nested_record(
        &mut self,
        io: &mut Io<'_>,
        pos: usize,
        object: bool,
        parent_emitted: bool,
    ) -> Result<(), RewriteError> {
        self.top_nested = true;
        if self.held.open.last().is_some_and(|r| r.root) {
            // The top-level value holds records, so it is not one itself.
            if self.mode == Mode::Pass {
                io.out.extend_from_slice(&io.chunk[io.span..pos]);
                io.span = pos;
            }
            self.check_held(io.out)?;
            self.held.open.pop();
            if !self.held.any_holding() {
                self.held.release(io.out);
            }
        }
        if object {
            self.open_record(io, pos, false, parent_emitted);
        }
        Ok(())
    }

    /// Drop filter: starts holding the output of an object record. Everything
    /// before the record (the pass span up to `pos`, or up to the held member
    /// prefix) is in `out` first, so the held output starts exactly at the
    /// record's first byte.
    fn open_record(&mut self, io: &mut Io<'_>, pos: usize, root: bool, parent_emitted: bool) {
        let start = self.start_holding(io, pos);
        self.held.open.push(OpenRecord {
            depth: self.stack.len() + 1,
            start,
            holding: true,
            dropped: false,
            root,
            parent_emitted,
            counts: CountsMark::of(&self.counts),
        });
    }

    /// Everything before `pos` (the pass span) goes to `out`, and output from
    /// here on is held: returns the held offset where it starts.
    fn start_holding(&mut self, io: &mut Io<'_>, pos: usize) -> usize {
        if self.mode == Mode::Pass {
            io.out.extend_from_slice(&io.chunk[io.span..pos]);
            io.span = pos;
        }
        match self.held.base {
            Some(_) => self.held.len(io.out),
            None => {
                self.held.base = Some(io.out.len());
                0
            }
        }
    }

    /// Fails when the held output is over the limit. Called whenever held
    /// output is about to shrink or be released, so whether a body fails
    /// does not depend on how it was chunked.
    fn check_held(&self, out: &[u8]) -> Result<(), RewriteError> {
        let limit = self.spec.limits.max_token_bytes;
        if self.held.base.is_some() && self.held.len(out) > limit {
            return Err(RewriteError::RecordTooLarge { limit });
        }
        Ok(())
    }

    /// Drop filter: the innermost open record's id has been read.
    fn record_id(&mut self, out: &mut Vec<u8>, dropped: bool) -> Result<(), RewriteError> {
        let depth = self.stack.len();
        let Some(rec) = self.held.open.last_mut().filter(|r| r.depth == depth) else {
            return Ok(());
        };
        if dropped {
            rec.dropped = true;
        } else if rec.holding && !rec.dropped {
            rec.holding = false;
            if !self.held.any_holding() {
                self.check_held(out)?;
                self.held.release(out);
            }
        }
        Ok(())
    }

    /// Drop filter: the innermost open record ended just before `end` (its
    /// closing brace is in the pass span).
    fn close_record(&mut self, io: &mut Io<'_>, end: usize) -> Result<(), RewriteError> {
        if self.mode == Mode::Pass {
            io.out.extend_from_slice(&io.chunk[io.span..end]);
        }
        io.span = end;
        self.mode = Mode::Pass;
        self.check_held(io.out)?;
        let Some(rec) = self.held.open.pop() else {
            return Ok(());
        };
        if rec.dropped {
            if !rec.holding || (rec.root && !self.sequence) {
                return Err(RewriteError::RecordWithheld);
            }
            self.held.truncate(io.out, rec.start);
            rec.counts.restore(&mut self.counts);
            self.counts.dropped_records += 1;
            if rec.root {
                // Not counted as a record; the rest of its line goes too.
                self.top_object = false;
                self.root_id = None;
                self.mode = Mode::Discard;
            } else if let Some(parent) = self.stack.last_mut() {
                parent.emitted_any = rec.parent_emitted;
            }
        }
        if rec.holding && !self.held.any_holding() {
            self.held.release(io.out);
        }
        Ok(())
    }

    /// A value (scalar or container) ended just before `end`.
    fn after_scalar(&mut self, io: &mut Io<'_>, end: usize) {
        if self.skip_depth == Some(self.stack.len()) {
            self.skip_depth = None;
            io.span = end;
            self.mode = Mode::Pass;
        }
        if self.stack.is_empty() {
            let root_id = self.root_id.take();
            let root_mark = self.record_mark.take().filter(|m| m.root);
            if self.spec.rules.root_is_record()
                && self.counts.records == self.top_records
                && self.top_object
                && !self.top_nested
            {
                self.counts.records += 1;
                if let Some(mark) = root_mark {
                    self.counts.record_done(&mark.clear);
                }
                if let Some(id) = root_id {
                    if self.counts.account_ids.len() < MAX_ACCOUNT_IDS {
                        self.counts.account_ids.push(id);
                    }
                }
            }
            self.state = State::End;
            self.end_newline = false;
        } else {
            self.state = State::AfterValue;
        }
    }

    fn string(&mut self, io: &mut Io<'_>, mut i: usize) -> Result<usize, RewriteError> {
        let chunk = io.chunk;
        loop {
            if self.esc != 0 || self.utf8_need != 0 {
                let Some(&b) = chunk.get(i) else {
                    return Ok(i);
                };
                if self.esc == 1 {
                    self.esc = match b {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 0,
                        b'u' => 2,
                        _ => return Err(self.syntax(i, SyntaxError::InvalidEscape)),
                    };
                } else if self.esc != 0 {
                    if !b.is_ascii_hexdigit() {
                        return Err(self.syntax(i, SyntaxError::InvalidEscape));
                    }
                    self.esc = if self.esc == 5 { 0 } else { self.esc + 1 };
                } else {
                    if b < self.utf8_lo || b > self.utf8_hi {
                        return Err(self.syntax(i, SyntaxError::InvalidUtf8));
                    }
                    self.utf8_need -= 1;
                    self.utf8_lo = 0x80;
                    self.utf8_hi = 0xBF;
                }
                i += 1;
                continue;
            }
            let rest = &chunk[i..];
            // Most strings are short: eight bytes at a time in a register
            // beats setting up a SIMD search.
            let window = rest.len().min(SHORT_STRING);
            let plain_run = plain_prefix(&rest[..window]);
            if plain_run < window {
                i += plain_run;
                match chunk[i] {
                    b'"' | b'\\' => {}
                    _ => {
                        // A control or non-ASCII byte: validate it and go on.
                        self.validate_text(&chunk[i..i + 1], i)?;
                        i += 1;
                        continue;
                    }
                }
                if chunk[i] == b'\\' {
                    self.esc = 1;
                    self.str_has_escape = true;
                    i += 1;
                    continue;
                }
                return self.end_string(io, i);
            }
            if window == rest.len() {
                return Ok(i + window);
            }
            let stop = memchr2(b'"', b'\\', rest);
            let plain = &rest[..stop.unwrap_or(rest.len())];
            if !printable_ascii(plain) {
                self.validate_text(plain, i)?;
            }
            i += plain.len();
            if stop.is_none() {
                return Ok(i);
            }
            if self.utf8_need != 0 {
                return Err(self.syntax(i, SyntaxError::InvalidUtf8));
            }
            if chunk[i] == b'\\' {
                self.esc = 1;
                self.str_has_escape = true;
                i += 1;
                continue;
            }
            return self.end_string(io, i);
        }
    }

    /// Validates string content with control or non-ASCII bytes, carrying an
    /// unfinished UTF-8 sequence into the next chunk.
    fn validate_text(&mut self, bytes: &[u8], base: usize) -> Result<(), RewriteError> {
        for (k, &b) in bytes.iter().enumerate() {
            if self.utf8_need != 0 {
                if b < self.utf8_lo || b > self.utf8_hi {
                    return Err(self.syntax(base + k, SyntaxError::InvalidUtf8));
                }
                self.utf8_need -= 1;
                self.utf8_lo = 0x80;
                self.utf8_hi = 0xBF;
                continue;
            }
            let (need, lo, hi) = match b {
                0x00..=0x1F => {
                    return Err(self.syntax(base + k, SyntaxError::ControlCharacterInString))
                }
                0x20..=0x7F => continue,
                0xC2..=0xDF => (1, 0x80, 0xBF),
                0xE0 => (2, 0xA0, 0xBF),
                0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
                0xED => (2, 0x80, 0x9F),
                0xF0 => (3, 0x90, 0xBF),
                0xF1..=0xF3 => (3, 0x80, 0xBF),
                0xF4 => (3, 0x80, 0x8F),
                _ => return Err(self.syntax(base + k, SyntaxError::InvalidUtf8)),
            };
            self.utf8_need = need;
            self.utf8_lo = lo;
            self.utf8_hi = hi;
        }
        Ok(())
    }

    /// The closing quote of a string is at `q`.
    fn end_string(&mut self, io: &mut Io<'_>, q: usize) -> Result<usize, RewriteError> {
        let end = q + 1;
        match self.str_kind {
            StrKind::Key => {
                self.key_done(io, q)?;
                self.state = State::Colon;
            }
            StrKind::Capture => {
                self.capture_done(io, end, false)?;
                self.after_scalar(io, end);
            }
            StrKind::Pass | StrKind::Skip => {
                if self.str_is_key {
                    self.state = State::Colon;
                } else {
                    self.after_scalar(io, end);
                }
            }
        }
        Ok(end)
    }

    fn key_done(&mut self, io: &mut Io<'_>, q: usize) -> Result<(), RewriteError> {
        let end = q + 1;
        self.pend.key_end = self.held_len(io, end);
        let raw: &[u8] = if self.hold.is_empty() {
            &io.chunk[io.span + self.pend.key_off + 1..q]
        } else {
            self.hold.extend_from_slice(&io.chunk[io.span..end]);
            io.span = end;
            &self.hold[self.pend.key_off + 1..self.hold.len() - 1]
        };
        let limit = self.spec.limits.max_token_bytes;
        if raw.len() > limit {
            return Err(RewriteError::TokenTooLarge { limit });
        }
        // Content was validated while scanning; only escapes need decoding.
        let key: Cow<'_, [u8]> = if self.str_has_escape {
            match decode_json_string(raw) {
                Ok(k) => Cow::Owned(k.into_owned().into_bytes()),
                Err(_) => {
                    return Err(RewriteError::Syntax {
                        offset: self.consumed + q as u64,
                        kind: SyntaxError::InvalidEscape,
                    })
                }
            }
        } else {
            Cow::Borrowed(raw)
        };
        let parent = self.stack.last().map_or(NodeSet::EMPTY, |f| f.ctx.nodes);
        self.pend.member = self.spec.rules.match_key(&key, parent);
        if let Some(protect) = self.protect.clone() {
            self.pend_key.clear();
            self.pend_key.push_str(&String::from_utf8_lossy(&key));
            self.drop_member = self.pend_key.ends_with(BLIND_INDEX_SUFFIX);
            // A card number as a member name would be stored in the clear too.
            self.findings.clear();
            self.spec
                .detectors
                .scan(&key, self.spec.rules.detector_set(), &mut self.findings);
            if self.findings.iter().any(|f| protect.must_seal(f)) {
                let mut path = self.path.clone();
                path.push('/');
                push_pointer_segment("(a member name)", &mut path);
                return Err(RewriteError::ClearCardInRequest { path });
            }
        }
        let detectors = self.spec.rules.detector_set();
        if !detectors.is_empty()
            && (count_digits(raw) >= self.spec.detectors.min_digits(detectors)
                || may_hide_value(raw))
        {
            let key = String::from_utf8_lossy(&key);
            if mask_unnamed_at(
                &self.spec,
                &key,
                &mut self.findings,
                &mut self.counts,
                &mut self.text,
                self.decode_depth,
                rewrite_nested,
            ) {
                let mut encoded = Vec::with_capacity(self.text.len() + 2);
                write_json_string(&self.text, &mut encoded);
                self.pend.key_rewrite = Some(encoded);
            }
        }
        self.typed_member(io);
        Ok(())
    }

    /// After a key: a generic value member of an object that does not say yet
    /// what it holds starts holding the object's output (its descriptor may
    /// come later); a descriptor member's value is read for a class name.
    fn typed_member(&mut self, io: &mut Io<'_>) {
        let member = self.pend.member;
        self.typed_value = false;
        self.descriptor_value = false;
        if self.protect.is_some() || member.class.is_some() {
            return;
        }
        let depth = self.stack.len();
        let Some(frame) = self.stack.last_mut() else {
            return;
        };
        // Customer records name people and hold account ids: a record's
        // `name` is no descriptor and its `id` no generic value.
        if frame.ctx.class.is_some()
            || frame.descriptor.is_some()
            || frame.described
            || !frame.object
            || frame.ctx.record
        {
            return;
        }
        if member.descriptor {
            self.descriptor_value = true;
        }
        if member.generic_value {
            if !frame.typed {
                frame.typed = true;
                if self.held.base.is_none() {
                    self.held.base = Some(io.out.len());
                }
                self.held.typed.push(TypedHold {
                    depth,
                    values: Vec::new(),
                });
            }
            self.typed_value = true;
        }
    }

    /// An allowlist container under an [`EmptyHold`] has closed just before
    /// `end`: emptied by the allowlist, it is cut out whole.
    fn close_emptiable(
        &mut self,
        io: &mut Io<'_>,
        end: usize,
        had_children: bool,
    ) -> Result<(), RewriteError> {
        if self.mode == Mode::Pass {
            io.out.extend_from_slice(&io.chunk[io.span..end]);
            io.span = end;
        }
        let Some(hold) = self.held.empty.pop() else {
            return Ok(());
        };
        if hold.holding && had_children {
            self.held.truncate(io.out, hold.start);
            if let Some(parent) = self.stack.last_mut() {
                parent.emitted_any = hold.parent_emitted;
            }
            self.counts.not_allowed += 1;
        }
        self.check_held(io.out)?;
        if !self.held.any_holding() {
            self.held.release(io.out);
        }
        Ok(())
    }

    /// A held typed object has closed (its output is all in the held
    /// output): masks its generic values if a descriptor named their class,
    /// then releases the output if nothing else holds it.
    fn close_typed(
        &mut self,
        out: &mut Vec<u8>,
        class_of: &dyn Fn(Option<FieldClass>) -> Option<FieldClass>,
    ) -> Result<(), RewriteError> {
        let depth = self.stack.len() + 1;
        if self.held.typed.last().is_none_or(|h| h.depth != depth) {
            return Ok(());
        }
        let Some(hold) = self.held.typed.pop() else {
            return Ok(());
        };
        {
            let saved = (self.cap, self.str_has_escape);
            let mut masked = Vec::new();
            for v in hold.values.iter().rev() {
                let Some(class) = class_of(v.fallback) else {
                    continue;
                };
                masked.clear();
                self.cap = Ctx {
                    class: Some(class),
                    allowed: true,
                    nodes: NodeSet::EMPTY,
                    record: false,
                    descriptor: None,
                };
                self.str_has_escape = v.has_escape;
                if v.number {
                    self.transform_number(&v.raw, &mut masked);
                } else {
                    self.transform_string(&v.raw, self.consumed, &mut masked)?;
                }
                self.held.replace(out, v.start, v.end, &masked);
            }
            (self.cap, self.str_has_escape) = saved;
        }
        self.check_held(out)?;
        if !self.held.any_holding() {
            self.held.release(out);
        }
        Ok(())
    }

    fn number(&mut self, io: &mut Io<'_>, mut i: usize, mut n: Num) -> Result<usize, RewriteError> {
        let chunk = io.chunk;
        while let Some(&b) = chunk.get(i) {
            let next = match (n, b) {
                (Num::Minus, b'0') => Num::Zero,
                (Num::Minus, b'1'..=b'9') => Num::Int,
                (Num::Int, b'0'..=b'9') => Num::Int,
                (Num::Zero | Num::Int, b'.') => Num::Dot,
                (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
                (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
                (Num::Exp, b'+' | b'-') => Num::ExpSign,
                (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Num::ExpDigits,
                _ => {
                    if !n.accepting() || b.is_ascii_digit() {
                        return Err(self.syntax(i, SyntaxError::InvalidNumber));
                    }
                    self.end_number(io, i)?;
                    return Ok(i);
                }
            };
            n = next;
            i += 1;
        }
        self.state = State::Num(n);
        Ok(i)
    }

    fn end_number(&mut self, io: &mut Io<'_>, end: usize) -> Result<(), RewriteError> {
        if self.mode == Mode::Hold && self.skip_depth.is_none() {
            self.capture_done(io, end, true)?;
        }
        self.after_scalar(io, end);
        Ok(())
    }

    /// A held value (string with quotes, or number) ends just before `end`:
    /// transform it and write the result.
    fn capture_done(
        &mut self,
        io: &mut Io<'_>,
        end: usize,
        number: bool,
    ) -> Result<(), RewriteError> {
        let mut held = std::mem::take(&mut self.hold);
        let raw: &[u8] = if held.is_empty() {
            &io.chunk[io.span..end]
        } else {
            held.extend_from_slice(&io.chunk[io.span..end]);
            &held
        };
        let limit = self.spec.limits.max_token_bytes;
        let mut id_dropped = None;
        if self.want_id {
            self.want_id = false;
            if self
                .record_mark
                .is_some_and(|m| m.depth == self.stack.len())
            {
                // A second, different id in one record names no single
                // account: nothing opens for the empty id.
                let id = account_id(raw, number);
                self.record_account = match (self.record_account.take(), id) {
                    (None, id) => id,
                    (Some(known), Some(id)) if known == id => Some(known),
                    _ => Some(String::new()),
                };
                let marked = self.records_marked;
                if let Some(slot) = self
                    .record_ids
                    .as_mut()
                    .and_then(|ids| ids.get_mut(marked.wrapping_sub(1)))
                {
                    *slot = self.record_account.clone();
                }
            }
            if self.stack.len() == 1 {
                self.root_id = account_id(raw, number);
            } else if let Some(id) = account_id(raw, number) {
                if self.counts.account_ids.len() < MAX_ACCOUNT_IDS {
                    self.counts.account_ids.push(id);
                }
            }
            if let Some(filter) = &self.spec.drop_accounts {
                id_dropped = Some(drops_id(filter.as_ref(), raw, number));
            }
        }
        let typed_value = std::mem::take(&mut self.typed_value);
        if std::mem::take(&mut self.descriptor_value) && !number && raw.len() <= 258 {
            let inner = &raw[1..raw.len() - 1];
            let label = decode_json_string(inner).unwrap_or(Cow::Borrowed(""));
            let class = self.spec.rules.classify_label(&label);
            if let Some(frame) = self.stack.last_mut() {
                frame.described = true;
                if frame.descriptor.is_none() {
                    frame.descriptor = class;
                }
            }
        }
        let typed_start = self.held.len(io.out);
        let result = if raw.len() > limit.saturating_add(2) {
            Err(RewriteError::TokenTooLarge { limit })
        } else if self.id_hidden {
            self.id_hidden = false;
            Ok(())
        } else if let Some(protect) = self.protect.clone() {
            self.protect_value(&protect, raw, number, io.out)
        } else if number {
            self.transform_number(raw, io.out);
            Ok(())
        } else {
            let offset = self.consumed + end as u64;
            self.transform_string(raw, offset, io.out)
        };
        if typed_value && result.is_ok() {
            let value = TypedValue {
                start: typed_start,
                end: self.held.len(io.out),
                raw: raw.to_vec(),
                number,
                has_escape: self.str_has_escape,
                fallback: self.pend.member.word_class,
            };
            if let Some(hold) = self.held.typed.last_mut() {
                hold.values.push(value);
            }
        }
        held.clear();
        self.hold = held;
        io.span = end;
        self.mode = Mode::Pass;
        result?;
        match id_dropped {
            Some(dropped) => self.record_id(io.out, dropped),
            None => Ok(()),
        }
    }

    fn transform_number(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let raw_number = raw;
        let ctx = self.cap;
        let text = std::str::from_utf8(raw).unwrap_or("");
        match ctx.class {
            Some(class) => {
                let action = self.spec.actions.get(class);
                self.counts.add(class, effective_plain(action));
                self.text.clear();
                match effective_plain(action) {
                    Action::Clear => {
                        out.extend_from_slice(raw);
                        return;
                    }
                    Action::Redact | Action::Remove => {
                        self.text.push_str(self.spec.rules.redact_token())
                    }
                    Action::Last4 | Action::Decrypt => mask::last4(text, &mut self.text),
                }
                write_json_string(&self.text, out);
            }
            None => {
                self.findings.clear();
                let set = DetectorSet::NONE.with(DetectorKind::Card);
                // `4.111111111111111e15` and `4111111111111111.0` are the same
                // card number as the plain digits.
                let expanded = integer_digits(raw);
                let (raw, text) = match &expanded {
                    Some(digits) => (digits.as_bytes(), digits.as_str()),
                    None => (raw, text),
                };
                self.spec.detectors.scan(raw, set, &mut self.findings);
                if self.findings.is_empty() {
                    out.extend_from_slice(raw_number);
                    return;
                }
                self.text.clear();
                apply_findings(
                    text,
                    &self.findings,
                    &self.spec.actions,
                    self.spec.rules.redact_token(),
                    &mut self.counts,
                    &mut self.text,
                );
                if self.text == text {
                    out.extend_from_slice(raw_number);
                } else {
                    write_json_string(&self.text, out);
                }
            }
        }
    }

    fn transform_string(
        &mut self,
        raw: &[u8],
        offset: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let ctx = self.cap;
        let inner = &raw[1..raw.len() - 1];
        let detectors = self.spec.rules.detector_set();
        if ctx.class.is_none()
            && !mask::starts_like_envelope(inner)
            && count_digits(inner) < self.spec.detectors.min_digits(detectors)
            && !may_hide_value(inner)
        {
            out.extend_from_slice(raw);
            return Ok(());
        }
        if let Some(class) = ctx.class {
            let action = effective_plain(self.spec.actions.get(class));
            if action == Action::Last4
                && !self.str_has_escape
                && !mask::starts_like_envelope(inner)
                && mask::last4_ascii_json(inner, out)
            {
                self.counts.add(class, Action::Last4);
                return Ok(());
            }
        }
        let text = if self.str_has_escape {
            decode_json_string(inner).map_err(|_| RewriteError::Syntax {
                offset,
                kind: SyntaxError::InvalidEscape,
            })?
        } else {
            Cow::Borrowed(
                std::str::from_utf8(inner).map_err(|_| RewriteError::Syntax {
                    offset,
                    kind: SyntaxError::InvalidUtf8,
                })?,
            )
        };
        self.text.clear();
        if looks_like_envelope(&text) {
            let class = ctx.class.unwrap_or(FieldClass::CardNumber);
            let action = self.spec.actions.get(class);
            if action == Action::Clear {
                // Ciphertext: showing it releases nothing.
                self.counts.add(class, Action::Clear);
                out.extend_from_slice(raw);
                return Ok(());
            }
            self.envelope(&text, class, action);
            write_json_string(&self.text, out);
            if action == Action::Decrypt {
                // The plaintext's last copy before the response buffer.
                zeroize::Zeroize::zeroize(&mut self.text);
            }
            return Ok(());
        }
        match ctx.class {
            Some(class) => {
                let action = effective_plain(self.spec.actions.get(class));
                self.counts.add(class, action);
                match action {
                    Action::Clear => {
                        out.extend_from_slice(raw);
                        return Ok(());
                    }
                    Action::Redact | Action::Remove => {
                        self.text.push_str(self.spec.rules.redact_token())
                    }
                    Action::Last4 | Action::Decrypt => mask::last4(&text, &mut self.text),
                }
                write_json_string(&self.text, out);
            }
            None => {
                let changed = mask_unnamed_at(
                    &self.spec,
                    &text,
                    &mut self.findings,
                    &mut self.counts,
                    &mut self.text,
                    self.decode_depth,
                    rewrite_nested,
                );
                if changed {
                    write_json_string(&self.text, out);
                } else {
                    out.extend_from_slice(raw);
                }
            }
        }
        Ok(())
    }

    /// Where the current value is, as a JSON pointer.
    fn value_path(&self) -> String {
        let mut p = self.path.clone();
        if !self.stack.is_empty() {
            p.push('/');
            push_pointer_segment(&self.seg, &mut p);
        }
        if p.is_empty() {
            p.push('/');
        }
        p
    }

    /// Write requests: seals values of encrypted classes, refuses (or seals)
    /// card numbers in unnamed fields, passes everything else.
    fn protect_value(
        &mut self,
        protect: &RequestProtection,
        raw: &[u8],
        number: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let ctx = self.cap;
        let inner = if number { raw } else { &raw[1..raw.len() - 1] };
        let text: Cow<'_, str> = if !number && self.str_has_escape {
            decode_json_string(inner).map_err(|_| RewriteError::CannotEncrypt {
                path: self.value_path(),
            })?
        } else {
            String::from_utf8_lossy(inner)
        };
        match ctx.class {
            Some(class) if protect.encrypts(class) => {
                if looks_like_envelope(&text) {
                    // Already sealed (a record read and written back): keep
                    // it only if it is genuine — a look-alike could carry
                    // anything in the clear.
                    let genuine = envelope_view(&text).is_some()
                        && protect.sealer.as_ref().is_some_and(|s| {
                            s.verify_for(class, &text, self.record_account.as_deref())
                        });
                    return if genuine {
                        out.extend_from_slice(raw);
                        Ok(())
                    } else {
                        Err(RewriteError::CannotEncrypt {
                            path: self.value_path(),
                        })
                    };
                }
                let path = self.value_path();
                let cannot = || RewriteError::CannotEncrypt { path: path.clone() };
                let sealer = protect.sealer.as_ref().ok_or_else(cannot)?;
                let envelope = sealer
                    .seal_for(class, &text, self.record_account.as_deref())
                    .map_err(|_| cannot())?;
                write_json_string(&envelope, out);
                self.counts.sealed += 1;
                let in_object = self.stack.last().is_some_and(|f| f.object);
                if protect.blind_index[class.index()] && in_object {
                    let index = sealer.blind_index(class, &text).map_err(|_| cannot())?;
                    out.push(b',');
                    let mut name = self.pend_key.clone();
                    name.push_str(BLIND_INDEX_SUFFIX);
                    write_json_string(&name, out);
                    out.push(b':');
                    write_json_string(&index, out);
                }
                Ok(())
            }
            // Other classes (and unnamed fields) are written as they are,
            // unless a card number hides in them.
            _ => {
                self.findings.clear();
                let set = if number {
                    DetectorSet::NONE.with(DetectorKind::Card)
                } else {
                    self.spec.rules.detector_set()
                };
                self.spec
                    .detectors
                    .scan(text.as_bytes(), set, &mut self.findings);
                let path = self.value_path();
                let sealed = protect.seal_detected(
                    &text,
                    &self.findings,
                    &|| path.clone(),
                    &mut self.counts,
                )?;
                // What would be stored must not hide a card either.
                if !number && protect.hides_card(sealed.as_deref().unwrap_or(&text)) {
                    return Err(RewriteError::ClearCardInRequest { path });
                }
                match sealed {
                    None => out.extend_from_slice(raw),
                    Some(rebuilt) => write_json_string(&rebuilt, out),
                }
                Ok(())
            }
        }
    }

    /// Writes the display of an envelope into `self.text`.
    fn envelope(&mut self, text: &str, class: FieldClass, action: Action) {
        super::sealed::envelope_display(
            &self.spec,
            text,
            class,
            action,
            self.record_account.as_deref(),
            &mut self.counts,
            &mut self.text,
        );
    }

    fn poison<T>(&mut self, r: Result<T, RewriteError>) -> Result<T, RewriteError> {
        if r.is_err() {
            self.poisoned = true;
            self.hold.clear();
            self.held.clear();
        }
        r
    }
}

/// The digits of a JSON number written with a fraction or an exponent whose
/// value is a whole number of 13 to 19 digits (a card number in disguise).
fn integer_digits(raw: &[u8]) -> Option<String> {
    if !raw.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    let text = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = format!("{int}{frac}");
    let point = i32::try_from(int.len()).ok()?.checked_add(exponent)?;
    if !(0..=40).contains(&point) {
        return None;
    }
    let point = point as usize;
    if point < digits.len() {
        if digits[point..].bytes().any(|b| b != b'0') {
            return None;
        }
        digits.truncate(point);
    } else {
        digits.extend(std::iter::repeat_n('0', point - digits.len()));
    }
    let digits = digits.trim_start_matches('0');
    (13..=19).contains(&digits.len()).then(|| digits.to_owned())
}

/// Suffix of the blind-index sibling the gateway writes next to a field.
pub const BLIND_INDEX_SUFFIX: &str = "_bidx";

/// Appends `seg` to a JSON pointer (RFC 6901 escaping).
fn push_pointer_segment(seg: &str, path: &mut String) {
    for c in seg.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

/// A record's id, when it is a short, plain ASCII id.
fn account_id(raw: &[u8], number: bool) -> Option<String> {
    let inner = if number {
        raw
    } else {
        raw.get(1..raw.len().saturating_sub(1))?
    };
    (!inner.is_empty()
        && inner.len() <= 64
        && inner
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    .then(|| String::from_utf8_lossy(inner).into_owned())
}

/// True when the record id `raw` (a number, or a string with its quotes)
/// names an account `filter` drops. Unlike [`account_id`], any id is
/// looked up: a string's escapes are undone first.
fn drops_id(filter: &dyn super::AccountFilter, raw: &[u8], number: bool) -> bool {
    if number {
        return std::str::from_utf8(raw).is_ok_and(|id| filter.drops(id));
    }
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
    match decode_json_string(inner) {
        Ok(id) => filter.drops(&id),
        // Validated while scanning, so this does not happen; if it did, the
        // record is withheld rather than sent.
        Err(_) => true,
    }
}

/// JSON text found inside a value `depth` encodings deep, rewritten with
/// the same rules: the rewritten bytes and their counts, `None` when it is
/// not JSON. The per-value core ([`super::value`]) sits below this rewriter
/// and reaches it only through this function, handed in by its callers.
pub(crate) fn rewrite_nested(
    spec: &RewriteSpec,
    text: &str,
    depth: u8,
) -> Option<(Vec<u8>, Counts)> {
    let mut inner = JsonRewriter::new(spec.clone()).nested(depth);
    let rewritten = super::rewrite_all(&mut inner, text.as_bytes()).ok()?;
    Some((rewritten, inner.counts))
}

impl BodyRewriter for JsonRewriter {
    fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.poisoned {
            return Err(RewriteError::Poisoned);
        }
        let limit = self.spec.limits.max_body_bytes;
        if self.consumed + input.len() as u64 > limit {
            self.poisoned = true;
            return Err(RewriteError::BodyTooLarge { limit });
        }
        let mark = out.len();
        if self.held.base.is_some() {
            self.held.base = Some(mark);
        }
        let mut io = Io {
            chunk: input,
            span: 0,
            out,
        };
        let mut r = self.run(&mut io);
        if let (Ok(()), Some(base)) = (&r, self.held.base) {
            // Held output waits in the side buffer until its record is decided.
            self.held.buf.extend_from_slice(&out[base..]);
            out.truncate(base);
            let limit = self.spec.limits.max_token_bytes;
            if self.held.buf.len() > limit {
                r = Err(RewriteError::RecordTooLarge { limit });
            }
        }
        if r.is_err() {
            // Nothing of a failed chunk leaves, not even its clean prefix.
            out.truncate(mark);
        }
        self.consumed += input.len() as u64;
        self.poison(r)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.poisoned {
            return Err(RewriteError::Poisoned);
        }
        let r = match self.state {
            State::End => Ok(()),
            State::Start if self.values_seen == 0 => {
                if self.allow_empty {
                    Ok(())
                } else {
                    Err(RewriteError::Empty)
                }
            }
            State::Num(n) if n.accepting() && self.stack.is_empty() => {
                let mut io = Io {
                    chunk: &[],
                    span: 0,
                    out,
                };
                self.end_number(&mut io, 0)
            }
            _ => Err(RewriteError::UnexpectedEnd),
        };
        self.poison(r)
    }

    fn counts(&self) -> &Counts {
        &self.counts
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;

#[cfg(test)]
mod plain_prefix_tests {
    use super::{plain_prefix, STRING_PLAIN};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn word_scan_agrees_with_the_table(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let want = bytes.iter().position(|&b| !STRING_PLAIN[b as usize]).unwrap_or(bytes.len());
            prop_assert_eq!(plain_prefix(&bytes), want);
        }
    }
}
