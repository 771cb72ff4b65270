//! The `maskgate` command: serve, check, demo, bench.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use maskgate::config::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "maskgate",
    version,
    about = "Field-masking and encryption gateway for customer identity data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The gateway config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config and its policies without starting; exit 1 on any error.
    Check {
        /// The gateway config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a synthetic customer database and the gateway in front of it.
    Demo {
        /// Where certificates, config and demo data go.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The gateway's listen address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
    },
    /// Manage the card-data keyring.
    Keys {
        #[command(subcommand)]
        what: KeysCommand,
    },
    /// Verify, search and report on the unmask audit log.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Measure the cores.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(clap::Args)]
struct KeyringArgs {
    /// The keyring file.
    #[arg(long)]
    keyring: PathBuf,
    /// File holding the key-encryption key (64 hex digits or base64), mode 0600.
    #[arg(long, conflicts_with = "kek_env")]
    kek_file: Option<PathBuf>,
    /// Environment variable holding the key-encryption key.
    #[arg(long, default_value = maskgate::crypto::kek::DEFAULT_KEK_ENV)]
    kek_env: String,
}

impl KeyringArgs {
    fn kek(&self) -> Result<maskgate::crypto::kek::Kek, String> {
        match &self.kek_file {
            Some(path) => maskgate::crypto::kek::Kek::from_file(path),
            None => maskgate::crypto::kek::Kek::from_env(&self.kek_env),
        }
        .map_err(|e| e.to_string())
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new keyring (refuses to overwrite one). With --new-kek-file,
    /// also writes a new key-encryption key there (mode 0600).
    Init {
        #[command(flatten)]
        ring: KeyringArgs,
        /// Write a freshly generated key-encryption key to this file first.
        #[arg(long)]
        new_kek_file: Option<PathBuf>,
    },
    /// Add a new data key; new writes use it, older keys still decrypt.
    Rotate {
        #[command(flatten)]
        ring: KeyringArgs,
    },
    /// Replace the blind index key (end of its cryptoperiod, or suspected
    /// compromise); then re-index stored cards through `POST
    /// /_maskgate/rewrap` with `"reindex": true` (docs/security.md).
    RotateIndex {
        #[command(flatten)]
        ring: KeyringArgs,
    },
    /// List keys: id, state, created, encryptions (never key bytes).
    List {
        #[command(flatten)]
        ring: KeyringArgs,
    },
    /// Retire a key: its envelopes no longer decrypt (rewrap them first).
    Retire {
        #[command(flatten)]
        ring: KeyringArgs,
        /// The key to retire.
        #[arg(long)]
        key_id: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the chain and the signed checkpoints with only the public key.
    /// Exit 0: intact; 1: tampered (the first bad record is named); 2: error.
    Verify {
        /// The audit log directory.
        #[arg(
            long,
            required_unless_present = "postgres",
            conflicts_with = "postgres"
        )]
        dir: Option<PathBuf>,
        /// The shared log in PostgreSQL instead: a connection URL, or
        /// `env:NAME` to read it from environment variable NAME (keeps a
        /// password out of the process list).
        #[arg(long)]
        postgres: Option<String>,
        /// The Ed25519 public key file; give it again for each key the log
        /// was signed with (after a key change).
        #[arg(long, required = true)]
        public_key: Vec<PathBuf>,
        /// A witness directory (`[audit] witness_dir`) to compare the log
        /// with; a log shorter than its witness is tampered. Repeatable.
        #[arg(long)]
        witness: Vec<PathBuf>,
        /// A file of receipts (`X-Maskgate-Audit-Receipt` values, one a
        /// line); a receipt whose record is missing makes verify exit 1.
        #[arg(long)]
        receipts: Vec<PathBuf>,
    },
    /// Search records.
    Query {
        /// The audit log directory.
        #[arg(
            long,
            required_unless_present = "postgres",
            conflicts_with = "postgres"
        )]
        dir: Option<PathBuf>,
        /// The shared log in PostgreSQL instead (URL or `env:NAME`).
        #[arg(long)]
        postgres: Option<String>,
        /// Records at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Records before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Principal (or on-behalf-of person).
        #[arg(long)]
        principal: Option<String>,
        /// Role.
        #[arg(long)]
        role: Option<String>,
        /// Field class.
        #[arg(long)]
        class: Option<String>,
        /// granted | denied.
        #[arg(long)]
        outcome: Option<String>,
        /// Account id.
        #[arg(long)]
        account: Option<String>,
        /// Record kind (unmask, decrypt, grant_issued, …).
        #[arg(long)]
        kind: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The quarterly access review.
    Report {
        /// The audit log directory.
        #[arg(
            long,
            required_unless_present = "postgres",
            conflicts_with = "postgres"
        )]
        dir: Option<PathBuf>,
        /// The shared log in PostgreSQL instead (URL or `env:NAME`).
        #[arg(long)]
        postgres: Option<String>,
        /// The quarter, e.g. 2026Q3.
        #[arg(long)]
        quarter: String,
        /// markdown | json | html.
        #[arg(long, default_value = "markdown")]
        format: String,
        /// The gateway config, to list who holds which role and to read
        /// business hours in the policy's time zone (`[admit] budget_tz`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Generate the Ed25519 checkpoint signing key pair.
    Keygen {
        /// Private key file (PKCS#8, written 0600).
        #[arg(long)]
        private_key: PathBuf,
        /// Public key file.
        #[arg(long)]
        public_key: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Stream a generated body of SIZE bytes through the rewriter and report
    /// peak memory (memory must stay flat, bounded by the largest token).
    Stream {
        /// Body size in bytes.
        #[arg(long, default_value_t = 200_000_000)]
        size: u64,
        /// Run all detectors too.
        #[arg(long)]
        detectors: bool,
    },
    /// Rewriter throughput against a serde_json baseline, same bytes, same run.
    Rewrite {
        /// Corpus size in bytes.
        #[arg(long, default_value_t = 64 << 20)]
        size: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Run only the measurements whose name contains this (for profiling).
        #[arg(long)]
        only: Option<String>,
    },
}

