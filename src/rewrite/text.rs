//! Streaming plain-text rewriter: only the detectors apply.
//!
//! The body is processed line by line (a line ends with `\n`, which stays part
//! of it). A line that straddles chunks is held until its end arrives, so a
//! value split across chunks is found exactly as in one piece, and the output
//! does not depend on how the body was chunked. A line longer than
//! [`Limits::max_token_bytes`](super::Limits) is an error (fail closed: it is
//! never passed on unread). Lines without findings are copied byte for byte.

use memchr::memchr;

use super::json::rewrite_nested;
use super::mask;
use super::value::effective_plain;
use super::{BodyRewriter, Counts, RewriteError, RewriteSpec};
use crate::class::{Action, FieldClass};
use crate::detect::Finding;

/// Runs the role's detectors over `text` and writes it into `out` (cleared
/// first) with every finding handled per the response's actions. Returns true
/// when anything was changed (otherwise `out` is unspecified).
pub(crate) fn mask_detected(
    spec: &RewriteSpec,
    text: &str,
    findings: &mut Vec<Finding>,
    counts: &mut Counts,
    out: &mut String,
) -> bool {
    let set = spec.rules.detector_set();
    if set.is_empty()
        || (!spec.detectors.may_find(text.as_bytes(), set)
            && !super::value::may_hide_value(text.as_bytes()))
    {
        return false;
    }
    super::value::mask_unnamed(spec, text, findings, counts, out, rewrite_nested)
}

/// Writes into `out` what a value of `class` handled with `action` shows: the
/// masked value, the redaction token, or (for `clear`) the value itself.
/// Counts the value. `remove` writes the token: callers that can remove the
/// whole field do so before calling.
pub(crate) fn mask_named(
    spec: &RewriteSpec,
    text: &str,
    class: FieldClass,
    action: Action,
    counts: &mut Counts,
    out: &mut String,
) {
    let action = effective_plain(action);
    counts.add(class, action);
    match action {
        Action::Clear => out.push_str(text),
        Action::Redact | Action::Remove => out.push_str(spec.rules.redact_token()),
        Action::Last4 | Action::Decrypt => mask::last4(text, out),
    }
}

/// Streaming `text/plain` rewriter; see the module docs.
pub struct TextRewriter {
    spec: RewriteSpec,
    /// The unfinished line carried over from earlier chunks.
    held: Vec<u8>,
    /// Input bytes consumed before the current chunk.
    consumed: u64,
    counts: Counts,
    poisoned: bool,
    findings: Vec<Finding>,
    text: String,
}

impl TextRewriter {
    /// A rewriter for one plain-text body.
    pub fn new(spec: RewriteSpec) -> TextRewriter {
        TextRewriter {
            spec,
            held: Vec::new(),
            consumed: 0,
            counts: Counts::default(),
            poisoned: false,
            findings: Vec::new(),
            text: String::new(),
        }
    }

    /// Rewrites one complete line (`line` ends with `\n` unless it is the
    /// body's last) that starts at body offset `offset`.
    fn line(&mut self, line: &[u8], offset: u64, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let (content, newline) = match line.split_last() {
            Some((b'\n', rest)) => (rest, true),
            _ => (line, false),
        };
        let limit = self.spec.limits.max_token_bytes;
        if content.len() > limit {
            return Err(RewriteError::TokenTooLarge { limit });
        }
        let text = std::str::from_utf8(content).map_err(|e| RewriteError::NotText {
            offset: offset + e.valid_up_to() as u64,
        })?;
        if mask_detected(
            &self.spec,
            text,
            &mut self.findings,
            &mut self.counts,
            &mut self.text,
        ) {
            out.extend_from_slice(self.text.as_bytes());
            if newline {
                out.push(b'\n');
            }
        } else {
            out.extend_from_slice(line);
        }
        Ok(())
    }

    fn run(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mut pos = 0;
        while let Some(i) = memchr(b'\n', &input[pos..]) {
            let end = pos + i + 1;
            if self.held.is_empty() {
                let offset = self.consumed + pos as u64;
                self.line(&input[pos..end], offset, out)?;
            } else {
                // A held line is the first of this chunk: it began in an earlier one.
                let mut line = std::mem::take(&mut self.held);
                let offset = self.consumed - line.len() as u64;
                line.extend_from_slice(&input[pos..end]);
                let r = self.line(&line, offset, out);
                line.clear();
                self.held = line;
                r?;
            }
            pos = end;
        }
        self.held.extend_from_slice(&input[pos..]);
        let limit = self.spec.limits.max_token_bytes;
        if self.held.len() > limit {
            return Err(RewriteError::TokenTooLarge { limit });
        }
        Ok(())
    }

    fn fail(&mut self, e: RewriteError) -> RewriteError {
        self.poisoned = true;
        self.held = Vec::new();
        e
    }
}

impl BodyRewriter for TextRewriter {
    fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if self.poisoned {
            return Err(RewriteError::Poisoned);
        }
        let limit = self.spec.limits.max_body_bytes;
        if self.consumed + input.len() as u64 > limit {
            return Err(self.fail(RewriteError::BodyTooLarge { limit }));
        }
        let mark = out.len();
        let r = self.run(input, out);
        self.consumed += input.len() as u64;
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
        if self.held.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.held);
        let offset = self.consumed - line.len() as u64;
        let mark = out.len();
        self.line(&line, offset, out).map_err(|e| {
            out.truncate(mark);
            self.fail(e)
        })
    }

    fn counts(&self) -> &Counts {
        &self.counts
    }
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
