//! The `maskgate` binary as a user runs it: `check` on good and broken
//! configs, and `demo` with its printed curl lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_maskgate")
}

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(p)
}

#[test]
fn check_accepts_the_shipped_policy() {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(data("good/maskgate.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("9 roles"));
}

/// PCI DSS v4.0 8.3.4: a lock shorter than 30 minutes loads, with a warning.
#[test]
fn check_warns_about_a_lockout_shorter_than_thirty_minutes() {
    let good = std::fs::read_to_string(data("good/maskgate.toml")).unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let good = good.replace("../../../../policies", &policies.display().to_string());
    let dir = std::env::temp_dir().join(format!("maskgate-cli-lockout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |lock: Option<u64>| {
        let mut text = good.clone();
        if let Some(secs) = lock {
            text.push_str(&format!("\n[lockout]\nlock_secs = {secs}\n"));
        }
        let path = dir.join("maskgate.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert_eq!(check(None), "", "the default (1800 s) needs no warning");
    assert_eq!(check(Some(1800)), "");
    let short = check(Some(900));
    assert!(short.contains("lock_secs = 900 is below 1800"), "{short}");
    assert!(short.contains("PCI DSS"), "{short}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_reports_every_broken_fixture_with_file_line_col() {
    let mut cases = 0;
    for entry in std::fs::read_dir(data("broken")).unwrap() {
        let dir = entry.unwrap().path();
        let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(dir.join("maskgate.toml"))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: check must fail",
            dir.display()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            if let Some(secret) = line.strip_prefix("!secret ") {
                assert!(
                    !stderr.contains(secret.trim()),
                    "{}: a secret was echoed",
                    dir.display()
                );
                continue;
            }
            // "file:line:col[: message start]" — the file is matched as a path suffix
            let mut parts = line.splitn(4, ':');
            let (file, l, c) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let text = parts.next().map(str::trim).unwrap_or("");
            let found = stderr
                .lines()
                .any(|e| e.contains(&format!("{file}:{l}:{c}:")) && e.contains(text));
            assert!(found, "{}: missing `{line}` in\n{stderr}", dir.display());
        }
        cases += 1;
    }
    assert!(cases >= 12, "only {cases} broken fixtures");
}

#[test]
fn demo_prints_curl_lines_that_work_and_stops_on_ctrl_c() {
    let dir = std::env::temp_dir().join(format!("maskgate-cli-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(bin())
        .args(["demo", "--dir"])
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut curls = Vec::new();
    // Seeding 1,200 accounts through a debug build takes minutes on a
    // loaded machine; the loop ends as soon as the demo says it is ready.
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.trim_start().starts_with("curl ") => {
                curls.push(line.trim().to_owned())
            }
            Ok(line) if line.contains("Ctrl-C") => break,
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    assert_eq!(curls.len(), 9, "one curl line per role: {curls:?}");
    for line in &curls {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{line} -sS -w '\\n%{{http_code}}'"))
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        // GreenWaste's contract window (Mon–Sat 06:00–18:00 Pacific) is real
        // policy: outside it the line answers with the window refusal.
        if line.contains("greenwaste") && code == "403" {
            assert!(body.contains("outside_access_window"), "{body}");
            continue;
        }
        assert_eq!(
            code,
            "200",
            "{line}\n{body}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if line.contains("/accounts/") {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["id"], maskgate::demo::curl::EXAMPLE_ACCOUNT);
            let ssn = v.get("ssn").and_then(|s| s.as_str());
            if line.contains("non-utilities") || line.contains("greenwaste") {
                assert!(ssn.is_none(), "{line}: ssn must be removed");
            } else if let Some(ssn) = ssn {
                assert!(ssn.starts_with("***-**-"), "{line}: {ssn}");
            }
        }
    }
    // Ctrl-C stops both cleanly
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "demo did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // The demo's files are where the README says.
    for f in [
        "certs/ca.pem",
        "certs/server.pem",
        "certs/billing.pem",
        "certs/billing.key",
        "maskgate.toml",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    assert_demo_files_are_ignored(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file the demo wrote into `dir` is one the repository's
/// `.gitignore` ignores, as if `dir` were the checkout: one `git add -A`
/// after running the demo from the repository root commits no key. The
/// policy files are the exception: the demo writes them only where none
/// exist, and the checkout tracks its own.
fn assert_demo_files_are_ignored(dir: &Path) {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["init", "--quiet"]);
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".gitignore"),
        dir.join(".gitignore"),
    )
    .unwrap();
    let untracked = git(&["status", "--porcelain", "--untracked-files=all"]);
    let exposed: Vec<&str> = untracked
        .lines()
        .filter_map(|l| l.strip_prefix("?? "))
        .filter(|f| *f != ".gitignore" && !f.starts_with("policies/"))
        .collect();
    assert!(exposed.is_empty(), "not ignored: {exposed:?}");
    let ignored = git(&[
        "status",
        "--porcelain",
        "--ignored",
        "--untracked-files=all",
    ]);
    for f in [
        "certs/ca.key",
        "certs/server.key",
        "keys/kek",
        "keys/keyring.mgkr",
        "keys/audit-signing.key",
        "maskgate.toml",
        "demo-data/accounts.jsonl",
    ] {
        assert!(
            ignored.lines().any(|l| l == format!("!! {f}")),
            "{f} is not ignored:\n{ignored}"
        );
    }
    // certs/README.md, shipped in the checkout, is not ignored.
    std::fs::write(dir.join("certs/README.md"), "x").unwrap();
    let readme = git(&["status", "--porcelain", "--untracked-files=all"]);
    assert!(
        readme.lines().any(|l| l == "?? certs/README.md"),
        "{readme}"
    );
}
