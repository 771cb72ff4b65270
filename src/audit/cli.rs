//! Entry points for `maskgate audit verify|query|report|keygen`: each
//! returns what to print and the exit code, so `main` stays thin.
//!
//! Exit codes follow ripgrep: 0 OK, 1 tampered (verify only), 2 error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::audit::keys::{generate_signing_key, PublicKey};
use crate::audit::query::{self, Filter};
use crate::audit::report::{self, Quarter, ReportOptions};
use crate::audit::verify::{verify_with, VerifyOptions};

/// What a command prints, and its exit code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// 0 OK, 1 tampered, 2 error.
    pub exit_code: u8,
    /// For standard output.
    pub stdout: String,
    /// For standard error (warnings, errors).
    pub stderr: String,
}

impl Output {
    fn ok(stdout: String, stderr: String) -> Output {
        Output {
            exit_code: 0,
            stdout,
            stderr,
        }
    }

    fn error(message: impl fmt::Display) -> Output {
        Output {
            exit_code: 2,
            stdout: String::new(),
            stderr: format!("error: {message}\n"),
        }
    }
}

/// `audit verify --dir DIR --public-key FILE`: 0 OK, 1 tampered, 2 error.
pub fn verify(dir: &Path, public_key: &Path) -> Output {
    verify_keys(dir, std::slice::from_ref(&public_key.to_path_buf()))
}

/// As [`verify`], trusting several public keys (after a key change).
pub fn verify_keys(dir: &Path, public_keys: &[PathBuf]) -> Output {
    verify_keys_with(dir, public_keys, &VerifyOptions::default())
}

/// As [`verify_keys`], comparing the log with witnesses and receipts too
/// (`--witness DIR`, `--receipts FILE`).
pub fn verify_keys_with(dir: &Path, public_keys: &[PathBuf], options: &VerifyOptions) -> Output {
    let mut keys = Vec::new();
    for path in public_keys {
        match PublicKey::load(path) {
            Ok(key) => keys.push(key),
            Err(e) => return Output::error(e),
        }
    }
    match verify_with(dir, &keys, options) {
        Ok(report) => Output {
            exit_code: report.exit_code(),
            stdout: report.render(),
            stderr: String::new(),
        },
        Err(e) => Output::error(e),
    }
}

/// `audit query`: a table, or JSON lines when `json`. Unreadable lines are
/// warned about on standard error.
pub fn query(dir: &Path, filter: &Filter, json: bool) -> Output {
    match query::query(dir, filter) {
        Ok(scan) => {
            let stdout = if json {
                query::render_json_lines(&scan.records)
            } else {
                query::render_table(&scan.records)
            };
            Output::ok(stdout, query::render_warnings(&scan.unreadable))
        }
        Err(e) => Output::error(e),
    }
}

/// Report output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// Markdown.
    Markdown,
    /// Pretty JSON.
    Json,
    /// A self-contained HTML page.
    Html,
}

impl FromStr for ReportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<ReportFormat, String> {
        match s {
            "md" | "markdown" => Ok(ReportFormat::Markdown),
            "json" => Ok(ReportFormat::Json),
            "html" => Ok(ReportFormat::Html),
            _ => Err(format!(
                "unknown report format {s:?}; use markdown, json or html"
            )),
        }
    }
}

/// `audit report --quarter 2026Q3 --format …`; `roles` is who holds which
/// role, from the policy.
pub fn report(
    dir: &Path,
    quarter: &str,
    format: ReportFormat,
    roles: &[(String, Vec<String>)],
) -> Output {
    report_with(dir, quarter, format, roles, &ReportOptions::default())
}

/// As [`report()`], with options (business hours, offset, peer rule).
pub fn report_with(
    dir: &Path,
    quarter: &str,
    format: ReportFormat,
    roles: &[(String, Vec<String>)],
    options: &ReportOptions,
) -> Output {
    let quarter: Quarter = match quarter.parse() {
        Ok(q) => q,
        Err(e) => return Output::error(e),
    };
    match report::report_with(dir, quarter, roles, options) {
        Ok(r) => {
            let stdout = match format {
                ReportFormat::Markdown => r.to_markdown(),
                ReportFormat::Json => r.to_json() + "\n",
                ReportFormat::Html => r.to_html(),
            };
            let stderr = if r.unreadable_lines > 0 {
                format!(
                    "warning: {} log line(s) could not be read; run `maskgate audit verify`\n",
                    r.unreadable_lines
                )
            } else {
                String::new()
            };
            Output::ok(stdout, stderr)
        }
        Err(e) => Output::error(e),
    }
}

/// `audit keygen`: writes a new checkpoint signing key pair.
pub fn keygen(private_key: &Path, public_key: &Path) -> Output {
    match generate_signing_key(private_key, public_key) {
        Ok(key) => Output::ok(
            format!(
                "wrote {} (private, mode 0600) and {} (public)\nkey id {}\n",
                private_key.display(),
                public_key.display(),
                key.key_id()
            ),
            String::new(),
        ),
        Err(e) => Output::error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testutil::TempDir;
    use crate::audit::{AuditLog, AuditOptions, Kind, Outcome, RecordDraft, SigningKey};

    #[test]
    fn verify_exit_codes() {
        let dir = TempDir::new("cli");
        let private = dir.path().join("k.pem");
        let public = dir.path().join("k.pub");
        let out = keygen(&private, &public);
        assert_eq!(out.exit_code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("key id ed25519:"));
        let logs = dir.path().join("log");
        let key = SigningKey::load(&private).expect("load");
        let log = AuditLog::open(&logs, key, AuditOptions::default()).expect("open");
        for _ in 0..3 {
            log.append_sync(RecordDraft::new(Kind::Unmask, "p", Outcome::Granted, "ok"))
                .expect("append");
        }
        log.close().expect("close");

        let ok = verify(&logs, &public);
        assert_eq!(ok.exit_code, 0, "{}", ok.stdout);
        assert!(ok.stdout.starts_with("audit log OK"));

        let path = logs.join("audit-000001.log");
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(
            &path,
            text.replacen("\"principal\":\"p\"", "\"principal\":\"q\"", 1),
        )
        .expect("write");
        let bad = verify(&logs, &public);
        assert_eq!(bad.exit_code, 1);
        assert!(
            bad.stdout
                .contains("TAMPERED: audit-000001.log line 1 (seq 1): edited"),
            "{}",
            bad.stdout
        );

        let missing = verify(&dir.path().join("nothing"), &public);
        assert_eq!(missing.exit_code, 2);
        let no_key = verify(&logs, &dir.path().join("absent.pub"));
        assert_eq!(no_key.exit_code, 2);
        assert!(no_key.stderr.starts_with("error: "));

        let q = query(&logs, &Filter::default(), true);
        assert_eq!(q.exit_code, 0);
        assert_eq!(q.stdout.lines().count(), 2);
        assert!(q.stderr.contains("line 1: unreadable"), "{}", q.stderr);
        let r = report(&logs, "2026Q5", ReportFormat::Json, &[]);
        assert_eq!(r.exit_code, 2);
        assert_eq!("html".parse(), Ok(ReportFormat::Html));
    }
}
