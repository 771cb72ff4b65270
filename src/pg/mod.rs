//! The PostgreSQL backend: several gateway instances share their state —
//! lockouts and failed authentications, freezes, record budgets, decrypt
//! grants and the unmask audit log — through one database.
//!
//! [`Db`] is a connection pool (deadpool-postgres over tokio-postgres,
//! optionally rustls) with bounded waits: connecting, waiting for a pooled
//! connection and every statement each have a limit
//! ([`crate::config::PostgresConfig`]), and every operation is also bounded
//! on the client side, so a database that is down, unreachable or hung
//! answers within about `connect_timeout + 2 × statement_timeout`. The pool
//! reconnects by itself: a broken connection is dropped and the next
//! operation opens a new one. Transitions between reachable and unreachable
//! are logged once each (never with the URL's password) and counted
//! ([`stats`]).
//!
//! The schema is versioned: `migrations/NNNN_*.sql`, embedded in the
//! binary, applied at open in one transaction under an advisory lock (two
//! instances starting at once apply each migration once) and recorded in
//! `maskgate_schema_migrations`.
//!
//! | piece | type |
//! |---|---|
//! | lockouts, failures, freezes, budgets | [`PgStateStore`] ([`crate::admit::StateStore`]) |
//! | decrypt grants | [`PgGrantStore`] ([`crate::unmask::GrantBackend`]) |
//! | audit log | [`crate::audit::pg::PgAuditLog`] ([`crate::audit::AuditSink`]) |

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;

use crate::config::PostgresConfig;

mod grants;
mod state;
pub mod testing;

pub use grants::PgGrantStore;
pub use state::PgStateStore;

/// The embedded migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "0001_shared_state",
    include_str!("../../migrations/0001_shared_state.sql"),
)];

/// The advisory lock key migrations are applied under ("maskgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d61_736b_6761_7465;

/// Why a database operation failed. Messages never hold the connection
/// string's password, nor values from the tables.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// The database could not be reached in time (connecting, waiting for a
    /// connection, a broken connection, a statement past its time limit).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database refused a statement.
    #[error("database error: {0}")]
    Query(String),
    /// Applying the schema migrations failed.
    #[error("database schema migration failed: {0}")]
    Migration(String),
    /// The configuration cannot be used (TLS CA file, connection string).
    #[error("database configuration: {0}")]
    Config(String),
    /// Stored data that does not parse.
    #[error("database holds unreadable data: {0}")]
    Corrupt(String),
}

impl PgError {
    /// True when the failure is the database being unreachable or slow (as
    /// opposed to a refused statement).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PgError::Unavailable(_))
    }
}

/// Describes a driver error without its `DETAIL` (which can quote row
/// values): the SQLSTATE and message for a database error, the driver's
/// own words otherwise (connection errors never carry the password).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("SQLSTATE {}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> PgError {
        let unavailable = e.is_closed()
            || e.as_db_error().is_none()
            || e.code().is_some_and(|c| {
                let c = c.code();
                // 08: connection exception; 57: operator intervention
                // (shutdown, statement timeout 57014); 53: insufficient
                // resources.
                c.starts_with("08") || c.starts_with("57") || c.starts_with("53")
            });
        if unavailable {
            PgError::Unavailable(describe(&e))
        } else {
            PgError::Query(describe(&e))
        }
    }
}

/// Counters of database availability events since the process started
/// (all pools together), for `/_maskgate/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgStats {
    /// Operations that failed because the database was unavailable.
    pub unavailable_errors: u64,
    /// Transitions from reachable to unreachable.
    pub outages: u64,
    /// Transitions from unreachable back to reachable.
    pub recoveries: u64,
    /// Operations that hit the client-side time limit.
    pub timeouts: u64,
}

static UNAVAILABLE_ERRORS: AtomicU64 = AtomicU64::new(0);
static OUTAGES: AtomicU64 = AtomicU64::new(0);
static RECOVERIES: AtomicU64 = AtomicU64::new(0);
static TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// The counters so far.
pub fn stats() -> PgStats {
    PgStats {
        unavailable_errors: UNAVAILABLE_ERRORS.load(Ordering::Relaxed),
        outages: OUTAGES.load(Ordering::Relaxed),
        recoveries: RECOVERIES.load(Ordering::Relaxed),
        timeouts: TIMEOUTS.load(Ordering::Relaxed),
    }
}

struct Inner {
    config: PostgresConfig,
    pool: Pool,
    down: AtomicBool,
    migrated: tokio::sync::OnceCell<()>,
}

/// A pool of connections to the shared database. Cheap to clone; every
/// clone shares the pool.
#[derive(Clone)]
pub struct Db(Arc<Inner>);

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("config", &self.0.config)
            .field("size", &self.0.pool.status().size)
            .finish()
    }
}

