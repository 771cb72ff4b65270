//! TLS to the database: with `[state] ca` the connection requires TLS and
//! verifies the server against that CA (and the URL's host); a server whose
//! certificate another CA signed is refused.

use maskgate::config::PostgresConfig;
use maskgate::pg::testing::{Cluster, Options};
use maskgate::pg::{Db, PgError};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("maskgate-pgtls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn uses_tls(db: &Db) -> Result<bool, PgError> {
    db.run(|c| {
        Box::pin(async move {
            Ok(c.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?
            .get(0))
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_requires_tls_and_verifies_the_server() {
    let dir = temp_dir("ok");
    // server.pem names localhost, 127.0.0.1 and ::1; ca.pem signed it.
    maskgate::demo::certs::generate(&dir.join("certs"), &[]).unwrap();
    let other = temp_dir("other");
    maskgate::demo::certs::generate(&other.join("certs"), &[]).unwrap();
    let cluster = Cluster::start(Options {
        tls: Some((
            dir.join("certs").join("server.pem"),
            dir.join("certs").join("server.key"),
        )),
        ..Options::default()
    });
    let url = cluster.new_database().await;

    let mut config = PostgresConfig::new(url.clone());
    config.ca = Some(dir.join("certs").join("ca.pem"));
    let db = Db::open(&config).await.unwrap();
    assert!(uses_tls(&db).await.unwrap(), "the session is encrypted");

    let plain = Db::open(&PostgresConfig::new(url.clone())).await.unwrap();
    assert!(!uses_tls(&plain).await.unwrap(), "without a CA: plain");

    let mut wrong = PostgresConfig::new(url);
    wrong.ca = Some(other.join("certs").join("ca.pem"));
    let err = Db::open(&wrong).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    let mut missing = PostgresConfig::new("postgresql://x@127.0.0.1:1/x");
    missing.ca = Some(dir.join("absent.pem"));
    assert!(matches!(Db::open(&missing).await, Err(PgError::Config(_))));
}
