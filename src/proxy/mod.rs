//! The request path: listener → identify → authorize → protect request →
//! upstream → rewrite response, one file per step.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Metrics;
use crate::config::Config;
use crate::detect::Detectors;
use crate::identity::PeerCertificate;

pub mod access_log;
pub mod admit;
pub mod audit;
pub mod authorize;
pub mod edge;
pub mod edge_body;
pub mod edge_io;
pub mod error;
pub mod framing;
pub mod headers;
pub mod listener;
pub mod pipeline;
pub mod protect_request;
pub mod rewrite_response;
pub mod upstream;

pub use edge_body::RequestBody;
pub use error::GatewayError;

/// The body type of every gateway response.
pub type GatewayBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the gateway knows about one client connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The verified client certificate, if one was presented.
    pub cert: Option<PeerCertificate>,
}

/// What a reload replaces: the configuration and everything built from
/// its policy. A request takes one snapshot when it starts and finishes
/// under it, whatever reloads happen meanwhile.
#[derive(Debug)]
pub struct Live {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Rate limiters of this policy (a reload keeps the buckets of every
    /// limit it does not change).
    pub rates: crate::admit::RateLimiter,
    /// The lockout rule (`[lockout]`) over the state store.
    pub lockout: crate::admit::Lockout,
    /// Daily record budgets over the state store.
    pub budget: crate::admit::Budget,
}

impl Live {
    fn new(
        config: Arc<Config>,
        state: &Arc<dyn crate::admit::StateStore>,
        shadow: &Arc<crate::admit::Shadow>,
        clock: &Arc<dyn crate::unmask::Clock>,
        previous: Option<&Live>,
    ) -> Live {
        let rates = match previous {
            Some(p) => {
                crate::admit::RateLimiter::carried_over(&config.policy, Arc::clone(clock), &p.rates)
            }
            None => crate::admit::RateLimiter::new(&config.policy, Arc::clone(clock)),
        };
        Live {
            rates,
            lockout: crate::admit::Lockout::new(
                Arc::clone(state),
                config.lockout,
                Arc::clone(shadow),
            ),
            budget: crate::admit::Budget::new(
                Arc::clone(state),
                &config.policy.admit,
                Arc::clone(shadow),
            ),
            config,
        }
    }
}

/// State shared by every request.
pub struct Shared {
    live: arc_swap::ArcSwap<Live>,
    /// Lockouts, freezes and record counts.
    pub state: Arc<dyn crate::admit::StateStore>,
    /// Record counts, failed sign-ons and locks kept here while the state
    /// store is away, pushed when it is back (kept across reloads).
    pub shadow: Arc<crate::admit::Shadow>,
    /// The frozen account ids, as last read from the state store (refreshed
    /// on every change made here and once a second, so freezes made by
    /// other instances arrive within a second).
    pub frozen: arc_swap::ArcSwap<std::collections::HashSet<String>>,
    /// The server certificate and client-certificate trust (CA, CRLs),
    /// replaced on reload.
    pub tls_certs: Arc<listener::CertStore>,
    /// The upstream client.
    pub upstream: upstream::Upstream,
    /// The compiled detectors.
    pub detectors: Arc<Detectors>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How write requests are protected (sealer = the keyring, when configured).
    pub protection: Arc<crate::rewrite::RequestProtection>,
    /// The keyring, when card encryption is configured.
    pub keyring: Option<Arc<crate::crypto::keyring::Keyring>>,
    /// The unmask audit log, when configured (without it, unmask requests
    /// are refused).
    pub audit: Option<Arc<dyn crate::audit::AuditSink>>,
    /// Decrypt grants.
    pub grants: Arc<dyn crate::unmask::GrantBackend>,
    /// Per-principal unmask budgets.
    pub unmask_counters: crate::unmask::RateCounters,
    /// Distinct persons each delegating principal called for today (kept
    /// across reloads).
    pub delegates: crate::admit::DelegateCount,
    /// The time, for grants and budgets.
    pub clock: Arc<dyn crate::unmask::Clock>,
}

impl Shared {
    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.live.load().config)
    }

    /// The configuration and its policy's limiters, as one snapshot.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Re-reads the frozen accounts from the state store.
    pub async fn refresh_frozen(&self) -> Result<(), crate::admit::StateError> {
        let list = self.state.list_freezes().await?;
        self.frozen
            .store(Arc::new(list.into_iter().map(|f| f.account).collect()));
        Ok(())
    }

    /// Re-reads the configuration and its policy files from where they were
    /// first loaded. The new set is checked whole first: if any of it is
    /// wrong, nothing changes and the errors (file:line:col) are returned.
    /// Requests in flight finish under the configuration they started with.
    ///
    /// Policies, limits, lockout and admission settings, revocations and
    /// logging take effect for the next request; the listen address,
    /// upstream, data directory, TLS files, card encryption, audit log and
    /// state backend need a restart (a change to them is reported, not
    /// applied).
    pub fn reload(&self) -> Result<ReloadReport, crate::config::ConfigErrors> {
        let current = self.config();
        let mut next = crate::config::load(&current.source)?;
        // The certificate, its key, the client CA and CRLs are re-read now
        // (all or nothing: a bad file keeps the old ones and the old
        // configuration); the listen address and grace period only at a
        // restart.
        self.tls_certs.reload_from(&next.server).map_err(|e| {
            crate::config::ConfigErrors(vec![crate::config::ConfigError {
                file: current.source.clone(),
                line: 1,
                col: 1,
                message: format!("[server] TLS files: {e}"),
            }])
        })?;
        let mut needs_restart = Vec::new();
        if next.server.listen != current.server.listen
            || next.server.shutdown_grace != current.server.shutdown_grace
        {
            needs_restart.push("server");
        }
        if next.limits != current.limits {
            // Connection-level limits (header sizes, timeouts, HTTP/2
            // settings) are set when the listener starts.
            needs_restart.push("limits");
        }
        if next.upstream != current.upstream {
            needs_restart.push("upstream");
        }
        if next.data_dir != current.data_dir {
            needs_restart.push("data");
        }
        if next.crypto != current.crypto {
            needs_restart.push("crypto");
        }
        if next.audit != current.audit {
            needs_restart.push("audit");
        }
        if next.state != current.state {
            needs_restart.push("state");
        }
        // Sections that need a restart keep their running values until then.
        next.server.listen = current.server.listen;
        next.server.shutdown_grace = current.server.shutdown_grace;
        next.limits = current.limits.clone();
        next.upstream = current.upstream.clone();
        next.data_dir = current.data_dir.clone();
        next.crypto = current.crypto.clone();
        next.audit = current.audit.clone();
        next.state = current.state.clone();
        let previous = self.live.load_full();
        let live = Live::new(
            Arc::new(next),
            &self.state,
            &self.shadow,
            &self.clock,
            Some(&previous),
        );
        self.live.store(Arc::new(live));
        self.metrics.reloaded();
        Ok(ReloadReport { needs_restart })
    }
}

