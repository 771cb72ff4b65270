//! Two real `maskgate serve` processes sharing one PostgreSQL database:
//! the controls hold across both (single-use grants, lockouts, freezes, one
//! verifiable audit log), and a database outage refuses unmasks with 503
//! while masked reads keep flowing, until the database is back.
//!
//! Needs a PostgreSQL server (`MASKGATE_TEST_PG_URL`) or the server
//! binaries (throwaway clusters are started); fails without either.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::Method;
use maskgate::pg::testing::{Cluster, Options as PgOptions, TestPg};

const REASON: &str = "COLL-2026-00042 skip trace for agency";
const IT_REASON: &str = "CHG-1234 chargeback dispute";

/// One `maskgate serve` process, killed on drop.
struct Instance {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Two gateways on one database, in front of one demo upstream.
struct Fleet {
    dir: PathBuf,
    url: String,
    a: Instance,
    b: Instance,
    _upstream: Upstream,
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The shipped policy plus an API-key principal (for the lockout test).
fn write_policy(dir: &Path) -> PathBuf {
    let policy_dir = dir.join("policies");
    maskgate::demo::run::ensure_policy(&policy_dir).unwrap();
    let hash = hex::encode(maskgate::identity::api_key_hash(TEST_API_KEY.as_bytes()));
    let path = policy_dir.join("principals.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[principals]]\nname = \"report-app\"\nroles = [\"customer-service\"]\ncert_names = []\napi_key_sha256 = \"{hash}\"\n"
    ));
    std::fs::write(&path, text).unwrap();
    policy_dir
}

fn write_instance_config(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    upstream: SocketAddr,
    policy_dir: &Path,
    url: &str,
) -> PathBuf {
    let path = maskgate::demo::run::write_full_config(dir, listen, upstream, policy_dir).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("dir = \"data\"", &format!("dir = \"data-{name}\""));
    let text = format!(
        "{text}\n[state]\nbackend = \"postgres\"\nurl = {}\nconnect_timeout_ms = 1000\nstatement_timeout_ms = 1000\n",
        toml_str(url)
    );
    let out = dir.join(format!("{name}.toml"));
    std::fs::write(&out, text).unwrap();
    out
}

fn spawn(dir: &Path, name: &str, config: &Path, addr: SocketAddr) -> Instance {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_maskgate"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    Instance { child, addr, log }
}

fn roots(dir: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(dir.join("certs").join("ca.pem")).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

impl Fleet {
    async fn start(tag: &str, url: String) -> Fleet {
        let dir = temp_dir(tag);
        let upstream = demo_upstream(&dir, 0).await;
        let policy_dir = write_policy(&dir);
        let mut names: Vec<&str> = ROLES.to_vec();
        names.push("nobody");
        maskgate::demo::certs::generate(&dir.join("certs"), &names).unwrap();
        let (addr_a, addr_b) = (free_addr(), free_addr());
        let ca = write_instance_config(&dir, "a", addr_a, upstream.addr, &policy_dir, &url);
        let cb = write_instance_config(&dir, "b", addr_b, upstream.addr, &policy_dir, &url);
        // Both start at once: the migrations are applied once.
        let a = spawn(&dir, "a", &ca, addr_a);
        let b = spawn(&dir, "b", &cb, addr_b);
        let fleet = Fleet {
            dir,
            url,
            a,
            b,
            _upstream: upstream,
        };
        for inst in [&fleet.a, &fleet.b] {
            fleet.wait_ready(inst).await;
        }
        maskgate::demo::run::seed_through_gateway(
            fleet.a.addr,
            &fleet.dir.join("certs"),
            maskgate::demo::data::generate(2016, 40),
        )
        .await
        .unwrap();
        fleet
    }

    async fn wait_ready(&self, inst: &Instance) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = self.client(inst, None);
            if let Ok(r) = c.send(Method::GET, "/_maskgate/health", &[], b"").await {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start: {}",
                inst.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn client(&self, inst: &Instance, identity: Option<&str>) -> TestClient {
        let certs = self.dir.join("certs");
        tls_client(
            roots(&self.dir),
            identity.map(|n| {
                (
                    certs.join(format!("{n}.pem")),
                    certs.join(format!("{n}.key")),
                )
            }),
            inst.addr,
            false,
        )
    }

    /// `maskgate audit …` against the shared log.
    fn audit_cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_maskgate"))
            .arg("audit")
            .args(args)
            .args(["--postgres", "env:FLEET_PG_URL"])
            .env("FLEET_PG_URL", &self.url)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn public_key(&self) -> String {
        self.dir
            .join("keys")
            .join("audit-signing.pub")
            .display()
            .to_string()
    }
}

/// A residential demo account and its SSN.
fn account_with_ssn(n: usize) -> String {
    maskgate::demo::data::generate(2016, 40)
        .into_iter()
        .filter_map(|a| {
            a["ssn"].as_str()?;
            Some(a["id"].as_str()?.to_owned())
        })
        .nth(n)
        .expect("a demo account with an SSN")
}

fn account_with_card() -> String {
    maskgate::demo::data::generate(2016, 40)
        .into_iter()
        .find_map(|a| {
            a["cards"][0]["card_number"].as_str()?;
            Some(a["id"].as_str()?.to_owned())
        })
        .expect("a demo account with a card")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_use_grant_requested_through_both_instances_succeeds_once() {
    let url = TestPg::get().new_database().await;
    let fleet = Fleet::start("fleet-grant", url).await;
    let account = account_with_card();
    let body = serde_json::json!({
        "grantee": "it-data-management",
        "scope": {"kind": "accounts", "accounts": [account]},
        "classes": ["card_number"],
        "reason": IT_REASON,
        "validity_minutes": 30,
    })
    .to_string();
    let g = fleet
        .client(&fleet.a, Some("pmo-approver"))
        .send(
            Method::POST,
            "/_maskgate/grants",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(g.status, 201, "{}", g.text());
    let id = g.json()["grant"]["id"].as_str().unwrap().to_owned();
    let path = format!("/accounts/{account}");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let inst = if i % 2 == 0 { &fleet.a } else { &fleet.b };
        let client = fleet.client(inst, Some("it-data-management"));
        let (id, path) = (id.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            client
                .get_with(
                    &path,
                    &[
                        ("x-unmask", "card_number"),
                        ("x-unmask-reason", IT_REASON),
                        ("x-unmask-grant", id.as_str()),
                    ],
                )
                .await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status != 200 {
            assert_eq!(r.status, 403, "{}", r.text());
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "exactly one decrypt: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_authentications_spread_over_both_instances_lock_after_three() {
    let url = TestPg::get().new_database().await;
    let fleet = Fleet::start("fleet-lockout", url).await;
    let good = format!("Bearer {TEST_API_KEY}");
    let (a, b) = (fleet.client(&fleet.a, None), fleet.client(&fleet.b, None));
    for c in [&a, &b] {
        let r = c.get_with("/accounts", &[("authorization", &good)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for (n, c) in [&a, &b, &a].into_iter().enumerate() {
        let r = c
            .get_with(
                "/accounts",
                &[("authorization", &format!("Bearer guess-{n}"))],
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // The third failure (through A) locked the source for B as well.
    for c in [&b, &a] {
        let r = c.get_with("/accounts", &[("authorization", &good)]).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.error_code(), "locked_out");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freeze_made_through_one_instance_is_enforced_by_the_other_within_a_second() {
    let url = TestPg::get().new_database().await;
    let fleet = Fleet::start("fleet-freeze", url).await;
    let account = account_with_ssn(0);
    let billing_b = fleet.client(&fleet.b, Some("billing"));
    let path = format!("/accounts/{account}");
    assert_eq!(billing_b.get(&path).await.status, 200);
    let r = fleet
        .client(&fleet.a, Some("privacy-officer"))
        .send(
            Method::POST,
            &format!("/_maskgate/freezes/{account}"),
            &[],
            b"",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let frozen_at = Instant::now();
    loop {
        let r = billing_b.get(&path).await;
        if r.status == 423 {
            break;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(1),
            "B still serves the frozen account: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unmasks_through_both_instances_form_one_verifiable_log() {
    let url = TestPg::get().new_database().await;
    let fleet = Fleet::start("fleet-audit", url).await;
    let mut tasks = Vec::new();
    // 8 a instance: the collections role's hourly unmask limit (50 records,
    // 5 reserved a request) is counted per instance.
    for i in 0..16 {
        let inst = if i % 2 == 0 { &fleet.a } else { &fleet.b };
        let client = fleet.client(inst, Some("collections"));
        let path = format!("/accounts/{}", account_with_ssn(i % 6));
        tasks.push(tokio::spawn(async move {
            client
                .get_with(&path, &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)])
                .await
        }));
    }
    let mut granted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        granted += 1;
    }
    let (code, out, err) = fleet.audit_cli(&["verify", "--public-key", &fleet.public_key()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("audit log OK"), "{out}");
    let (code, out, err) = fleet.audit_cli(&[
        "query",
        "--kind",
        "unmask",
        "--outcome",
        "granted",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().count(),
        granted,
        "one record per unmask response"
    );
    let now = time::OffsetDateTime::now_utc();
    let quarter = format!("{}Q{}", now.year(), (u8::from(now.month()) - 1) / 3 + 1);
    let (code, out, err) = fleet.audit_cli(&["report", "--quarter", &quarter, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report.to_string().contains("collections"), "{out}");
    // The admin API of either instance verifies the same log.
    let r = fleet
        .client(&fleet.b, Some("security-auditor"))
        .get("/_maskgate/audit/verify")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ok"], true, "{}", r.text());
    // A record edited in the database is found.
    let (client, conn) = tokio_postgres::connect(&fleet.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "ALTER TABLE maskgate_audit_lines DISABLE TRIGGER maskgate_audit_lines_append_only;
             UPDATE maskgate_audit_lines SET line = replace(line, 'COLL-2026-00042', 'COLL-2026-00043')
             WHERE pos = (SELECT min(pos) FROM maskgate_audit_lines WHERE line LIKE '%COLL-2026-00042%');",
        )
        .await
        .unwrap();
    let (code, out, _) = fleet.audit_cli(&["verify", "--public-key", &fleet.public_key()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("TAMPERED: maskgate_audit_lines pos"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_down_refuses_unmasks_keeps_masked_reads_and_recovers() {
    let mut cluster = Cluster::start(PgOptions::default());
    let url = cluster.new_database().await;
    let fleet = Fleet::start("fleet-down", url).await;
    let path = format!("/accounts/{}", account_with_ssn(0));
    let unmask = |inst| {
        let client = fleet.client(inst, Some("collections"));
        let path = path.clone();
        async move {
            client
                .get_with(&path, &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)])
                .await
        }
    };
    for inst in [&fleet.a, &fleet.b] {
        assert_eq!(unmask(inst).await.status, 200);
    }
    cluster.stop_server();
    for inst in [&fleet.a, &fleet.b] {
        let started = Instant::now();
        let r = unmask(inst).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused after {:?}",
            started.elapsed()
        );
        // Masked reads keep flowing.
        let r = fleet.client(inst, Some("collections")).get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().is_empty());
    }
    cluster.start_server();
    // The pools reconnect by themselves.
    for inst in [&fleet.a, &fleet.b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = unmask(inst).await;
            if r.status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "unmask still refused after the restart: {} {}",
                r.status,
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Log lines are written out every 50 ms: give the last ones a moment.
    let mut log = fleet.a.log_text();
    for _ in 0..40 {
        if log.contains("shared database reachable again") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = fleet.a.log_text();
    }
    assert!(log.contains("shared database unavailable"), "{log}");
    assert!(log.contains("shared database reachable again"), "{log}");
    assert!(!log.contains("password"), "{log}");
}

/// The nginx `stream` example of docs/deployment.md in front of the two
/// instances: requests through it reach both, each with its mTLS identity.
/// Needs nginx with the stream module (Debian: libnginx-mod-stream), so it
/// is run by hand: `cargo test --test fleet -- --ignored nginx`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn the_nginx_example_balances_over_the_fleet() {
    let url = TestPg::get().new_database().await;
    let mut fleet = Fleet::start("fleet-nginx", url).await;
    let lb = free_addr();
    let module = ["/usr/lib/nginx/modules/ngx_stream_module.so"]
        .into_iter()
        .find(|m| Path::new(m).exists())
        .expect("nginx stream module (apt-get install libnginx-mod-stream)");
    let conf = fleet.dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module {module};\npid {pid};\nerror_log {log};\nevents {{}}\nstream {{\n    upstream gateways {{\n        least_conn;\n        server {a} max_fails=3 fail_timeout=10s;\n        server {b} max_fails=3 fail_timeout=10s;\n    }}\n    server {{\n        listen {lb};\n        proxy_pass gateways;\n        proxy_connect_timeout 5s;\n        proxy_timeout 120s;\n    }}\n}}\n",
            pid = fleet.dir.join("nginx.pid").display(),
            log = fleet.dir.join("nginx.log").display(),
            a = fleet.a.addr,
            b = fleet.b.addr,
        ),
    )
    .unwrap();
    let nginx = Command::new("nginx")
        .args(["-g", "daemon off;", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx");
    // Stopped with `nginx -s stop` (its workers go too), even on a panic.
    struct Nginx(Child, PathBuf);
    impl Drop for Nginx {
        fn drop(&mut self) {
            let _ = Command::new("nginx")
                .args(["-s", "stop", "-c"])
                .arg(&self.1)
                .status();
            let _ = self.0.wait();
        }
    }
    let _nginx = Nginx(nginx, conf.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(lb).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = format!("/accounts/{}", account_with_ssn(0));
    let dir = fleet.dir.clone();
    let through = |who: &str| {
        tls_client(
            roots(&dir),
            Some((
                dir.join("certs").join(format!("{who}.pem")),
                dir.join("certs").join(format!("{who}.key")),
            )),
            lb,
            false,
        )
    };
    // A new connection per request: least_conn spreads them over both.
    for _ in 0..6 {
        let r = through("collections")
            .get_with(&path, &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)])
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // One instance gone: nginx skips it.
    let _ = fleet.a.child.kill();
    let _ = fleet.a.child.wait();
    for _ in 0..4 {
        let r = through("billing").get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (code, out, err) = fleet.audit_cli(&["verify", "--public-key", &fleet.public_key()]);
    assert_eq!(code, 0, "{out}{err}");
}
