//! Tests of the loader against the fixtures in `tests/data/config/` and the
//! shipped default policy in `policies/`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Method;

use super::*;
use crate::class::{Action, FieldClass};
use crate::detect::DetectorSet;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config")
}

/// One line of a fixture's `expected.txt`: `file:line:col` and, optionally
/// after `: `, text the message must contain.
#[derive(Debug)]
struct Expected {
    file: String,
    line: usize,
    col: usize,
    contains: Option<String>,
}

impl Expected {
    fn matches(&self, e: &ConfigError) -> bool {
        e.file.ends_with(&self.file)
            && e.line == self.line
            && e.col == self.col
            && self.contains.as_ref().map_or(true, |c| e.message.contains(c.as_str()))
    }
}

/// Parses `expected.txt`: blank lines and `#` comments are skipped; a line
/// `!secret TEXT` says no message may contain TEXT.
fn parse_expected(text: &str) -> (Vec<Expected>, Vec<String>) {
    let mut expected = Vec::new();
    let mut secrets = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(secret) = line.strip_prefix("!secret ") {
            secrets.push(secret.trim().to_owned());
            continue;
        }
        let (position, contains) = match line.split_once(": ") {
            Some((p, c)) => (p, Some(c.to_owned())),
            None => (line, None),
        };
        let mut parts = position.rsplitn(3, ':');
        let col = parts.next().and_then(|c| c.parse().ok());
        let row = parts.next().and_then(|l| l.parse().ok());
        let file = parts.next();
        let (Some(col), Some(line_no), Some(file)) = (col, row, file) else {
            panic!("bad expected.txt line: {line}");
        };
        expected.push(Expected {
            file: file.to_owned(),
            line: line_no,
            col,
            contains,
        });
    }
    (expected, secrets)
}

#[test]
fn broken_fixtures_report_exactly_the_expected_errors() {
    let broken = data_dir().join("broken");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&broken)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 12, "only {} broken fixtures", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let errors = match load(&case.join("maskgate.toml")) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without errors"));
                continue;
            }
            Err(e) => e.0,
        };
        let text = std::fs::read_to_string(case.join("expected.txt"))
            .unwrap_or_else(|e| panic!("{name}/expected.txt: {e}"));
        let (expected, secrets) = parse_expected(&text);
        assert!(!expected.is_empty(), "{name}: expected.txt lists no error");
        let mut unmatched: Vec<&ConfigError> = errors.iter().collect();
        let mut problems = Vec::new();
        for want in &expected {
            match unmatched.iter().position(|e| want.matches(e)) {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => problems.push(format!("  missing: {want:?}")),
            }
        }
        for e in &unmatched {
            problems.push(format!("  unexpected: {e}"));
        }
        for e in &errors {
            for s in &secrets {
                if e.to_string().contains(s.as_str()) {
                    problems.push(format!("  echoes a secret: {e}"));
                }
            }
        }
        if !problems.is_empty() {
            let all: Vec<String> = errors.iter().map(|e| format!("  reported: {e}")).collect();
            failures.push(format!("{name}:\n{}\n{}", problems.join("\n"), all.join("\n")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
