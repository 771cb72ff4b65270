//! Streaming CSV rewriter (RFC 4180).
//!
//! Records end with CRLF or LF, fields are separated by commas, and a quoted
//! field may hold commas, line breaks and `""` (one quote). A header line
//! with no comma but with semicolons, tabs or `|` (outside quotes) makes the
//! most frequent of those the separator instead (European exports, TSV);
//! the first line is held until it is complete to decide. The first record
//! is the header: each name is matched like a JSON key at the document root,
//! which gives the column its class (or, in allowlist mode, removes it).
//!
//! - A cell of a named class gets the class's action: `last4` masks it keeping
//!   its shape, `redact` writes the token, `remove` removes the whole column
//!   (from the header and every row), `clear` keeps it. A card envelope is
//!   shown as the JSON rewriter shows it.
//! - Every other cell (and every header name) runs the role's detectors, and
//!   what they find is masked per the action table, as in JSON strings.
//! - Unchanged cells are copied byte for byte, original quoting kept; a
//!   changed cell is quoted only when its new content needs it.
//! - A line with no bytes at all (an empty line) is copied as it is and is
//!   not a record. A record whose output would be an empty line (one kept
//!   column, empty) is written as `""` so that it stays a record.
//! - A UTF-8 byte order mark at the very start is copied and is not part of
//!   the first name.
//! - With a drop filter ([`RewriteSpec::drop_accounts`]), a row whose cell in
//!   an id column (a header named like the rules' record id field, see
//!   [`RulesBuilder::record_id_name`](super::RulesBuilder::record_id_name);
//!   removed columns included) names a dropped account is left out with its
//!   line break, and counted in [`Counts::dropped_records`] only. Each row is
//!   decided when it is complete, so nothing more is held.
//!
//! Streaming: one record is held at a time (at most
//! [`Limits::max_token_bytes`](super::Limits) bytes; more is an error) and is
//! written out as soon as its terminator arrives, so the output does not
//! depend on how the body was chunked. Errors ([`RewriteError::Csv`]): a quote
//! inside an unquoted field, bytes after a closing quote, a carriage return
//! not followed by a line feed outside quotes, an unterminated quoted field at
//! the end, a record whose field count differs from the header's, and bytes
//! that are not UTF-8.

use std::borrow::Cow;

use memchr::memchr2;

use super::mask::looks_like_envelope;
use super::sealed::envelope_display;
use super::text::{mask_detected, mask_named};
use super::value::effective_plain;
use super::{BodyRewriter, Counts, RequestProtection, RewriteError, RewriteSpec};
use crate::class::{Action, FieldClass};
use crate::detect::Finding;

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Before the first byte of a record.
    RecordStart,
    /// Just after a comma.
    FieldStart,
    /// Inside an unquoted field.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// A quote inside a quoted field: it closes the field or starts `""`.
    QuoteInQuoted,
    /// A carriage return outside quotes: a line feed must follow.
    Cr,
}

/// One field of the held record, in record coordinates (offsets into the
/// record's bytes); a quoted field's span includes its quotes.
#[derive(Clone, Copy, Debug)]
struct Field {
    start: usize,
    end: usize,
    quoted: bool,
}

/// What the header says about one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    /// Kept; cells of a named class get its action, others run detectors.
    Keep(Option<FieldClass>),
    /// Removed: by a `remove` action (with its class) or by the allowlist.
    Removed(Option<FieldClass>),
}

