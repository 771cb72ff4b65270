//! Bodies whose declared type may be wrong: JSON sent as `text/plain` or
//! as NDJSON, NDJSON sent as JSON or text, CSV sent as `text/plain`.
//!
//! The rule (fail closed, and no weaker than the declared type): named
//! fields only work in a structured rewriter, so a body is rewritten by the
//! most structured rewriter that can read it, and a plain-text body read as
//! CSV also gets the text detectors over every line.
//!
//! [`SniffingRewriter`] keeps a copy of the first [`SNIFF_BYTES`] of the
//! body and rewrites them with the first candidate, holding its output. A
//! candidate that finds the body is not its format (a syntax error, not a
//! limit or a policy refusal, which end the body as they always do) is
//! replaced by the next, which gets the held bytes again. Once the window is
//! full (or the body ends) the candidate still standing has its output
//! released and gets the rest of the body alone; a body that turns out
//! invalid for it later fails, as any body does. JSON and NDJSON bodies try
//! their declared format first, so one that is what it claims to be is
//! rewritten exactly as without sniffing, at the cost of one copy of its
//! first bytes; a text body is tried as text last.
//!
//! Candidates, by declared kind:
//! - text: JSON (only if the first non-blank byte is `{` or `[`), NDJSON
//!   (likewise), CSV (only if the first line has a `,`, `;`, tab or `|`
//!   separator; its output then also goes through the text rewriter), text;
//! - NDJSON: NDJSON, then JSON (one pretty-printed document);
//! - JSON: JSON, then NDJSON (several documents, one per line).

use super::csv::{sniff_delimiter, CsvRewriter};
use super::text::TextRewriter;
use super::{BodyRewriter, Counts, JsonRewriter, RewriteError, RewriteSpec};

/// Input bytes held (and replayable) before a candidate is kept.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// What a body's `Content-Type` says it is, for sniffing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// One JSON document.
    Json,
    /// Newline-delimited JSON.
    Ndjson,
    /// Plain text.
    Text,
}

/// A rewriter a body may be tried with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Candidate {
    Json,
    Ndjson,
    CsvThenText,
    Text,
}

/// True for errors that only say the body is not in the candidate's
/// format; any other error (limits, withheld records, refusals) is final.
fn not_this_format(e: &RewriteError) -> bool {
    matches!(
        e,
        RewriteError::Syntax { .. }
            | RewriteError::UnexpectedEnd
            | RewriteError::Empty
            | RewriteError::Csv { .. }
    )
}

/// Feeds CSV output through the text rewriter: a plain-text body read as
/// CSV keeps every finding the text rewriter would have made.
struct CsvThenText {
    csv: CsvRewriter,
    text: TextRewriter,
    between: Vec<u8>,
}

impl BodyRewriter for CsvThenText {
    fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.between.clear();
        self.csv.write(input, &mut self.between)?;
        self.text.write(&self.between, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.between.clear();
        self.csv.finish(&mut self.between)?;
        self.text.write(&self.between, out)?;
        self.text.finish(out)
    }

    fn counts(&self) -> &Counts {
        self.csv.counts()
    }
}

/// A rewriter that picks its format from the body; see the module docs.
pub struct SniffingRewriter {
    declared: Declared,
    spec: RewriteSpec,
    /// Candidates not tried yet, in order; `None` until they are known.
    pending: Option<Vec<Candidate>>,
    /// The candidate being tried (or kept).
    active: Option<Box<dyn BodyRewriter>>,
    /// Its output, held while it is only being tried.
    active_out: Vec<u8>,
    /// The body so far, while no candidate is kept yet.
    held: Vec<u8>,
    /// A candidate is kept: its output flows, nothing is held.
    kept: bool,
    poisoned: bool,
    empty: Counts,
}

impl SniffingRewriter {
    /// A rewriter for a body declared as `declared`.
    pub fn new(declared: Declared, spec: RewriteSpec) -> SniffingRewriter {
        SniffingRewriter {
            declared,
            spec,
            pending: None,
            active: None,
            active_out: Vec::new(),
            held: Vec::new(),
            kept: false,
            poisoned: false,
            empty: Counts::default(),
        }
    }

    fn make(&self, c: Candidate) -> Box<dyn BodyRewriter> {
        match c {
            Candidate::Json => Box::new(JsonRewriter::new(self.spec.clone()).allow_empty(true)),
            Candidate::Ndjson => Box::new(JsonRewriter::ndjson(self.spec.clone())),
            Candidate::CsvThenText => Box::new(CsvThenText {
                csv: CsvRewriter::new(self.spec.clone()),
                text: TextRewriter::new(self.spec.clone()),
                between: Vec::new(),
            }),
            Candidate::Text => Box::new(TextRewriter::new(self.spec.clone())),
        }
    }