/// Logs go to stderr through a batching writer ([`maskgate::logging`]):
/// request threads append lines in memory, one thread writes them out every
/// 50 ms. Keep the guard until exit: dropping it writes what is left.
fn init_logging(format: LogFormat, level: &str) -> maskgate::logging::LogGuard<std::io::Stderr> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = maskgate::logging::batched(std::io::stderr());
    // Access lines are formatted by maskgate itself (cheaper) and go to
    // the same writer.
    let access_writer = writer.clone();
    maskgate::proxy::access_log::install(
        format,
        Box::new(move |line| {
            use std::io::Write as _;
            let _ = access_writer.clone().write_all(line);
        }),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || writer.clone())
        // Colour codes only for a person at a terminal, not for log files.
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("maskgate: {message}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} roles, {} routes, {} principals)",
                    config.display(),
                    cfg.policy.roles.len(),
                    cfg.policy.routes.len(),
                    cfg.policy.principals.len()
                );
                if let Some(warning) = cfg.lockout.warning() {
                    eprintln!("{}: {warning}", config.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                eprintln!("{} error(s); the gateway would not start", errors.0.len());
                Ok(ExitCode::from(1))
            }
        },
        Command::Serve { config } => {
            let cfg = match config::load(&config) {
                Ok(cfg) => cfg,
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("{e}");
                    }
                    return Err(format!(
                        "{} configuration error(s); not starting",
                        errors.0.len()
                    ));
                }
            };
            let _log_guard = init_logging(cfg.log.format, &cfg.log.level);
            runtime()?.block_on(async move {
                let handle = maskgate::proxy::start(cfg)
                    .await
                    .map_err(|e| e.to_string())?;
                let stop = handle.shutdown_sender();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!("shutting down: draining in-flight requests");
                    let _ = stop.send(true);
                });
                handle.wait().await;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Demo { dir, listen } => {
            let _log_guard = init_logging(LogFormat::Text, "info");
            runtime()?.block_on(maskgate::demo::run::run(&dir, listen, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what: BenchCommand::Stream { size, detectors },
        } => {
            let before = maskgate::bench::peak_rss_kib().unwrap_or(0);
            let started = std::time::Instant::now();
            let (fed, written, records) =
                maskgate::bench::stream(size, detectors).map_err(|e| e.to_string())?;
            let secs = started.elapsed().as_secs_f64();
            let peak = maskgate::bench::peak_rss_kib().unwrap_or(0);
            println!(
                "{{\"input_bytes\":{fed},\"output_bytes\":{written},\"records\":{records},\"seconds\":{secs:.2},\"mb_per_s\":{:.1},\"peak_rss_kib_before\":{before},\"peak_rss_kib\":{peak}}}",
                fed as f64 / secs / 1e6
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { what } => keys(what),
        Command::Audit { what } => audit(what),
        Command::Bench {
            what: BenchCommand::Rewrite { size, json, only },
        } => {
            let report = maskgate::bench::run_only(size, only.as_deref());
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn keys(what: KeysCommand) -> Result<ExitCode, String> {
    use maskgate::crypto::cli;
    let text = match what {
        KeysCommand::Init { ring, new_kek_file } => {
            if let Some(path) = &new_kek_file {
                maskgate::crypto::kek::Kek::create_file(path).map_err(|e| e.to_string())?;
            }
            let kek = match &new_kek_file {
                Some(path) => {
                    maskgate::crypto::kek::Kek::from_file(path).map_err(|e| e.to_string())?
                }
                None => ring.kek()?,
            };
            cli::init(&ring.keyring, &kek).map_err(|e| e.to_string())?
        }
        KeysCommand::Rotate { ring } => {
            cli::rotate(&ring.keyring, &ring.kek()?).map_err(|e| e.to_string())?
        }
        KeysCommand::RotateIndex { ring } => {
            cli::rotate_index(&ring.keyring, &ring.kek()?).map_err(|e| e.to_string())?
        }
        KeysCommand::List { ring } => {
            cli::format_list(&cli::list(&ring.keyring, &ring.kek()?).map_err(|e| e.to_string())?)
        }
        KeysCommand::Retire { ring, key_id } => {
            cli::retire(&ring.keyring, &ring.kek()?, &key_id).map_err(|e| e.to_string())?
        }
    };
    println!("{}", text.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// Runs `f` on the file log in `dir`, or on a copy of the shared log in
/// PostgreSQL (`postgres`: a URL or `env:NAME`), naming its tables.
fn on_log(
    dir: Option<PathBuf>,
    postgres: Option<String>,
    f: impl FnOnce(&std::path::Path) -> maskgate::audit::cli::Output,
) -> Result<maskgate::audit::cli::Output, String> {
    let Some(url) = postgres else {
        let dir = dir.ok_or("give --dir or --postgres")?;
        return Ok(f(&dir));
    };
    let url = match url.strip_prefix("env:") {
        Some(name) => {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?
        }
        None => url,
    };
    let config = maskgate::config::PostgresConfig::new(url);
    let mut out = maskgate::audit::pg::with_db_export(&config, f)?;
    out.stdout = maskgate::audit::pg::name_tables(&out.stdout);
    out.stderr = maskgate::audit::pg::name_tables(&out.stderr);
    Ok(out)
}

fn audit(what: AuditCommand) -> Result<ExitCode, String> {
    use maskgate::audit::cli;
    let out = match what {
        AuditCommand::Verify {
            dir,
            postgres,
            public_key,
            witness,
            receipts,
        } => {
            let options = maskgate::audit::verify::VerifyOptions {
                witnesses: witness,
                receipts,
            };
            on_log(dir, postgres, |d| {
                cli::verify_keys_with(d, &public_key, &options)
            })?
        }
        AuditCommand::Keygen {
            private_key,
            public_key,
        } => cli::keygen(&private_key, &public_key),
        AuditCommand::Query {
            dir,
            postgres,
            since,
            until,
            principal,
            role,
            class,
            outcome,
            account,
            kind,
            json,
        } => {
            let time = |s: Option<String>| -> Result<_, String> {
                s.map(|t| {
                    maskgate::audit::record::parse_time(&t)
                        .ok_or(format!("not an RFC 3339 time: {t}"))
                })
                .transpose()
            };
            let filter = maskgate::audit::query::Filter {
                since: time(since)?,
                until: time(until)?,
                principal,
                role,
                class,
                outcome: outcome
                    .map(|o| {
                        o.parse()
                            .map_err(|_| format!("outcome must be granted or denied, not {o}"))
                    })
                    .transpose()?,
                account,
                kind: kind
                    .map(|k| k.parse().map_err(|_| format!("unknown record kind {k}")))
                    .transpose()?,
                grant_id: None,
            };
            on_log(dir, postgres, |d| cli::query(d, &filter, json))?
        }
        AuditCommand::Report {
            dir,
            postgres,
            quarter,
            format,
            config,
        } => {
            let format = match format.as_str() {
                "markdown" | "md" => cli::ReportFormat::Markdown,
                "json" => cli::ReportFormat::Json,
                "html" => cli::ReportFormat::Html,
                other => {
                    return Err(format!(
                        "format must be markdown, json or html, not {other}"
                    ))
                }
            };
            // With the policy, business hours are read in its time zone
            // (`[admit] budget_tz`), as its people keep them; without it, UTC.
            let (roles, options): (Vec<(String, Vec<String>)>, _) = match config {
                Some(path) => {
                    let cfg = config::load(&path).map_err(|e| e.to_string())?;
                    let roles = cfg
                        .policy
                        .principals
                        .iter()
                        .map(|p| (p.name.clone(), p.roles.clone()))
                        .collect();
                    let options = maskgate::audit::ReportOptions {
                        tz: cfg.policy.admit.budget_tz.clone(),
                        tz_name: cfg.policy.admit.budget_tz_name.clone(),
                        ..maskgate::audit::ReportOptions::default()
                    };
                    (roles, options)
                }
                None => (Vec::new(), maskgate::audit::ReportOptions::default()),
            };
            on_log(dir, postgres, |d| {
                cli::report_with(d, &quarter, format, &roles, &options)
            })?
        }
    };
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    Ok(ExitCode::from(out.exit_code))
}