/// The audit record of a reload asked for by `by` (a principal's name, or
/// `SIGHUP`): granted with the sections that wait for a restart, or denied
/// when the new files were refused.
pub fn reload_record(
    by: &str,
    result: &Result<ReloadReport, crate::config::ConfigErrors>,
) -> crate::audit::RecordDraft {
    use crate::audit::{Kind, Outcome, RecordDraft};
    match result {
        Ok(report) => {
            let draft = RecordDraft::new(Kind::Admin, by, Outcome::Granted, "reload");
            if report.needs_restart.is_empty() {
                draft
            } else {
                draft.reason(format!(
                    "changed on disk, applied at the next restart: {}",
                    report.needs_restart.join(", ")
                ))
            }
        }
        Err(errors) => RecordDraft::new(Kind::Admin, by, Outcome::Denied, "reload_refused").reason(
            format!("{} error(s) in the new configuration", errors.0.len()),
        ),
    }
}

/// Reloads for `by` (a principal's name, or `SIGHUP`), logs it and waits
/// until its audit record is durable.
pub async fn reload_audited(
    shared: &Arc<Shared>,
    by: &str,
    request_id: Option<&str>,
) -> Result<Result<ReloadReport, crate::config::ConfigErrors>, GatewayError> {
    // Reading and checking the files is blocking work: off the request threads.
    let reloading = Arc::clone(shared);
    let source = by.to_owned();
    let result = tokio::task::spawn_blocking(move || reload_and_log(&reloading, &source))
        .await
        .map_err(|_| GatewayError::Internal)?;
    if let Some(audit) = &shared.audit {
        let mut draft = reload_record(by, &result);
        if let Some(id) = request_id {
            draft = draft.request_id(id);
        }
        audit::append(audit, draft).await?;
    }
    Ok(result)
}

