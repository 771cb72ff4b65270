//! `maskgate demo`: the one-command embedded default. Generates certificates
//! and a config, starts the synthetic customer database on an ephemeral
//! loopback port and the gateway in front of it, prints a curl line per role.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::{certs, config, curl, data, store, upstream};

/// Every role of the default city policy, each with a demo client certificate.
pub const ROLES: [&str; 9] = [
    "customer-service",
    "billing",
    "collections",
    "it-data-management",
    "pmo-approver",
    "non-utilities",
    "greenwaste",
    "security-auditor",
    "privacy-officer",
];

/// The default policy, built into the binary so the demo runs from any directory.
pub const DEFAULT_POLICY: [(&str, &str); 4] = [
    ("classes.toml", include_str!("../../policies/classes.toml")),
    ("routes.toml", include_str!("../../policies/routes.toml")),
    ("roles.toml", include_str!("../../policies/roles.toml")),
    (
        "principals.toml",
        include_str!("../../policies/principals.toml"),
    ),
];

/// Seed and size of the synthetic customer base.
pub const DEMO_SEED: u64 = 2016;
/// Number of synthetic accounts.
pub const DEMO_ACCOUNTS: usize = 1200;

/// Writes the default policy files into `dir` unless they are there already.
pub fn ensure_policy(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in DEFAULT_POLICY {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(path, text)?;
        }
    }
    Ok(())
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    dir: &Path,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let certs_dir = dir.join("certs");
    let mut names: Vec<&str> = ROLES.to_vec();
    names.push("api-client");
    certs::generate(&certs_dir, &names).map_err(|e| format!("certificates: {e}"))?;
    let policy_dir = dir.join("policies");
    ensure_policy(&policy_dir).map_err(|e| format!("policy files: {e}"))?;
    let data_dir = dir.join("demo-data");
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let store = Arc::new(
        store::Store::open(&data_dir.join("accounts.jsonl"), || {
            data::generate(DEMO_SEED, DEMO_ACCOUNTS)
        })
        .map_err(|e| format!("demo database: {e}"))?,
    );
    let db_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind the demo database: {e}"))?;
    let db_addr = db_listener.local_addr().map_err(|e| e.to_string())?;
    let (db_stop, db_stopped) = tokio::sync::oneshot::channel::<()>();
    let db_task = tokio::spawn(upstream::serve(
        db_listener,
        Arc::clone(&store),
        async move {
            let _ = db_stopped.await;
        },
    ));
    let config_path = config::write_config(dir, listen, db_addr, &policy_dir)
        .map_err(|e| format!("cannot write the config: {e}"))?;
    let cfg = crate::config::load(&config_path).map_err(|e| e.to_string())?;
    let gateway = crate::proxy::start(cfg).await.map_err(|e| e.to_string())?;
    let base = format!("https://{}", gateway.local_addr);
    println!("maskgate demo");
    println!("  customer database (synthetic, {DEMO_ACCOUNTS} accounts): http://{db_addr}");
    println!("  gateway: {base}   config: {}", config_path.display());
    println!("  try one line per role (run from {}):", dir.display());
    let certs_rel = Path::new("certs");
    for line in curl::curl_lines(certs_rel, &base, &ROLES) {
        println!("    {line}");
    }
    println!("  Ctrl-C stops both.");
    shutdown.await;
    gateway.shutdown().await;
    let _ = db_stop.send(());
    let _ = db_task.await;
    println!("maskgate demo stopped");
    Ok(())
}
