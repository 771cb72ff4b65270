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
    /// Measure the cores.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
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

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
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
            init_logging(cfg.log.format, &cfg.log.level);
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
            init_logging(LogFormat::Text, "info");
            runtime()?.block_on(maskgate::demo::run::run(&dir, listen, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
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
