//! A gateway killed with SIGKILL under concurrent unmask load: every unmask
//! response a client received has its record in the log, and the log
//! verifies after a restart.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const REASON: &str = "COLL-2026-00042 skip trace for agency";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unmask_a_client_received_survives_a_kill() {
    let dir = temp_dir("crash");
    let upstream = demo_upstream(&dir, 40).await;
    let mut names: Vec<&str> = ROLES.to_vec();
    names.push("nobody");
    maskgate::demo::certs::generate(&dir.join("certs"), &names).unwrap();
    // The shipped policy, with collections' budgets raised for a load test.
    let policy_dir = dir.join("policies");
    maskgate::demo::run::ensure_policy(&policy_dir).unwrap();
    let roles = std::fs::read_to_string(policy_dir.join("roles.toml")).unwrap();
    let roles = roles
        .replace("max_records_per_hour = 50", "max_records_per_hour = 100000")
        .replace("max_records_per_day = 200", "max_records_per_day = 1000000");
    std::fs::write(policy_dir.join("roles.toml"), roles).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config =
        maskgate::demo::run::write_full_config(&dir, listen, upstream.addr, &policy_dir).unwrap();
    let ssn_account = maskgate::demo::data::generate(2016, 40)
        .into_iter()
        .find(|a| a["ssn"].is_string())
        .and_then(|a| a["id"].as_str().map(str::to_owned))
        .unwrap();

    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_maskgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let env_addr = listen;
    let wait_up = || async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(env_addr).await.is_err() {
            assert!(Instant::now() < deadline, "gateway did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut child = spawn();
    wait_up().await;

    // Clients with the collections certificate, unmasking concurrently.
    let client_for = || {
        let certs = dir.join("certs");
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut std::fs::read(certs.join("ca.pem")).unwrap().as_slice())
        {
            roots.add(c.unwrap()).unwrap();
        }
        tls_client(
            roots,
            Some((certs.join("collections.pem"), certs.join("collections.key"))),
            env_addr,
            false,
        )
    };
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let client = client_for();
        let received = received.clone();
        let stop = stop.clone();
        let path = format!("/accounts/{ssn_account}");
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client
                    .get_with_result(&path, &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)])
                    .await
                {
                    Ok(r)
                        if r.status == 200
                            && r.json()["ssn"].as_str().is_some_and(|s| !s.contains('*')) =>
                    {
                        let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
                        received.lock().unwrap().push(id);
                    }
                    _ => {}
                }
            }
        }));
    }
    // Let load build, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().len() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let received = received.lock().unwrap().clone();
    assert!(
        received.len() >= 20,
        "too little load before the kill: {}",
        received.len()
    );

    // Every response a client got has its durable record.
    let audit_dir = dir.join("data").join("audit");
    let records = maskgate::audit::query::query(&audit_dir, &maskgate::audit::Filter::default())
        .unwrap()
        .records;
    let logged: std::collections::HashSet<String> = records
        .iter()
        .filter(|r| r.outcome == maskgate::audit::Outcome::Granted)
        .filter_map(|r| r.request_id.clone())
        .collect();
    for id in &received {
        assert!(
            logged.contains(id),
            "request {id} was answered but has no audit record"
        );
    }

    // Restart: a torn tail is cut, the chain continues, the log verifies.
    let mut child = spawn();
    wait_up().await;
    let client = client_for();
    let r = client
        .get_with(
            &format!("/accounts/{ssn_account}"),
            &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)],
        )
        .await;
    assert_eq!(r.status, 200);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let out = Command::new(env!("CARGO_BIN_EXE_maskgate"))
        .args(["audit", "verify", "--dir"])
        .arg(&audit_dir)
        .arg("--public-key")
        .arg(dir.join("keys/audit-signing.pub"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
