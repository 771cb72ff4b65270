//! `audit query`: records that match a filter, as a table or JSON lines.
//!
//! Query reads records; it does not verify the chain (run `audit verify`
//! for that). A line it cannot read is not skipped silently: it is listed in
//! [`Scan::unreadable`] and the renderers print a warning.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use crate::audit::chain::{parse_line, Line};
use crate::audit::file::list_log_files;
use crate::audit::record::{format_time, Kind, Outcome, Record};
use crate::audit::AuditError;

/// Which records to keep. Every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Records before this time.
    pub until: Option<OffsetDateTime>,
    /// The principal or the on-behalf-of person.
    pub principal: Option<String>,
    /// One of the record's roles.
    pub role: Option<String>,
    /// One of the record's classes.
    pub class: Option<String>,
    /// The outcome.
    pub outcome: Option<Outcome>,
    /// One of the record's account ids.
    pub account: Option<String>,
    /// The kind.
    pub kind: Option<Kind>,
    /// The grant id.
    pub grant_id: Option<String>,
}

impl Filter {
    /// True when `r` passes every set condition.
    pub fn matches(&self, r: &Record) -> bool {
        let has = |list: &[String], want: &Option<String>| {
            want.as_ref().is_none_or(|w| list.iter().any(|x| x == w))
        };
        self.since.is_none_or(|t| r.time >= t)
            && self.until.is_none_or(|t| r.time < t)
            && self
                .principal
                .as_ref()
                .is_none_or(|p| r.principal == *p || r.on_behalf_of.as_deref() == Some(p.as_str()))
            && has(&r.roles, &self.role)
            && has(&r.classes, &self.class)
            && has(&r.accounts, &self.account)
            && self.outcome.is_none_or(|o| r.outcome == o)
            && self.kind.is_none_or(|k| r.kind == k)
            && self
                .grant_id
                .as_ref()
                .is_none_or(|g| r.grant_id.as_deref() == Some(g.as_str()))
    }
}

/// Parses a time argument: RFC 3339 (`2026-07-01T08:00:00Z`) or a date
/// (`2026-07-01`, meaning its midnight UTC).
pub fn parse_time_arg(s: &str) -> Result<OffsetDateTime, QueryError> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    Date::parse(s, format_description!("[year]-[month]-[day]"))
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            QueryError::BadArgument(format!(
                "{s:?} is not a time: use 2026-07-01 or 2026-07-01T08:00:00Z"
            ))
        })
}

/// Why a query could not run.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Reading the log failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The directory holds no log files.
    #[error("{0} holds no audit log files (audit-NNNNNN.log)")]
    NoLog(PathBuf),
    /// A filter argument is wrong.
    #[error("{0}")]
    BadArgument(String),
}

/// A line a scan could not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// File name.
    pub file: String,
    /// Line number.
    pub line: u64,
    /// Why.
    pub problem: String,
}

/// The result of reading a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Matching records, in log order.
    pub records: Vec<Record>,
    /// Lines that could not be read.
    pub unreadable: Vec<Unreadable>,
}

/// Calls `f` with every record of the log in `dir`, in order; returns the
/// lines it could not read.
pub fn for_each_record(
    dir: &Path,
    mut f: impl FnMut(Record),
) -> Result<Vec<Unreadable>, QueryError> {
    let files = list_log_files(dir).map_err(|e| match e {
        AuditError::Io { path, source, .. } => QueryError::Io { path, source },
        other => QueryError::BadArgument(other.to_string()),
    })?;
    if files.is_empty() {
        return Err(QueryError::NoLog(dir.to_path_buf()));
    }
    let mut unreadable = Vec::new();
    for (_, path) in files {
        let io = |e| QueryError::Io {
            path: path.clone(),
            source: Arc::new(e),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut reader = BufReader::new(File::open(&path).map_err(io)?);
        let mut buf = Vec::new();
        let mut line_no = 0;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
                break;
            }
            line_no += 1;
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            match parse_line(line) {
                Ok(Line::Record(r)) => f(*r),
                Ok(Line::Checkpoint(_)) => {}
                Err(e) => unreadable.push(Unreadable {
                    file: name.clone(),
                    line: line_no,
                    problem: e.to_string(),
                }),
            }
        }
    }
    Ok(unreadable)
}

