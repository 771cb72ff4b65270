//! Configuration: the gateway config file and the policy files it names,
//! read, checked and compiled into a [`Config`].
//!
//! The file schema is `docs/config-schema.md`. [`load`] returns either a
//! complete, checked configuration or every error it found, each naming
//! `file:line:col`: the gateway never starts half-configured. The loader does
//! not read certificate or key files (it only checks that they are named);
//! it reads the policy files.

mod access;
#[cfg(test)]
mod access_tests;
mod compile;
mod error;
mod gateway;
mod policy;
mod raw;
mod route;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use access::{
    normalize_serial, AccessWindow, AdmitSettings, DailyHours, DaySet, PageCap, RatePeriod,
    RateSpec, Revocations, RouteRate,
};
pub use error::{ConfigError, ConfigErrors};
pub use gateway::{redact_url, PostgresConfig};
pub use gateway::{
    AuditConfig, ClientCertHeaders, CryptoConfig, IpNet, IpNetError, Limits, LockoutConfig,
    LogConfig, LogFormat, ServerConfig, StateBackend, StateConfig, UpstreamConfig,
};
pub use policy::{is_encrypted_class, Delegates, GrantPolicy, Policy, Principal, Role, UnmaskRule};
pub use route::Route;

use error::{Diag, Source};

/// A checked, compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway config file, as an absolute path.
    pub source: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[upstream]`.
    pub upstream: UpstreamConfig,
    /// `[limits]`, defaults filled in.
    pub limits: Limits,
    /// `[log]`, defaults filled in.
    pub log: LogConfig,
    /// `[data] dir`, resolved against the config file's directory.
    pub data_dir: PathBuf,
    /// The compiled policy.
    pub policy: Arc<Policy>,
    /// `[crypto]`, when card encryption is configured.
    pub crypto: Option<CryptoConfig>,
    /// `[audit]`, when the unmask audit log is configured (without it every
    /// unmask request is refused).
    pub audit: Option<AuditConfig>,
    /// `[lockout]`, defaults filled in.
    pub lockout: LockoutConfig,
    /// `[state]`, defaults filled in.
    pub state: StateConfig,
}

/// Reads the gateway config at `path` and every policy file it names, checks
/// them and compiles the policy. Relative paths in a file are relative to
/// that file's directory.
///
/// Returns every error found (syntax, unknown keys, wrong types, missing
/// keys, unknown names, duplicates, bad selectors or templates, rights an
/// allowlist role may not have, ...), sorted by file and position.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let single = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            col: 1,
            message,
        }])
    };
    let absolute = std::path::absolute(path)
        .map_err(|e| single(format!("cannot resolve the config path: {e}")))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| single(format!("cannot read the config file: {e}; check the path")))?;
    let gateway_src = Source {
        path: path.to_path_buf(),
        text,
    };
    // Errors name files by the path given; values are resolved absolutely.
    let display_base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let base = absolute.parent().unwrap_or(Path::new("/")).to_path_buf();

    let mut diag = Diag::default();
    let parts = raw::parse_gateway(&gateway_src, &mut diag)
        .map(|(raw, root_ok)| gateway::check(raw, root_ok, &gateway_src, &base, &mut diag))
        .unwrap_or_default();

    let mut sources = Vec::new();
    let mut complete = false;
    if let Some(files) = &parts.policy_files {
        complete = files.complete;
        for (resolved, span) in &files.files {
            let shown = match resolved.strip_prefix(&base) {
                Ok(rel) => display_base.join(rel),
                Err(_) => resolved.clone(),
            };
            match std::fs::read_to_string(resolved) {
                Ok(text) => sources.push(Source { path: shown, text }),
                Err(e) => {
                    complete = false;
                    diag.at(
                        &gateway_src,
                        span,
                        format!(
                            "cannot read policy file `{}`: {e}; check the path (relative paths start at this file's directory)",
                            shown.display()
                        ),
                    );
                }
            }
        }
    }
    let mut inputs = Vec::new();
    for src in &sources {
        match raw::parse_policy(src, &mut diag) {
            Some((raw, whole)) => {
                complete &= whole;
                inputs.push((src, raw));
            }
            None => complete = false,
        }
    }
    let policy = compile::compile(inputs, complete, &mut diag);

    let mut order = vec![gateway_src.path.as_path()];
    order.extend(sources.iter().map(|s| s.path.as_path()));
    if !diag.is_empty() {
        return Err(diag.finish(&order));
    }
    match (
        parts.server,
        parts.upstream,
        parts.limits,
        parts.log,
        parts.data_dir,
        parts.crypto,
        parts.audit,
        parts.lockout,
        parts.state,
    ) {
        (
            Some(server),
            Some(upstream),
            Some(limits),
            Some(log),
            Some(data_dir),
            Some(crypto),
            Some(audit),
            Some(lockout),
            Some(state),
        ) => Ok(Config {
            source: absolute,
            server,
            upstream,
            limits,
            log,
            data_dir,
            policy: Arc::new(policy),
            crypto,
            audit,
            lockout,
            state,
        }),
        // Every missing part reported an error; this is a safety net.
        _ => Err(single("the configuration is incomplete".to_owned())),
    }
}
