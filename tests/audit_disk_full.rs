//! The audit log's disk fills up under a running gateway: unmasking is
//! refused (503, nothing released), health and readiness say the audit
//! component has failed, and once space is freed the log reopens by
//! itself, without a restart, records that it did, and unmasking works
//! again. The log lives on a real 1 MiB tmpfs (the test mounts one, so it
//! runs as root, as the project's CI does), the witness outside it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const REASON: &str = "COLL-2026-00042 skip trace for agency";

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "this test mounts a 1 MiB tmpfs to fill it up: run it as root"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes a filler file until the file system is full.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_health_and_the_log_recovers_without_restart() {
    let dir = temp_dir("disk-full");
    let disk = Tmpfs::mount(&dir.join("small-disk"));
    let upstream = demo_upstream(&dir, 40).await;
    let audit_dir = disk.0.join("audit");
    let witness = dir.join("witness");
    let options = Options {
        audit_witness_dir: Some(witness.clone()),
        ..Options::default()
    };
    let audit = audit_dir.clone();
    let env = Env::secure(dir.clone(), upstream, options, move |cfg| {
        if let Some(a) = &mut cfg.audit {
            a.dir = audit;
        }
    })
    .await;
    let acct = maskgate::demo::data::generate(maskgate::demo::run::DEMO_SEED, 40)
        .into_iter()
        .find(|a| a["ssn"].is_string())
        .and_then(|a| a["id"].as_str().map(str::to_owned))
        .unwrap();
    let path = format!("/accounts/{acct}");
    let col = env.client(Some("collections"), false);
    let anon = env.client(None, false);
    let unmask = || col.get_with(&path, &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)]);

    let r = unmask().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.contains_key(maskgate::audit::RECEIPT_HEADER));
    let health = anon.get("/_maskgate/health").await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["components"]["audit"]["status"], "ok");
    assert_eq!(anon.get("/_maskgate/ready").await.status, 200);

    // The disk fills up. The log's last page may still hold a few
    // records; the first append that needs a new page fails.
    let filler = disk.0.join("filler");
    fill(&filler);
    let mut refused = None;
    for _ in 0..20 {
        let r = unmask().await;
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("unmasking went on with the disk full");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "audit_unavailable");
    assert!(r.json()["ssn"].is_null());
    assert!(!r.headers.contains_key(maskgate::audit::RECEIPT_HEADER));
    // Refused at once while the disk stays full.
    assert_eq!(unmask().await.status, 503);
    let health = anon.get("/_maskgate/health").await;
    assert_eq!(health.status, 503, "{}", health.text());
    let body = health.json();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["components"]["audit"]["status"], "failed");
    assert_eq!(body["components"]["listener"]["status"], "ok");
    let ready = anon.get("/_maskgate/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["ready"], false);
    // Masked reads still flow.
    assert_eq!(col.get(&path).await.status, 200);

    // Space is freed: the log reopens by itself within a few ticks.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = anon.get("/_maskgate/health").await;
        if h.status == 200 {
            let incidents = h.json()["components"]["audit"]["incidents"].clone();
            assert!(
                incidents.to_string().contains("reopened itself"),
                "{incidents}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the audit log did not reopen: {}",
            h.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(anon.get("/_maskgate/ready").await.status, 200);
    let r = unmask().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let records = maskgate::audit::query::query(&audit_dir, &maskgate::audit::Filter::default())
        .unwrap()
        .records;
    assert!(
        records.iter().any(|r| r.why == "audit_sink_reopened"),
        "no reopening record"
    );
    let keys = [maskgate::audit::PublicKey::load(&dir.join("keys/audit-signing.pub")).unwrap()];
    env.stop().await;
    let report = maskgate::audit::verify_with(
        &audit_dir,
        &keys,
        &maskgate::audit::VerifyOptions {
            witnesses: vec![witness],
            receipts: Vec::new(),
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{}", report.render());
}