/// [`Shared::reload`], logged and counted; `source` says who asked
/// (`SIGHUP`, the calling principal).
pub fn reload_and_log(
    shared: &Shared,
    source: &str,
) -> Result<ReloadReport, crate::config::ConfigErrors> {
    match shared.reload() {
        Ok(report) => {
            tracing::info!(target: "maskgate::reload", source, "configuration reloaded");
            // Key changes made by `maskgate keys` (a rotated blind index key,
            // retired data keys) apply from here on.
            if let Some(keyring) = &shared.keyring {
                if let Err(e) = keyring.reload() {
                    tracing::error!(target: "maskgate::reload", source, error = %e, "keyring not reloaded; the keys in force stay");
                }
            }
            for section in &report.needs_restart {
                tracing::warn!(target: "maskgate::reload", section, "this section changed on disk; it takes effect after a restart");
            }
            Ok(report)
        }
        Err(errors) => {
            shared.metrics.event("reload_failed");
            for e in &errors.0 {
                tracing::error!(target: "maskgate::reload", source, error = %e, "reload refused; the configuration in force stays");
            }
            Err(errors)
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Sections that changed on disk but need a restart to take effect.
    pub needs_restart: Vec<&'static str>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// TLS material could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, String),
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamSetupError),
    /// The keyring or its key-encryption key could not be loaded.
    #[error("card encryption: {0}")]
    Crypto(String),
    /// The audit log or the grant store could not be opened.
    #[error("audit: {0}")]
    Audit(String),
    /// The state store (lockouts, freezes, budgets) could not be opened.
    #[error("state store: {0}")]
    State(String),
}

/// A running gateway.
pub struct GatewayHandle {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Metrics (for tests and the demo).
    pub metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    /// The server certificate and client-certificate trust, reloadable.
    pub tls_certs: Arc<listener::CertStore>,
}

impl GatewayHandle {
    /// Stops accepting, drains in-flight requests, and waits for the end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the gateway stops (after a shutdown signal elsewhere).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Re-reads the configuration ([`Shared::reload`]), as SIGHUP does,
    /// and records it (as asked for by `handle`) without waiting for the
    /// record to be durable.
    pub fn reload(&self) -> Result<ReloadReport, crate::config::ConfigErrors> {
        let result = reload_and_log(&self.shared, "handle");
        if let Some(audit) = &self.shared.audit {
            audit.append(
                reload_record("handle", &result),
                Box::new(|written| {
                    if written.is_err() {
                        tracing::error!(target: "maskgate::audit", "reload could not be recorded");
                    }
                }),
            );
        }
        result
    }

    /// The state shared by the gateway's requests.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A sender that stops the gateway when `true` is sent.
    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

type CryptoSetup = (
    Option<Arc<crate::crypto::keyring::Keyring>>,
    crate::rewrite::RequestProtection,
);

/// Loads the keyring (when configured) and the write-protection settings.
fn crypto_setup(config: &Config) -> Result<CryptoSetup, ServeError> {
    use crate::class::FieldClass;
    let mut encrypt = [false; FieldClass::COUNT];
    let mut blind_index = [false; FieldClass::COUNT];
    let Some(c) = &config.crypto else {
        // Without a keyring card values cannot be stored, so writes carrying
        // them are refused rather than stored in the clear.
        encrypt[FieldClass::CardNumber.index()] = true;
        return Ok((
            None,
            crate::rewrite::RequestProtection {
                sealer: None,
                encrypt,
                blind_index,
                detected_card: crate::rewrite::DetectedCard::Refuse,
            },
        ));
    };
    for class in &c.encrypt_classes {
        encrypt[class.index()] = true;
    }
    for class in &c.blind_index_classes {
        blind_index[class.index()] = true;
    }
    let kek = match (&c.kek_file, &c.kek_env) {
        (Some(path), _) => crate::crypto::kek::Kek::from_file(path),
        (None, Some(var)) => crate::crypto::kek::Kek::take_from_env(var),
        (None, None) => crate::crypto::kek::Kek::take_from_env(crate::crypto::kek::DEFAULT_KEK_ENV),
    }
    .map_err(|e| ServeError::Crypto(e.to_string()))?;
    let ring = crate::crypto::keyring::Keyring::load(&c.keyring, kek, Default::default())
        .map_err(|e| ServeError::Crypto(e.to_string()))?;
    let ring = Arc::new(ring);
    Ok((
        Some(Arc::clone(&ring)),
        crate::rewrite::RequestProtection {
            sealer: Some(ring),
            encrypt,
            blind_index,
            detected_card: if c.encrypt_detected_cards {
                crate::rewrite::DetectedCard::Encrypt
            } else {
                crate::rewrite::DetectedCard::Refuse
            },
        },
    ))
}

/// Once a second: lets the audit log write time-driven checkpoints; once a
/// minute: records grants that expired unused.
async fn housekeeping(shared: Arc<Shared>) {
    let mut ticks = 0u64;
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        interval.tick().await;
        if Arc::strong_count(&shared) == 1 {
            return;
        }
        ticks += 1;
        if let Err(e) = shared.refresh_frozen().await {
            shared.metrics.event("state_unavailable");
            tracing::warn!(target: "maskgate::state", error = %e, "cannot read the frozen accounts; keeping the last list");
        }
        if ticks % 60 == 0 {
            shared.live().rates.retain_recent();
        }
        if shared.shadow.has_pending() {
            reconcile_shadow(&shared).await;
        }
        let Some(audit) = shared.audit.clone() else {
            continue;
        };
        audit.tick();
        if ticks % 60 == 0 {
            let now = shared.clock.now();
            if let Ok(expired) = shared.grants.sweep_expired(now).await {
                for g in expired {
                    let draft = crate::audit::RecordDraft::new(
                        crate::audit::Kind::GrantExpired,
                        g.approver.clone(),
                        crate::audit::Outcome::Granted,
                        "expired",
                    )
                    .on_behalf_of(g.grantee.clone())
                    .grant_id(g.id.clone());
                    let _ = audit::append(&audit, draft).await;
                }
            }
        }
    }
}

/// Pushes what was counted while the state store was away (record counts,
/// failed sign-ons, locks); quiet while it is still away.
async fn reconcile_shadow(shared: &Shared) {
    let live = shared.live();
    let budgets = live.budget.reconcile().await;
    let lockouts = live.lockout.reconcile().await;
    if budgets.is_ok() && lockouts.is_ok() {
        shared.metrics.event("state_reconciled");
        tracing::info!(target: "maskgate::state", "state store reachable again: counts kept meanwhile pushed");
    }
}

/// Reloads the configuration on every SIGHUP while the gateway runs.
async fn reload_on_hangup(shared: std::sync::Weak<Shared>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!(target: "maskgate::reload", "cannot listen for SIGHUP; reload with POST /_maskgate/reload");
            return;
        };
        while hangups.recv().await.is_some() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if reload_audited(&shared, "SIGHUP", None).await.is_err() {
                tracing::error!(target: "maskgate::audit", "reload by SIGHUP could not be recorded");
            }
        }
    }
    #[cfg(not(unix))]
    drop(shared);
}