/// Streaming CSV rewriter; see the module docs.
pub struct CsvRewriter {
    spec: RewriteSpec,
    state: State,
    /// Bytes of the current record carried over from earlier chunks.
    rec: Vec<u8>,
    /// Fields of the current record completed so far.
    fields: Vec<Field>,
    /// Record coordinate where the current field starts.
    field_start: usize,
    /// Record coordinate where the current record's terminator starts.
    content_end: usize,
    /// The header's columns, once the header has been read.
    columns: Option<Vec<Column>>,
    /// Current physical line, 1-based.
    line: u64,
    /// Physical line where the current record starts.
    record_line: u64,
    /// Input bytes consumed so far.
    consumed: u64,
    /// Leading bytes held while they may still be a byte order mark.
    bom: Vec<u8>,
    /// The byte order mark question is settled.
    bom_done: bool,
    counts: Counts,
    poisoned: bool,
    findings: Vec<Finding>,
    text: String,
    /// Write requests: how the body is protected.
    protect: Option<std::sync::Arc<RequestProtection>>,
    /// Write requests: the header's names, for error messages.
    names: Vec<String>,
    /// The columns holding the record's id (drop filter, envelope binding).
    id_columns: Vec<usize>,
    /// The current row's account id (its first id cell): envelopes bound to
    /// an account open (and are sealed) only for it.
    row_account: Option<String>,
    /// The field separator, decided from the header line.
    delim: u8,
    /// The header line has been seen and `delim` decided.
    delim_known: bool,
    /// The start of the body, held until its first line is complete.
    first_line: Vec<u8>,
}

/// Separators a CSV body may use besides the comma.
const OTHER_DELIMITERS: [u8; 3] = [b';', b'\t', b'|'];

/// The field separator a CSV header line uses: the comma if it has any
/// outside quotes, else the most frequent of `;`, tab and `|`. `None` when
/// the line has none of them (a single column, or not CSV at all).
pub(crate) fn sniff_delimiter(line: &[u8]) -> Option<u8> {
    let mut counts = [0usize; 4];
    let mut quoted = false;
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
            b'\n' => break,
            b',' if !quoted => counts[0] += 1,
            _ if !quoted => {
                if let Some(i) = OTHER_DELIMITERS.iter().position(|&d| d == b) {
                    counts[i + 1] += 1;
                }
            }
            _ => {}
        }
    }
    if counts[0] > 0 {
        return Some(b',');
    }
    let (best, &n) = counts[1..]
        .iter()
        .enumerate()
        .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))?;
    (n > 0).then(|| OTHER_DELIMITERS[best])
}

/// True when a cell's content must be quoted to stay one field.
fn needs_quotes(s: &str, delim: u8) -> bool {
    s.bytes()
        .any(|b| b == delim || matches!(b, b'"' | b'\n' | b'\r'))
}

/// Appends `s` as one CSV field, quoted only when needed.
fn write_cell(s: &str, delim: u8, out: &mut Vec<u8>) {
    if !needs_quotes(s, delim) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    let mut rest = s;
    while let Some(i) = rest.find('"') {
        out.extend_from_slice(&rest.as_bytes()[..=i]);
        out.push(b'"');
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest.as_bytes());
    out.push(b'"');
}

/// A record with kept columns (`first` false) whose output is empty would
/// read as an empty line, which is no record at all: write it as one empty
/// quoted field instead.
fn keep_nonblank(first: bool, start: usize, out: &mut Vec<u8>) {
    if !first && out.len() == start {
        out.extend_from_slice(b"\"\"");
    }
}

/// The content of a raw field: quotes stripped and `""` undone.
fn unquote(raw: &str, quoted: bool) -> Cow<'_, str> {
    if !quoted {
        return Cow::Borrowed(raw);
    }
    let inner = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    if inner.contains('"') {
        Cow::Owned(inner.replace("\"\"", "\""))
    } else {
        Cow::Borrowed(inner)
    }
}

impl CsvRewriter {
    /// A rewriter for one CSV body whose first record is the header.
    pub fn new(spec: RewriteSpec) -> CsvRewriter {
        CsvRewriter {
            spec,
            state: State::RecordStart,
            rec: Vec::new(),
            fields: Vec::new(),
            field_start: 0,
            content_end: 0,
            columns: None,
            line: 1,
            record_line: 1,
            consumed: 0,
            bom: Vec::new(),
            bom_done: false,
            counts: Counts::default(),
            poisoned: false,
            findings: Vec::new(),
            text: String::new(),
            protect: None,
            names: Vec::new(),
            id_columns: Vec::new(),
            delim: b',',
            delim_known: false,
            first_line: Vec::new(),
            row_account: None,
        }
    }

