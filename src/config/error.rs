//! Errors that name the file, line and column they come from, and the
//! collector that gathers every error of one load.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a configuration or policy file.
///
/// Displays as `file:line:col: message` (line and column 1-based, the column
/// counted in characters). The message says what is wrong and how to fix it;
/// it never repeats a secret or an API key hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: {message}", file.display())]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Every problem found while loading a configuration: `load` returns either a
/// complete configuration or all of these.
///
/// Displays one error per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text of one file that was read, for turning byte spans into positions.
#[derive(Debug)]
pub(crate) struct Source {
    /// The path as errors name it.
    pub path: PathBuf,
    /// The file's contents.
    pub text: String,
}

impl Source {
    /// 1-based line and column (in characters) of byte `offset`.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// An error at the start of `span`.
    pub fn error(&self, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, col) = self.position(span.start);
        ConfigError {
            file: self.path.clone(),
            line,
            col,
            message: message.into(),
        }
    }

    /// `file:line:col` of the start of `span`, for messages that point at a
    /// second place.
    pub fn place(&self, span: &Range<usize>) -> String {
        let (line, col) = self.position(span.start);
        format!("{}:{line}:{col}", self.path.display())
    }

    /// An error for a TOML syntax or structure error in this file.
    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        self.error(&span, describe_toml_error(e.message()))
    }
}

/// Rewords the TOML/serde messages into the configuration's vocabulary and
/// adds the fix where the message lacks one.
fn describe_toml_error(message: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest} (keys are case-sensitive; see docs/config-schema.md)");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing key {rest}; add it");
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return format!("wrong type: {rest}");
    }
    message
}

/// Gathers errors; the order they are found in does not matter, [`Diag::finish`]
/// sorts them by file (in load order), line and column.
#[derive(Debug, Default)]
pub(crate) struct Diag {
    errors: Vec<ConfigError>,
}

impl Diag {
    /// Records an error.
    pub fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// Records an error at the start of `span` in `src`.
    pub fn at(&mut self, src: &Source, span: &Range<usize>, message: impl Into<String>) {
        self.push(src.error(span, message));
    }

    /// How many errors were recorded.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True when no error was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors, sorted by the files' position in `order` (files not in it
    /// last), then line and column; exact duplicates are dropped.
    pub fn finish(mut self, order: &[&Path]) -> ConfigErrors {
        let rank = |p: &Path| order.iter().position(|o| *o == p).unwrap_or(order.len());
        self.errors.sort_by_key(|e| (rank(&e.file), e.line, e.col));
        self.errors.dedup();
        ConfigErrors(self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = Source {
            path: PathBuf::from("x.toml"),
            text: "ab\nçd = 1\n".to_owned(),
        };
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(2), (1, 3));
        assert_eq!(src.position(3), (2, 1));
        // byte 5 is after the two-byte 'ç'
        assert_eq!(src.position(5), (2, 2));
        assert_eq!(src.position(100), (3, 1));
        assert_eq!(src.error(&(3..4), "m").to_string(), "x.toml:2:1: m");
    }

    #[test]
    fn errors_display_one_per_line() {
        let e = |line| ConfigError {
            file: PathBuf::from("a.toml"),
            line,
            col: 1,
            message: "bad".to_owned(),
        };
        let all = ConfigErrors(vec![e(1), e(2)]);
        assert_eq!(all.to_string(), "a.toml:1:1: bad\na.toml:2:1: bad");
    }
}