/// Starts the gateway on its configured address.
pub async fn start(config: Config) -> Result<GatewayHandle, ServeError> {
    let listener = listener::bind(config.server.listen).await?;
    start_on(config, listener).await
}

/// Starts the gateway on an already-bound listener.
pub async fn start_on(
    config: Config,
    tcp: tokio::net::TcpListener,
) -> Result<GatewayHandle, ServeError> {
    start_with_clock(config, tcp, Arc::new(crate::unmask::SystemClock)).await
}

/// [`start_on`] with the clock grants and unmask budgets use (tests move it).
pub async fn start_with_clock(
    config: Config,
    tcp: tokio::net::TcpListener,
    clock: Arc<dyn crate::unmask::Clock>,
) -> Result<GatewayHandle, ServeError> {
    let tls_certs = listener::CertStore::new(&config.server)?;
    let upstream = upstream::Upstream::new(&config.upstream)?;
    let local_addr = tcp
        .local_addr()
        .map_err(|e| ServeError::Bind(config.server.listen, e.to_string()))?;
    let metrics = Arc::new(Metrics::new());
    let grace = config.server.shutdown_grace;
    let (keyring, protection) = crypto_setup(&config)?;
    // `[state] backend = "postgres"`: grants and the audit log are shared
    // through the database (one pool with the state store).
    let db = match (&config.state.backend, &config.state.postgres) {
        (crate::config::StateBackend::Postgres, Some(pg)) => Some(
            crate::pg::Db::open(pg)
                .await
                .map_err(|e| ServeError::Audit(format!("shared database: {e}")))?,
        ),
        _ => None,
    };
    let audit = match &config.audit {
        Some(a) if db.is_some() => {
            let key = crate::audit::SigningKey::load(&a.signing_key)
                .map_err(|e| ServeError::Audit(e.to_string()))?;
            let policy = crate::audit::CheckpointPolicy {
                every_records: a.checkpoint_every_records,
                every: a.checkpoint_every,
            };
            let db = db
                .clone()
                .ok_or(ServeError::Audit("shared database".into()))?;
            let log = crate::audit::pg::PgAuditLog::open_with_witness(
                db,
                key,
                policy,
                Default::default(),
                a.witness_dir.clone(),
            )
            .await
            .map_err(|e| ServeError::Audit(e.to_string()))?;
            Some(Arc::new(log) as Arc<dyn crate::audit::AuditSink>)
        }
        Some(a) => {
            let key = crate::audit::SigningKey::load(&a.signing_key)
                .map_err(|e| ServeError::Audit(e.to_string()))?;
            let options = crate::audit::AuditOptions {
                checkpoint: crate::audit::CheckpointPolicy {
                    every_records: a.checkpoint_every_records,
                    every: a.checkpoint_every,
                },
                rotate_bytes: Some(a.rotate_bytes),
                witness: a.witness_dir.clone(),
                // Records are timed by the gateway's clock, like the grants,
                // budgets and windows they are about.
                clock: {
                    let clock = Arc::clone(&clock);
                    crate::audit::Clock::from_fn(move || time::OffsetDateTime::from(clock.now()))
                },
                ..Default::default()
            };
            let log = crate::audit::AuditLog::open(&a.dir, key, options)
                .map_err(|e| ServeError::Audit(e.to_string()))?;
            if let Some(torn) = &log.open_report().torn {
                // Straight to stderr as well: an operator must see it even
                // with logging turned down.
                eprintln!("maskgate: audit incident: {}", torn.describe());
                tracing::warn!(target: "maskgate::audit", file = %torn.file.display(), bytes = torn.len, records = torn.records, chains = torn.chains, "bytes after the last signed checkpoint were moved aside and an incident recorded");
            }
            Some(Arc::new(log) as Arc<dyn crate::audit::AuditSink>)
        }
        None => None,
    };
    let grants: Arc<dyn crate::unmask::GrantBackend> = match &db {
        Some(db) => Arc::new(crate::pg::PgGrantStore::new(db.clone())),
        None => Arc::new(
            crate::unmask::GrantStore::open(&config.data_dir)
                .map_err(|e| ServeError::Audit(format!("grant store: {e}")))?,
        ),
    };
    let state = crate::admit::open_state(&config).map_err(|e| ServeError::State(e.to_string()))?;
    let frozen: std::collections::HashSet<String> = state
        .list_freezes()
        .await
        .map_err(|e| ServeError::State(e.to_string()))?
        .into_iter()
        .map(|f| f.account)
        .collect();
    let shadow = Arc::new(crate::admit::Shadow::new());
    let live = Live::new(Arc::new(config), &state, &shadow, &clock, None);
    let shared = Arc::new(Shared {
        live: arc_swap::ArcSwap::from_pointee(live),
        state,
        shadow,
        frozen: arc_swap::ArcSwap::from_pointee(frozen),
        tls_certs: Arc::clone(&tls_certs),
        upstream,
        detectors: Arc::new(Detectors::new()),
        metrics: Arc::clone(&metrics),
        protection: Arc::new(protection),
        keyring,
        audit,
        grants,
        unmask_counters: crate::unmask::RateCounters::new(),
        delegates: crate::admit::DelegateCount::new(),
        clock,
    });
    tokio::spawn(housekeeping(Arc::clone(&shared)));
    tokio::spawn(reload_on_hangup(Arc::downgrade(&shared)));
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(listener::accept_loop(
        tcp,
        Arc::clone(&tls_certs),
        Arc::clone(&shared),
        rx,
        grace,
    ));
    tracing::info!(listen = %local_addr, "maskgate listening");
    Ok(GatewayHandle {
        local_addr,
        shutdown: tx,
        task,
        metrics,
        shared,
        tls_certs,
    })
}