    /// A rewriter for a write request's CSV body: cells of encrypted classes
    /// become envelopes; a card number in any other cell is refused (or
    /// encrypted in place). Each blind-indexed column gets a `<name>_bidx`
    /// column after it; client-supplied `*_bidx` columns are dropped.
    pub fn for_request(
        spec: RewriteSpec,
        protect: std::sync::Arc<RequestProtection>,
    ) -> CsvRewriter {
        let mut rw = CsvRewriter::new(spec);
        rw.protect = Some(protect);
        rw
    }

    /// Write requests: seals, refuses or passes one cell.
    fn protect_cell(
        &mut self,
        protect: &RequestProtection,
        raw: &str,
        quoted: bool,
        class: Option<FieldClass>,
        column: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let value = unquote(raw, quoted);
        let path = || {
            format!(
                "column {} (line {})",
                self.names.get(column).map_or("?", String::as_str),
                self.record_line
            )
        };
        match class {
            Some(class) if protect.encrypts(class) => {
                if value.is_empty() {
                    out.extend_from_slice(raw.as_bytes());
                    return Ok(());
                }
                if looks_like_envelope(&value) {
                    let genuine = super::mask::envelope_view(&value).is_some()
                        && protect.sealer.as_ref().is_some_and(|s| {
                            s.verify_for(class, &value, self.row_account.as_deref())
                        });
                    if genuine {
                        out.extend_from_slice(raw.as_bytes());
                        return Ok(());
                    }
                    return Err(RewriteError::CannotEncrypt { path: path() });
                }
                let sealer = protect
                    .sealer
                    .as_ref()
                    .ok_or_else(|| RewriteError::CannotEncrypt { path: path() })?;
                let envelope = sealer
                    .seal_for(class, &value, self.row_account.as_deref())
                    .map_err(|_| RewriteError::CannotEncrypt { path: path() })?;
                write_cell(&envelope, self.delim, out);
                self.counts.sealed += 1;
                Ok(())
            }
            // Other classes (and unnamed columns) are written as they are,
            // unless a card number hides in them.
            _ => {
                self.findings.clear();
                self.spec.detectors.scan(
                    value.as_bytes(),
                    self.spec.rules.detector_set(),
                    &mut self.findings,
                );
                let sealed =
                    protect.seal_detected(&value, &self.findings, &path, &mut self.counts)?;
                // What would be stored must not hide a card either.
                if protect.hides_card(sealed.as_deref().unwrap_or(&value)) {
                    return Err(RewriteError::ClearCardInRequest { path: path() });
                }
                match sealed {
                    None => out.extend_from_slice(raw.as_bytes()),
                    Some(rebuilt) => write_cell(&rebuilt, self.delim, out),
                }
                Ok(())
            }
        }
    }

    fn error(&self, reason: &'static str) -> RewriteError {
        RewriteError::Csv {
            line: self.record_line,
            reason,
        }
    }