/// The records of the log in `dir` that match `filter`.
pub fn query(dir: &Path, filter: &Filter) -> Result<Scan, QueryError> {
    let mut records = Vec::new();
    let unreadable = for_each_record(dir, |r| {
        if filter.matches(&r) {
            records.push(r);
        }
    })?;
    Ok(Scan {
        records,
        unreadable,
    })
}

/// The warning printed for unreadable lines (empty when there are none).
pub fn render_warnings(unreadable: &[Unreadable]) -> String {
    let mut out = String::new();
    for u in unreadable.iter().take(20) {
        out.push_str(&format!(
            "warning: {} line {}: unreadable, not shown ({}); run `maskgate audit verify`\n",
            u.file, u.line, u.problem
        ));
    }
    if unreadable.len() > 20 {
        out.push_str(&format!(
            "warning: {} more unreadable lines\n",
            unreadable.len() - 20
        ));
    }
    out
}

/// The records as their canonical JSON lines.
pub fn render_json_lines(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        if let Ok(line) = r.to_line() {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The records as an aligned text table.
pub fn render_table(records: &[Record]) -> String {
    const HEADERS: [&str; 12] = [
        "SEQ",
        "TIME",
        "KIND",
        "PRINCIPAL",
        "ROLES",
        "ROUTE",
        "CLASSES",
        "ACCOUNTS",
        "OUTCOME",
        "WHY",
        "RELEASED",
        "REASON",
    ];
    let rows: Vec<[String; 12]> = records
        .iter()
        .map(|r| {
            let principal = match &r.on_behalf_of {
                Some(o) => format!("{} (for {o})", r.principal),
                None => r.principal.clone(),
            };
            [
                r.seq.to_string(),
                format_time(r.time)
                    .map(|t| t.chars().take(19).collect::<String>() + "Z")
                    .unwrap_or_default(),
                r.kind.name().to_string(),
                principal,
                r.roles.join(","),
                match (&r.method, &r.route) {
                    (Some(m), Some(route)) => format!("{m} {route}"),
                    (None, Some(route)) => route.clone(),
                    _ => "-".to_string(),
                },
                r.classes.join(","),
                match r.accounts.len() {
                    0 => "-".to_string(),
                    1..=3 => r.accounts.join(","),
                    n => format!("{},… ({n})", r.accounts[..2].join(",")),
                },
                r.outcome.name().to_string(),
                r.why.clone(),
                r.released.to_string(),
                r.reason.clone().unwrap_or_else(|| "-".to_string()),
            ]
            .map(|cell| printable(&cell, 48))
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[String]| {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&HEADERS.map(String::from));
    for row in &rows {
        push_row(row);
    }
    out.push_str(&format!("{} record(s)\n", records.len()));
    out
}

/// `s` with control characters escaped, cut to `max` characters.
fn printable(s: &str, max: usize) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if escaped.chars().count() > max {
        let mut cut: String = escaped.chars().take(max - 1).collect();
        cut.push('…');
        cut
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testutil::TempDir;
    use crate::audit::{AuditLog, AuditOptions, Clock, RecordDraft, SigningKey};
    use std::sync::atomic::{AtomicI64, Ordering};
    use time::macros::datetime;

    fn log_with_records(dir: &Path) {
        let start = datetime!(2026-07-01 08:00 UTC).unix_timestamp();
        let tick = Arc::new(AtomicI64::new(0));
        let t = Arc::clone(&tick);
        let options = AuditOptions {
            clock: Clock::from_fn(move || {
                OffsetDateTime::from_unix_timestamp(start + t.load(Ordering::SeqCst) * 3600)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            }),
            ..AuditOptions::default()
        };
        let log = AuditLog::open(dir, SigningKey::generate().expect("key"), options).expect("open");
        let drafts = [
            RecordDraft::new(Kind::Unmask, "collections", Outcome::Granted, "ok")
                .roles(["collections"])
                .request("GET", "accounts.get")
                .accounts(["A-1"])
                .classes(["ssn"])
                .reason("COLL-1 skip trace")
                .released(1),
            RecordDraft::new(
                Kind::Unmask,
                "customer-service",
                Outcome::Denied,
                "role_not_allowed",
            )
            .roles(["customer-service"])
            .request("GET", "accounts.get")
            .accounts(["A-2"])
            .classes(["ssn"]),
            RecordDraft::new(Kind::Decrypt, "dm-1", Outcome::Granted, "ok")
                .roles(["it-data-management"])
                .request("GET", "accounts.card")
                .accounts(["A-1", "A-3"])
                .classes(["card_number"])
                .grant_id("g-1")
                .released(2),
        ];
        for d in drafts {
            log.append_sync(d).expect("append");
            tick.fetch_add(1, Ordering::SeqCst);
        }
        log.close().expect("close");
    }

    #[test]
    fn filters_select_records() {
        let dir = TempDir::new("query");
        log_with_records(dir.path());
        let all = query(dir.path(), &Filter::default()).expect("query");
        assert_eq!(all.records.len(), 3);
        assert!(all.unreadable.is_empty());
        let count = |f: Filter| query(dir.path(), &f).expect("query").records.len();
        assert_eq!(
            count(Filter {
                class: Some("ssn".into()),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            count(Filter {
                outcome: Some(Outcome::Denied),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                account: Some("A-1".into()),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            count(Filter {
                role: Some("it-data-management".into()),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                principal: Some("collections".into()),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                kind: Some(Kind::Decrypt),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            count(Filter {
                grant_id: Some("g-1".into()),
                ..Filter::default()
            }),
            1
        );
        let since = parse_time_arg("2026-07-01T09:00:00Z").expect("time");
        let until = parse_time_arg("2026-07-01T10:00:00Z").expect("time");
        assert_eq!(
            count(Filter {
                since: Some(since),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            count(Filter {
                since: Some(since),
                until: Some(until),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            parse_time_arg("2026-07-01").expect("date"),
            datetime!(2026-07-01 0:00 UTC)
        );
        assert!(parse_time_arg("July").is_err());
    }

    #[test]
    fn renders_table_and_json_lines() {
        let dir = TempDir::new("query-render");
        log_with_records(dir.path());
        let scan = query(dir.path(), &Filter::default()).expect("query");
        let table = render_table(&scan.records);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("SEQ  TIME"));
        assert!(lines[1].contains("collections") && lines[1].contains("GET accounts.get"));
        assert!(lines[2].contains("denied") && lines[2].contains("role_not_allowed"));
        assert_eq!(lines.last().copied(), Some("3 record(s)"));
        let json = render_json_lines(&scan.records);
        assert_eq!(json.lines().count(), 3);
        for line in json.lines() {
            assert!(crate::audit::record::parse_record_line(line.as_bytes()).is_ok());
        }
    }

    #[test]
    fn unreadable_lines_are_reported_not_skipped() {
        let dir = TempDir::new("query-bad");
        log_with_records(dir.path());
        let path = dir.path().join("audit-000001.log");
        let text = std::fs::read_to_string(&path).expect("read");
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        // Line 3: record 2 (each record is followed by its checkpoint).
        lines[2] = "{\"seq\":2,garbage".to_string();
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
        let scan = query(dir.path(), &Filter::default()).expect("query");
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.unreadable.len(), 1);
        assert_eq!(scan.unreadable[0].line, 3);
        assert!(render_warnings(&scan.unreadable).contains("line 3: unreadable"));
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("a\u{1b}[31mb", 48), "a\\u{1b}[31mb");
        assert_eq!(printable("abcdef", 4), "abc…");
    }
}