/// Pools opened in this process, by configuration: the state store, the
/// grant store and the audit sink of one gateway share one pool.
type Registry = Mutex<Vec<(PostgresConfig, Weak<Inner>)>>;

fn registry() -> &'static Registry {
    static POOLS: OnceLock<Registry> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(Vec::new()))
}

impl Db {
    /// Opens a pool for `config` (or returns the one this process already
    /// has for the same configuration), checks that the database answers,
    /// and applies the migrations it lacks.
    pub async fn open(config: &PostgresConfig) -> Result<Db, PgError> {
        let db = Db::shared(config)?;
        db.ensure_migrated().await?;
        Ok(db)
    }

    /// The pool this process has for `config`, or a new one. Does not touch
    /// the database: the first operation connects and migrates (so a
    /// synchronous caller can open it).
    pub fn shared(config: &PostgresConfig) -> Result<Db, PgError> {
        let mut pools = registry()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pools.retain(|(_, w)| w.strong_count() > 0);
        if let Some(existing) = pools
            .iter()
            .find(|(c, _)| c == config)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(Db(existing));
        }
        let db = Db::connect(config)?;
        pools.push((config.clone(), Arc::downgrade(&db.0)));
        Ok(db)
    }

    /// Applies the migrations once per pool (retried after a failure).
    async fn ensure_migrated(&self) -> Result<(), PgError> {
        self.0
            .migrated
            .get_or_try_init(|| async { self.migrate().await.map(|_| ()) })
            .await
            .map(|_| ())
    }

    /// A new pool for `config` (not shared); connects and migrates on first
    /// use.
    pub fn connect(config: &PostgresConfig) -> Result<Db, PgError> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(|_| {
            PgError::Config(format!(
                "{} is not a valid connection string",
                config.redacted_url()
            ))
        })?;
        pg.connect_timeout(config.connect_timeout);
        pg.options(format!(
            "-c statement_timeout={} -c lock_timeout={}",
            config.statement_timeout.as_millis(),
            config.statement_timeout.as_millis()
        ));
        pg.application_name("maskgate");
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(10));
        let tls = match &config.ca {
            Some(ca) => {
                pg.ssl_mode(SslMode::Require);
                tls_with_ca(ca)?
            }
            None if pg.get_ssl_mode() == SslMode::Require => tls_with_system_roots()?,
            None => {
                pg.ssl_mode(SslMode::Disable);
                make_tls(rustls::RootCertStore::empty())?
            }
        };
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let wait = config.connect_timeout;
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .recycle_timeout(Some(wait))
            .build()
            .map_err(|e| PgError::Config(e.to_string()))?;
        Ok(Db(Arc::new(Inner {
            config: config.clone(),
            pool,
            down: AtomicBool::new(false),
            migrated: tokio::sync::OnceCell::new(),
        })))
    }

    /// The configuration.
    pub fn config(&self) -> &PostgresConfig {
        &self.0.config
    }

    /// The longest one operation may take, client side.
    pub fn op_timeout(&self) -> Duration {
        let c = &self.0.config;
        c.connect_timeout + c.statement_timeout * 2
    }

    /// True while the last operation found the database unavailable.
    pub fn is_down(&self) -> bool {
        self.0.down.load(Ordering::Acquire)
    }

    /// Runs `op` with a pooled connection, bounded by [`Db::op_timeout`].
    /// A connection whose operation timed out or broke is discarded, so
    /// the pool reconnects.
    pub async fn run<T, F>(&self, op: F) -> Result<T, PgError>
    where
        F: for<'c> FnOnce(&'c mut Object) -> BoxFuture<'c, Result<T, PgError>>,
    {
        self.ensure_migrated().await?;
        self.run_unmigrated(op).await
    }

    async fn run_unmigrated<T, F>(&self, op: F) -> Result<T, PgError>
    where
        F: for<'c> FnOnce(&'c mut Object) -> BoxFuture<'c, Result<T, PgError>>,
    {
        let limit = self.op_timeout();
        let result = tokio::time::timeout(limit, async {
            let mut client = self
                .0
                .pool
                .get()
                .await
                .map_err(|e| PgError::Unavailable(pool_error(&e)))?;
            let r = op(&mut client).await;
            if matches!(r, Err(PgError::Unavailable(_))) || client.is_closed() {
                drop(Object::take(client));
            }
            r
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                Err(PgError::Unavailable(format!(
                    "no answer within {} ms",
                    limit.as_millis()
                )))
            }
        };
        self.note(&result);
        result
    }

    /// A pooled connection, for an operation that borrows more than the
    /// connection (use with [`Db::bounded`] and [`Db::release`]).
    /// Does not migrate (the CLI's read-only export uses it).
    pub(crate) async fn client(&self) -> Result<Object, PgError> {
        let limit = self.op_timeout();
        let r = match tokio::time::timeout(limit, self.0.pool.get()).await {
            Ok(r) => r.map_err(|e| PgError::Unavailable(pool_error(&e))),
            Err(_) => {
                TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                Err(PgError::Unavailable(format!(
                    "no connection within {} ms",
                    limit.as_millis()
                )))
            }
        };
        if r.is_err() {
            self.note(&r);
        }
        r
    }

    /// Runs `fut` within [`Db::op_timeout`], noting availability.
    pub(crate) async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, PgError>>,
    ) -> Result<T, PgError> {
        let limit = self.op_timeout();
        let r = match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => {
                TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                Err(PgError::Unavailable(format!(
                    "no answer within {} ms",
                    limit.as_millis()
                )))
            }
        };
        self.note(&r);
        r
    }

    /// Returns `client` to the pool, or discards it after `r` found the
    /// database unavailable (the pool opens a new one).
    pub(crate) fn release<T>(&self, client: Object, r: &Result<T, PgError>) {
        if matches!(r, Err(PgError::Unavailable(_))) || client.is_closed() {
            drop(Object::take(client));
        }
    }

    /// Logs and counts availability transitions.
    fn note<T>(&self, result: &Result<T, PgError>) {
        match result {
            Err(e @ PgError::Unavailable(_)) => {
                UNAVAILABLE_ERRORS.fetch_add(1, Ordering::Relaxed);
                if !self.0.down.swap(true, Ordering::AcqRel) {
                    OUTAGES.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        target: "maskgate::pg",
                        database = %self.0.config.redacted_url(),
                        error = %e,
                        "shared database unavailable: unmask and decrypt requests are refused (503) until it is back"
                    );
                }
            }
            _ => {
                if self.0.down.swap(false, Ordering::AcqRel) {
                    RECOVERIES.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        target: "maskgate::pg",
                        database = %self.0.config.redacted_url(),
                        "shared database reachable again"
                    );
                }
            }
        }
    }

    /// Applies the embedded migrations the database lacks.
    pub async fn migrate(&self) -> Result<Vec<i32>, PgError> {
        let applied = self
            .run_unmigrated(|c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                        .await?;
                    tx.batch_execute(
                        "CREATE TABLE IF NOT EXISTS maskgate_schema_migrations (\
                         version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
                         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                    )
                    .await?;
                    let rows = tx
                        .query("SELECT version FROM maskgate_schema_migrations", &[])
                        .await?;
                    let have: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
                    let mut applied = Vec::new();
                    for (version, name, sql) in MIGRATIONS {
                        if have.contains(version) {
                            continue;
                        }
                        tx.batch_execute(sql).await.map_err(|e| {
                            PgError::Migration(format!("{name}: {}", describe(&e)))
                        })?;
                        tx.execute(
                            "INSERT INTO maskgate_schema_migrations (version, name) VALUES ($1, $2)",
                            &[version, name],
                        )
                        .await?;
                        applied.push(*version);
                    }
                    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
                    if let Some(v) = have.iter().copied().filter(|v| *v > newest).max() {
                        tracing::warn!(
                            target: "maskgate::pg",
                            schema = v,
                            known = newest,
                            "the database schema is newer than this gateway knows (a newer instance migrated it)"
                        );
                    }
                    tx.commit().await?;
                    Ok(applied)
                })
            })
            .await?;
        if !applied.is_empty() {
            tracing::info!(target: "maskgate::pg", versions = ?applied, "database schema migrated");
        }
        Ok(applied)
    }
}

/// A boxed future borrowing a connection (for [`Db::run`]).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(b) => describe(b),
        other => other.to_string(),
    }
}

fn tls_with_ca(ca: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    let pem = std::fs::read(ca)
        .map_err(|e| PgError::Config(format!("cannot read state.ca {}: {e}", ca.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut any = false;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| PgError::Config(format!("state.ca {}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| PgError::Config(format!("state.ca {}: {e}", ca.display())))?;
        any = true;
    }
    if !any {
        return Err(PgError::Config(format!(
            "state.ca {} holds no PEM certificate",
            ca.display()
        )));
    }
    make_tls(roots)
}

fn tls_with_system_roots() -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    make_tls(roots)
}

fn make_tls(
    roots: rustls::RootCertStore,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Config(format!("TLS to the database: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Unix milliseconds as the `BIGINT` columns hold them.
pub(crate) fn to_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time `ms` Unix milliseconds stand for (0 before the epoch).
pub(crate) fn from_ms(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