    /// Parses one chunk, writing every record it completes.
    fn run(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let delim = self.delim;
        // Start of the current record's bytes in this chunk.
        let mut seg = 0;
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            let at = self.rec.len() + (i - seg);
            match self.state {
                State::RecordStart | State::FieldStart => {
                    if self.state == State::RecordStart {
                        self.record_line = self.line;
                    }
                    let after_comma = self.state == State::FieldStart;
                    match b {
                        b'"' => {
                            self.field_start = at;
                            self.state = State::Quoted;
                        }
                        d if d == delim => {
                            self.fields.push(Field {
                                start: at,
                                end: at,
                                quoted: false,
                            });
                            self.state = State::FieldStart;
                        }
                        b'\n' | b'\r' => {
                            if after_comma {
                                self.fields.push(Field {
                                    start: at,
                                    end: at,
                                    quoted: false,
                                });
                            }
                            self.content_end = at;
                            if b == b'\r' {
                                self.state = State::Cr;
                            } else {
                                self.end_record(chunk, seg, i, out)?;
                                seg = i + 1;
                            }
                        }
                        _ => {
                            self.field_start = at;
                            self.state = State::Unquoted;
                        }
                    }
                    i += 1;
                }
                State::Unquoted => {
                    let rest = &chunk[i..];
                    let n = rest
                        .iter()
                        .position(|&c| c == delim || matches!(c, b'\n' | b'\r' | b'"'))
                        .unwrap_or(rest.len());
                    i += n;
                    let Some(&c) = chunk.get(i) else { break };
                    let at = self.rec.len() + (i - seg);
                    if c == b'"' {
                        return Err(self.error("quote in an unquoted field"));
                    }
                    self.fields.push(Field {
                        start: self.field_start,
                        end: at,
                        quoted: false,
                    });
                    seg = self.delimiter(chunk, seg, i, c, out)?;
                    i += 1;
                }
                State::Quoted => {
                    let rest = &chunk[i..];
                    match memchr2(b'"', b'\n', rest) {
                        Some(n) => {
                            i += n;
                            if chunk[i] == b'\n' {
                                self.line += 1;
                            } else {
                                self.state = State::QuoteInQuoted;
                            }
                            i += 1;
                        }
                        None => i = chunk.len(),
                    }
                }
                State::QuoteInQuoted => {
                    if b == b'"' {
                        self.state = State::Quoted;
                    } else if b == delim || matches!(b, b'\n' | b'\r') {
                        self.fields.push(Field {
                            start: self.field_start,
                            end: at,
                            quoted: true,
                        });
                        seg = self.delimiter(chunk, seg, i, b, out)?;
                    } else {
                        return Err(self.error("data after a closing quote"));
                    }
                    i += 1;
                }
                State::Cr => {
                    if b != b'\n' {
                        return Err(self.error("carriage return without line feed"));
                    }
                    self.end_record(chunk, seg, i, out)?;
                    seg = i + 1;
                    i += 1;
                }
            }
        }
        self.rec.extend_from_slice(&chunk[seg..]);
        let limit = self.spec.limits.max_token_bytes;
        // One more byte than the limit may be a held carriage return.
        if self.rec.len() > limit.saturating_add(1) {
            return Err(RewriteError::TokenTooLarge { limit });
        }
        Ok(())
    }

    /// A field just ended at chunk position `i` with delimiter `c` (`,`, `\n`
    /// or `\r`). Returns the new start of the record's bytes in the chunk.
    fn delimiter(
        &mut self,
        chunk: &[u8],
        seg: usize,
        i: usize,
        c: u8,
        out: &mut Vec<u8>,
    ) -> Result<usize, RewriteError> {
        match c {
            d if d == self.delim => {
                self.state = State::FieldStart;
                Ok(seg)
            }
            b'\r' => {
                self.content_end = self.rec.len() + (i - seg);
                self.state = State::Cr;
                Ok(seg)
            }
            _ => {
                self.content_end = self.rec.len() + (i - seg);
                self.end_record(chunk, seg, i, out)?;
                Ok(i + 1)
            }
        }
    }

    /// The line feed ending the current record is at chunk position `lf`.
    fn end_record(
        &mut self,
        chunk: &[u8],
        seg: usize,
        lf: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let term: &[u8] = if self.state == State::Cr {
            b"\r\n"
        } else {
            b"\n"
        };
        self.line += 1;
        let mut rec = std::mem::take(&mut self.rec);
        let r = if rec.is_empty() {
            let bytes = chunk.get(seg..seg + self.content_end).unwrap_or_default();
            self.record(bytes, term, out)
        } else {
            rec.extend_from_slice(&chunk[seg..lf]);
            let bytes = rec.get(..self.content_end).unwrap_or_default();
            self.record(bytes, term, out)
        };
        rec.clear();
        self.rec = rec;
        self.fields.clear();
        self.state = State::RecordStart;
        r
    }

    /// Rewrites one complete record (without its terminator `term`).
    fn record(&mut self, bytes: &[u8], term: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.fields.is_empty() {
            // An empty line: no field, no record.
            out.extend_from_slice(term);
            return Ok(());
        }
        let limit = self.spec.limits.max_token_bytes;
        if bytes.len() > limit {
            return Err(RewriteError::TokenTooLarge { limit });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| self.error("invalid UTF-8"))?;
        let fields = std::mem::take(&mut self.fields);
        let r = match self.columns.take() {
            None => self.header(text, &fields, out).map(|()| true),
            Some(columns) => {
                let r = self.row(text, &fields, &columns, out);
                self.columns = Some(columns);
                r
            }
        };
        self.fields = fields;
        if r? {
            out.extend_from_slice(term);
        }
        Ok(())
    }

    /// Drop filter: true when one of the row's id cells names a dropped account.
    fn row_dropped(&self, text: &str, fields: &[Field]) -> Result<bool, RewriteError> {
        let Some(filter) = &self.spec.drop_accounts else {
            return Ok(false);
        };
        for &column in &self.id_columns {
            if let Some(f) = fields.get(column) {
                if filter.drops(&unquote(self.raw(text, f)?, f.quoted)) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn raw<'t>(&self, text: &'t str, f: &Field) -> Result<&'t str, RewriteError> {
        text.get(f.start..f.end)
            .ok_or_else(|| self.error("invalid UTF-8"))
    }

    fn header(
        &mut self,
        text: &str,
        fields: &[Field],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let rules = self.spec.rules.clone();
        let mut columns = Vec::with_capacity(fields.len());
        let start = out.len();
        let mut first = true;
        for (index, f) in fields.iter().enumerate() {
            let raw = self.raw(text, f)?;
            let name = unquote(raw, f.quoted);
            if self.protect.is_some() {
                self.names.push(name.chars().take(64).collect());
            }
            let mut m = rules.match_key(name.as_bytes(), rules.root_nodes());
            // A column's name read by its words classes its cells like an
            // exact name (`Primary Holder SSN`, `Checking Acct No`).
            m.class = m.class.or(m.word_class);
            if m.record_id {
                self.id_columns.push(index);
            }
            let action = m.class.map(|c| self.spec.actions.get(c));
            let client_index =
                self.protect.is_some() && name.ends_with(super::json::BLIND_INDEX_SUFFIX);
            let column = if action == Some(Action::Remove) {
                Column::Removed(m.class)
            } else if client_index || (rules.is_allowlist() && !m.allowed_value) {
                Column::Removed(None)
            } else {
                Column::Keep(m.class)
            };
            columns.push(column);
            if column != Column::Keep(m.class) {
                continue;
            }
            if !first {
                out.push(self.delim);
            }
            first = false;
            // A name is not a value, but a red-flag value in it is masked too.
            if mask_detected(
                &self.spec,
                &name,
                &mut self.findings,
                &mut self.counts,
                &mut self.text,
            ) {
                write_cell(&self.text, self.delim, out);
            } else {
                out.extend_from_slice(raw.as_bytes());
            }
            if let (Some(p), Some(class)) = (&self.protect, m.class) {
                if p.blind_index[class.index()] && p.encrypts(class) {
                    // The gateway's own blind-index column follows.
                    out.push(self.delim);
                    let mut index_name = name.clone().into_owned();
                    index_name.push_str(super::json::BLIND_INDEX_SUFFIX);
                    write_cell(&index_name, self.delim, out);
                }
            }
        }
        keep_nonblank(first, start, out);
        self.columns = Some(columns);
        Ok(())
    }

    /// Writes one row (without its terminator); false when the row is
    /// dropped, terminator and all.
    fn row(
        &mut self,
        text: &str,
        fields: &[Field],
        columns: &[Column],
        out: &mut Vec<u8>,
    ) -> Result<bool, RewriteError> {
        if fields.len() != columns.len() {
            return Err(self.error("record has a different number of fields than the header"));
        }
        if !self.id_columns.is_empty() && self.row_dropped(text, fields)? {
            self.counts.dropped_records += 1;
            return Ok(false);
        }
        self.counts.records += 1;
        self.row_account = match self.id_columns.first().and_then(|&c| fields.get(c)) {
            Some(f) => Some(unquote(self.raw(text, f)?, f.quoted).into_owned()),
            None => None,
        };
        let clear_before = self.counts.clear_mark();
        let start = out.len();
        let mut first = true;
        for (index, (column, f)) in columns.iter().zip(fields).enumerate() {
            match *column {
                Column::Removed(Some(class)) => self.counts.add(class, Action::Remove),
                Column::Removed(None) => self.counts.not_allowed += 1,
                Column::Keep(class) => {
                    if !first {
                        out.push(self.delim);
                    }
                    first = false;
                    let raw = self.raw(text, f)?;
                    match self.protect.clone() {
                        Some(protect) => {
                            self.protect_cell(&protect, raw, f.quoted, class, index, out)?;
                            if let Some(class) = class
                                .filter(|c| protect.blind_index[c.index()] && protect.encrypts(*c))
                            {
                                out.push(self.delim);
                                let value = unquote(raw, f.quoted);
                                if !value.is_empty() && !looks_like_envelope(&value) {
                                    let sealer = protect.sealer.as_ref().ok_or_else(|| {
                                        RewriteError::CannotEncrypt {
                                            path: format!("column {index}"),
                                        }
                                    })?;
                                    let idx = sealer.blind_index(class, &value).map_err(|_| {
                                        RewriteError::CannotEncrypt {
                                            path: format!("column {index}"),
                                        }
                                    })?;
                                    write_cell(&idx, self.delim, out);
                                }
                            }
                        }
                        None => self.cell(raw, f.quoted, class, out),
                    }
                }
            }
        }
        keep_nonblank(first, start, out);
        self.counts.record_done(&clear_before);
        Ok(true)
    }

    /// Writes one kept cell.
    fn cell(&mut self, raw: &str, quoted: bool, class: Option<FieldClass>, out: &mut Vec<u8>) {
        let value = unquote(raw, quoted);
        self.text.clear();
        if looks_like_envelope(&value) {
            let class = class.unwrap_or(FieldClass::CardNumber);
            let action = self.spec.actions.get(class);
            if action == Action::Clear {
                // Ciphertext: showing it releases nothing.
                self.counts.add(class, Action::Clear);
                out.extend_from_slice(raw.as_bytes());
                return;
            }
            envelope_display(
                &self.spec,
                &value,
                class,
                action,
                self.row_account.as_deref(),
                &mut self.counts,
                &mut self.text,
            );
            write_cell(&self.text, self.delim, out);
            if action == Action::Decrypt {
                // The plaintext's last copy before the response buffer.
                zeroize::Zeroize::zeroize(&mut self.text);
            }
            return;
        }
        match class {
            Some(class) => {
                let action = self.spec.actions.get(class);
                if effective_plain(action) == Action::Clear {
                    self.counts.add(class, Action::Clear);
                    out.extend_from_slice(raw.as_bytes());
                    return;
                }
                mask_named(
                    &self.spec,
                    &value,
                    class,
                    action,
                    &mut self.counts,
                    &mut self.text,
                );
                write_cell(&self.text, self.delim, out);
            }
            None => {
                if mask_detected(
                    &self.spec,
                    &value,
                    &mut self.findings,
                    &mut self.counts,
                    &mut self.text,
                ) {
                    write_cell(&self.text, self.delim, out);
                } else {
                    out.extend_from_slice(raw.as_bytes());
                }
            }
        }
    }

    /// Settles a leading byte order mark; returns the input left to parse.
    fn strip_bom<'i>(
        &mut self,
        input: &'i [u8],
        out: &mut Vec<u8>,
    ) -> Result<&'i [u8], RewriteError> {
        if self.bom_done {
            return Ok(input);
        }
        let held = self.bom.len();
        let take = (BOM.len() - held).min(input.len());
        self.bom.extend_from_slice(&input[..take]);
        if self.bom == BOM {
            self.bom_done = true;
            out.extend_from_slice(BOM);
            return Ok(&input[take..]);
        }
        if BOM.starts_with(&self.bom) {
            // Still a prefix of the mark, and the input is used up.
            return Ok(&[]);
        }
        self.bom_done = true;
        let earlier = std::mem::take(&mut self.bom);
        self.feed(&earlier[..held], out)?;
        Ok(input)
    }

    fn settle_delimiter(&mut self, head: &[u8]) {
        self.delim = sniff_delimiter(head).unwrap_or(b',');
        self.delim_known = true;
    }

    /// Parses input after the byte order mark: the first line is held
    /// until it is complete, to decide the separator from it.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.delim_known {
            return self.run(input, out);
        }
        self.first_line.extend_from_slice(input);
        let complete = memchr::memchr(b'\n', &self.first_line).is_some();
        if !complete && self.first_line.len() <= self.spec.limits.max_token_bytes {
            return Ok(());
        }
        let held = std::mem::take(&mut self.first_line);
        self.settle_delimiter(&held);
        self.run(&held, out)
    }

    fn fail(&mut self, e: RewriteError) -> RewriteError {
        self.poisoned = true;
        self.rec = Vec::new();
        self.fields = Vec::new();
        e
    }

    fn finish_inner(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if !self.bom_done {
            self.bom_done = true;
            let held = std::mem::take(&mut self.bom);
            self.feed(&held, out)?;
        }
        if !self.delim_known {
            let held = std::mem::take(&mut self.first_line);
            self.settle_delimiter(&held);
            self.run(&held, out)?;
        }
        let end = self.rec.len();
        match self.state {
            State::RecordStart => return Ok(()),
            State::Quoted => return Err(self.error("unterminated quoted field")),
            State::Cr => return Err(self.error("carriage return without line feed")),
            State::FieldStart => self.fields.push(Field {
                start: end,
                end,
                quoted: false,
            }),
            State::Unquoted | State::QuoteInQuoted => self.fields.push(Field {
                start: self.field_start,
                end,
                quoted: self.state == State::QuoteInQuoted,
            }),
        }
        let rec = std::mem::take(&mut self.rec);
        self.state = State::RecordStart;
        self.record(&rec, b"", out)
    }
}

impl BodyRewriter for CsvRewriter {
    fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.poisoned {
            return Err(RewriteError::Poisoned);
        }
        let limit = self.spec.limits.max_body_bytes;
        if self.consumed + input.len() as u64 > limit {
            return Err(self.fail(RewriteError::BodyTooLarge { limit }));
        }
        self.consumed += input.len() as u64;
        let mark = out.len();
        let r = self
            .strip_bom(input, out)
            .and_then(|rest| self.feed(rest, out));
        r.map_err(|e| {
            // Nothing of a failed chunk leaves, not even its clean prefix.
            out.truncate(mark);
            self.fail(e)
        })
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.poisoned {
            return Err(RewriteError::Poisoned);
        }
        let mark = out.len();
        self.finish_inner(out).map_err(|e| {
            out.truncate(mark);
            self.fail(e)
        })
    }

    fn counts(&self) -> &Counts {
        &self.counts
    }
}

#[cfg(test)]
#[path = "csv_tests.rs"]
mod tests;
