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

/// Creates (once) the demo's key material under `dir/keys`: a key-encryption
/// key, a keyring with one data key, and the audit log's Ed25519 signing key.
pub fn ensure_keys(dir: &Path) -> Result<(), String> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).map_err(|e| format!("cannot create {}: {e}", keys.display()))?;
    let kek_path = keys.join("kek");
    let kek = if kek_path.exists() {
        crate::crypto::kek::Kek::from_file(&kek_path)
    } else {
        crate::crypto::kek::Kek::create_file(&kek_path)
    }
    .map_err(|e| e.to_string())?;
    let keyring = keys.join("keyring.mgkr");
    if !keyring.exists() {
        crate::crypto::cli::init(&keyring, &kek).map_err(|e| e.to_string())?;
    }
    let private = keys.join("audit-signing.key");
    if !private.exists() {
        crate::audit::generate_signing_key(&private, &keys.join("audit-signing.pub"))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The `[crypto]` and `[audit]` sections for a config in `dir` using
/// [`ensure_keys`]'s files.
pub const SECURITY_SECTIONS: &str = "
[crypto]
keyring = \"keys/keyring.mgkr\"
kek_file = \"keys/kek\"
encrypt_classes = [\"card_number\"]
blind_index_classes = [\"card_number\"]
# The demo's notes mention card numbers: encrypt them in place rather than
# refusing the write (the default refuses, naming the field).
encrypt_detected_cards = true

[audit]
signing_key = \"keys/audit-signing.key\"
";

/// Writes `dir/maskgate.toml` with card encryption and the audit log on.
pub fn write_full_config(
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    policy_dir: &Path,
) -> Result<std::path::PathBuf, String> {
    ensure_keys(dir)?;
    let path = config::write_config(dir, listen, upstream, policy_dir)
        .map_err(|e| format!("cannot write the config: {e}"))?;
    let mut text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    text.push_str(SECURITY_SECTIONS);
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Seeds an empty demo database through the gateway as `billing`, so every
/// card number is stored as an envelope, never in the clear.
pub async fn seed_through_gateway(
    gateway: SocketAddr,
    certs_dir: &Path,
    accounts: Vec<serde_json::Value>,
) -> Result<usize, String> {
    use http_body_util::BodyExt;
    let read = |name: &str| std::fs::read(certs_dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut read("ca.pem")?.as_slice()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain = rustls_pemfile::certs(&mut read("billing.pem")?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut read("billing.key")?.as_slice())
        .map_err(|e| e.to_string())?
        .ok_or("billing.key holds no key")?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| e.to_string())?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build::<_, http_body_util::Full<bytes::Bytes>>(https);
    let url = format!(
        "https://127.0.0.1:{}/imports/accounts.ndjson",
        gateway.port()
    );
    let mut seeded = 0;
    for batch in accounts.chunks(200) {
        let mut body = Vec::new();
        for a in batch {
            serde_json::to_writer(&mut body, a).map_err(|e| e.to_string())?;
            body.push(b'\n');
        }
        let req = http::Request::post(&url)
            .header("content-type", "application/x-ndjson")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("seeding: {e}"))?;
        let status = resp.status();
        let text = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "seeding through the gateway failed: {status} {}",
                String::from_utf8_lossy(&text)
            ));
        }
        seeded += batch.len();
    }
    Ok(seeded)
}

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
    let db_file = data_dir.join("accounts.jsonl");
    let fresh = !db_file.exists();
    // A new database starts empty and is seeded through the gateway below,
    // so its card numbers are only ever stored encrypted.
    let store = Arc::new(
        store::Store::open(&db_file, Vec::new).map_err(|e| format!("demo database: {e}"))?,
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
    let config_path = write_full_config(dir, listen, db_addr, &policy_dir)?;
    let cfg = crate::config::load(&config_path).map_err(|e| e.to_string())?;
    let gateway = crate::proxy::start(cfg).await.map_err(|e| e.to_string())?;
    if fresh {
        let accounts = data::generate(DEMO_SEED, DEMO_ACCOUNTS);
        let n = seed_through_gateway(gateway.local_addr, &certs_dir, accounts).await?;
        println!(
            "  seeded {n} synthetic accounts through the gateway (card numbers stored encrypted)"
        );
    }
    let base = format!("https://{}", gateway.local_addr);
    println!("maskgate demo");
    println!("  customer database (synthetic, {DEMO_ACCOUNTS} accounts): http://{db_addr}");
    println!("  gateway: {base}   config: {}", config_path.display());
    println!("  try one line per role (run from {}):", dir.display());
    let certs_rel = Path::new("certs");
    for line in curl::curl_lines(certs_rel, &base, &ROLES) {
        println!("    {line}");
    }
    println!(
        "  (greenwaste is answered only inside its contract window: Mon-Sat 06:00-18:00 Pacific)"
    );
    println!("  access lifecycle:");
    let freeze = curl::curl_line(
        certs_rel,
        &base,
        "privacy-officer",
        &format!("/_maskgate/freezes/{}", curl::EXAMPLE_ACCOUNT),
    );
    println!("    freeze (billing then gets 423):  {freeze} -X POST");
    let locks = curl::curl_line(certs_rel, &base, "security-auditor", "/_maskgate/lockouts");
    println!("    lockouts:                        {locks}");
    let reload = curl::curl_line(certs_rel, &base, "it-data-management", "/_maskgate/reload");
    println!("    reload policies (or SIGHUP):     {reload} -X POST");
    println!("  Ctrl-C stops both.");
    shutdown.await;
    gateway.shutdown().await;
    let _ = db_stop.send(());
    let _ = db_task.await;
    println!("maskgate demo stopped");
    Ok(())
}