    /// True when the held bytes tell enough to list the candidates: for
    /// text, the first line with anything but blanks in it is complete.
    fn can_list(&self) -> bool {
        match self.declared {
            Declared::Json | Declared::Ndjson => true,
            Declared::Text => {
                let Some(first) = self.held.iter().position(|b| !b.is_ascii_whitespace()) else {
                    return false;
                };
                memchr::memchr(b'\n', &self.held[first..]).is_some()
            }
        }
    }

    /// The candidates for the held start of the body, last one first (they
    /// are popped).
    fn list(&self) -> Vec<Candidate> {
        let mut list = match self.declared {
            Declared::Json => vec![Candidate::Json, Candidate::Ndjson],
            Declared::Ndjson => vec![Candidate::Ndjson, Candidate::Json],
            Declared::Text => {
                let start = self.held.iter().position(|b| !b.is_ascii_whitespace());
                let mut list = Vec::new();
                match start.map(|i| (i, self.held[i])) {
                    Some((_, b'{' | b'[')) => {
                        list.push(Candidate::Json);
                        list.push(Candidate::Ndjson);
                    }
                    Some((i, _)) => {
                        let line = &self.held[i..];
                        let end = memchr::memchr(b'\n', line).unwrap_or(line.len());
                        if sniff_delimiter(&line[..end]).is_some() {
                            list.push(Candidate::CsvThenText);
                        }
                    }
                    None => {}
                }
                list.push(Candidate::Text);
                list
            }
        };
        list.reverse();
        list
    }

    /// Moves on to the next candidate that accepts all held bytes.
    fn next_candidate(&mut self, mut err: RewriteError) -> Result<(), RewriteError> {
        loop {
            if !not_this_format(&err) {
                return Err(err);
            }
            let Some(c) = self.pending.as_mut().and_then(Vec::pop) else {
                return Err(err);
            };
            let mut rw = self.make(c);
            self.active_out.clear();
            match rw.write(&self.held, &mut self.active_out) {
                Ok(()) => {
                    self.active = Some(rw);
                    return Ok(());
                }
                Err(e) => err = e,
            }
        }
    }

    /// Starts trying candidates on the held bytes.
    fn begin(&mut self) -> Result<(), RewriteError> {
        self.pending = Some(self.list());
        self.next_candidate(RewriteError::Empty)
    }

    /// Keeps the active candidate once the window is full.
    fn keep_if_full(&mut self, out: &mut Vec<u8>) {
        if self.held.len() >= SNIFF_BYTES {
            self.kept = true;
            self.held = Vec::new();
            out.append(&mut self.active_out);
        }
    }

    fn write_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.kept {
            return match self.active.as_mut() {
                Some(rw) => rw.write(input, out),
                None => Err(RewriteError::Poisoned),
            };
        }
        // Only the window is tried, so the choice does not depend on how
        // the body is chunked; the rest goes to the candidate kept.
        let room = SNIFF_BYTES.saturating_sub(self.held.len()).min(input.len());
        let (trial, rest) = input.split_at(room);
        self.held.extend_from_slice(trial);
        if self.pending.is_none() {
            if !self.can_list() && self.held.len() < SNIFF_BYTES {
                return Ok(());
            }
            self.begin()?;
        } else if let Some(rw) = self.active.as_mut() {
            if let Err(e) = rw.write(trial, &mut self.active_out) {
                self.next_candidate(e)?;
            }
        }
        self.keep_if_full(out);
        if rest.is_empty() {
            return Ok(());
        }
        match self.active.as_mut() {
            Some(rw) if self.kept => rw.write(rest, out),
            _ => Err(RewriteError::Poisoned),
        }
    }

    fn finish_inner(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.pending.is_none() {
            self.begin()?;
        }
        loop {
            let Some(rw) = self.active.as_mut() else {
                return Err(RewriteError::Poisoned);
            };
            if self.kept {
                return rw.finish(out);
            }
            match rw.finish(&mut self.active_out) {
                Ok(()) => {
                    out.append(&mut self.active_out);
                    self.kept = true;
                    return Ok(());
                }
                Err(e) => self.next_candidate(e)?,
            }
        }
    }
}

impl BodyRewriter for SniffingRewriter {
    fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.poisoned {
            return Err(RewriteError::Poisoned);
        }
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
        self.active.as_ref().map_or(&self.empty, |rw| rw.counts())
    }
}

#[cfg(test)]
#[path = "sniff_tests.rs"]
mod tests;
