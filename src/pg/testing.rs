//! Throwaway PostgreSQL clusters for tests and benchmarks.
//!
//! [`TestPg::get`] uses `MASKGATE_TEST_PG_URL` when set (a superuser URL of
//! a server the tests may create databases on), else starts one cluster for
//! the process with the distribution's binaries: `initdb` in a fresh
//! temporary directory, `postgres` on a free loopback port, run as an
//! unprivileged user when the tests run as root (initdb refuses root). A
//! watchdog stops the cluster and removes its directory once the test
//! process has exited, so nothing is left running. Without a URL and
//! without binaries it panics with what to install: the PostgreSQL tests
//! never skip silently.
//!
//! [`Cluster::start`] gives a test its own cluster (one it may stop and
//! start); dropping it stops it and removes its directory.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A server tests create databases on.
#[derive(Debug)]
pub enum TestPg {
    /// `MASKGATE_TEST_PG_URL`.
    External(String),
    /// A cluster this process started.
    Local(Cluster),
}

/// The environment variable naming an existing server.
pub const URL_ENV: &str = "MASKGATE_TEST_PG_URL";

static SHARED: OnceLock<TestPg> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl TestPg {
    /// The server for this process (started on first use).
    pub fn get() -> &'static TestPg {
        SHARED.get_or_init(|| match std::env::var(URL_ENV) {
            Ok(url) if !url.trim().is_empty() => TestPg::External(url),
            _ => TestPg::Local(Cluster::start(Options::default())),
        })
    }

    /// The superuser URL.
    pub fn admin_url(&self) -> String {
        match self {
            TestPg::External(url) => url.clone(),
            TestPg::Local(c) => c.url("postgres"),
        }
    }

    /// Creates a new empty database and returns its URL.
    pub async fn new_database(&self) -> String {
        let name = format!(
            "maskgate_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        create_database(&self.admin_url(), &name).await;
        with_database(&self.admin_url(), &name)
    }
}

/// Creates database `name` through `admin_url`.
pub async fn create_database(admin_url: &str, name: &str) {
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    drop(client);
    let _ = task.await;
}

/// `url` with its database replaced by `name` (URL or key=value form).
pub fn with_database(url: &str, name: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let base = match base[scheme_end..].find('/') {
            Some(i) => &base[..scheme_end + i],
            None => base,
        };
        match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        }
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|p| !p.starts_with("dbname="))
            .collect();
        format!("{} dbname={name}", kept.join(" "))
    }
}

/// How a cluster runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// fsync and synchronous commit on (benchmarks of durable commits);
    /// off by default (tests: faster, same semantics while the OS runs).
    pub durable: bool,
    /// TLS on, with this server certificate and key (PEM files; copied
    /// into the cluster's directory). Plain connections are still accepted.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A PostgreSQL cluster in a temporary directory on a loopback port.
#[derive(Debug)]
pub struct Cluster {
    base: PathBuf,
    bin: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    options: Options,
}

/// The directory holding `initdb`, `postgres` and `pg_ctl`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("MASKGATE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).find(|d| has(d)))
}

/// uid and gid of `user` from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user) && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

impl Cluster {
    /// initdb and start a new cluster. Panics (with what to do) when no
    /// PostgreSQL binaries are found.
    pub fn start(options: Options) -> Cluster {
        let bin = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL tests need a server: set {URL_ENV} to a superuser URL, or install \
                 the PostgreSQL server binaries (Debian: apt-get install postgresql) so that \
                 initdb and postgres are found (pg_config --bindir, /usr/lib/postgresql/*/bin \
                 or PATH; MASKGATE_PG_BIN overrides)"
            )
        });
        let owner = if is_root() {
            Some(
                user_ids("postgres")
                    .or_else(|| user_ids("nobody"))
                    .unwrap_or((65534, 65534)),
            )
        } else {
            None
        };
        let base = std::env::temp_dir().join(format!(
            "maskgate-pg-{}-{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", base.display()));
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&base, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("cannot chown {}: {e}", base.display()));
        }
        let mut cluster = Cluster {
            base,
            bin,
            port: free_port(),
            owner,
            child: None,
            options,
        };
        let out = cluster
            .command("initdb")
            .args(["-D"])
            .arg(cluster.data_dir())
            .args([
                "-A",
                "trust",
                "-U",
                "maskgate",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.spawn_watchdog();
        cluster.start_server();
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt as _;
            c.uid(uid).gid(gid);
        }
        c.current_dir(&self.base);
        c
    }

    /// Stops the cluster once this process is gone (it may not run Drop:
    /// a static, a killed test) and removes its directory.
    fn spawn_watchdog(&self) {
        let script = format!(
            "while [ -d /proc/{parent} ]; do sleep 0.5; done; \
             '{pg_ctl}' stop -D '{data}' -m immediate >/dev/null 2>&1; \
             rm -rf '{base}'",
            parent = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data_dir().display(),
            base = self.base.display(),
        );
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt as _;
            c.uid(uid).gid(gid);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.spawn();
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_server(&mut self) {
        let durable = if self.options.durable { "on" } else { "off" };
        let mut tls_args: Vec<String> = Vec::new();
        if let Some((cert, key)) = &self.options.tls {
            for (src, name) in [(cert, "server.crt"), (key, "server.key")] {
                let dst = self.base.join(name);
                std::fs::copy(src, &dst)
                    .unwrap_or_else(|e| panic!("cannot copy {}: {e}", src.display()));
                use std::os::unix::fs::PermissionsExt as _;
                let _ = std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600));
                if let Some((uid, gid)) = self.owner {
                    let _ = std::os::unix::fs::chown(&dst, Some(uid), Some(gid));
                }
            }
            tls_args = vec![
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", self.base.join("server.crt").display()),
                "-c".into(),
                format!("ssl_key_file={}", self.base.join("server.key").display()),
            ];
        }
        let log = std::fs::File::create(self.base.join("server.log"))
            .unwrap_or_else(|e| panic!("cannot create the server log: {e}"));
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(self.base.join("server.log"), Some(uid), Some(gid));
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.base.display()))
            .args(["-c", &format!("fsync={durable}")])
            .args(["-c", &format!("synchronous_commit={durable}")])
            .args(["-c", &format!("full_page_writes={durable}")])
            .args(["-c", "max_connections=200"])
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self
                    .command("pg_ctl")
                    .arg("status")
                    .arg("-D")
                    .arg(self.data_dir())
                    .output()
                    .is_ok_and(|o| o.status.success())
                && self.ready()
            {
                return;
            }
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("postgres exited ({status}): {}", self.server_log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start within 30 s: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ready(&self) -> bool {
        let isready = self.bin.join("pg_isready");
        if !isready.is_file() {
            return true;
        }
        Command::new(isready)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "maskgate",
                "-d",
                "postgres",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.base.join("server.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Stops the server with `pg_ctl stop -m fast` (connections are cut).
    pub fn stop_server(&mut self) {
        let out = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://maskgate@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new empty database and returns its URL.
    pub async fn new_database(&self) -> String {
        let name = format!(
            "maskgate_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        create_database(&self.url("postgres"), &name).await;
        self.url(&name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self
                .command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w"])
                .output();
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_replace() {
        assert_eq!(
            with_database("postgresql://u:p@h:5/db?sslmode=disable", "x"),
            "postgresql://u:p@h:5/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("host=h user=u dbname=d", "x"),
            "host=h user=u dbname=x"
        );
    }
}
