//! Writes the demo gateway's `maskgate.toml` (format: `docs/config-schema.md`).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The policy files the demo config names, in order, inside the policy
/// directory.
pub const POLICY_FILES: &[&str] = &[
    "classes.toml",
    "routes.toml",
    "roles.toml",
    "principals.toml",
];

/// The config file's name inside the demo directory.
pub const CONFIG_FILE: &str = "maskgate.toml";

/// Writes `dir/maskgate.toml` (atomically) for a gateway listening on
/// `listen` in front of the demo database at `upstream`, and returns its path.
///
/// Certificates are `dir/certs/{server.pem,server.key,ca.pem}` (mTLS on),
/// the data directory is `dir/data`, logs are text. The four policy files
/// under `policy_dir` are written relative to `dir` when `policy_dir` is
/// inside it, else as absolute paths. `dir` is created if missing.
pub fn write_config(
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    policy_dir: &Path,
) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let policy_base = policy_base(dir, policy_dir)?;
    let mut policy_files = Vec::with_capacity(POLICY_FILES.len());
    for file in POLICY_FILES {
        policy_files.push(toml_string(&path_text(&policy_base.join(file))?));
    }

    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "# maskgate demo configuration, written by `maskgate demo`.\n\
         # Format: docs/config-schema.md. Relative paths are relative to this file.\n\
         \n\
         [server]\n\
         listen = {listen}\n\
         cert = \"certs/server.pem\"\n\
         key = \"certs/server.key\"\n\
         client_ca = \"certs/ca.pem\"\n\
         \n\
         [upstream]\n\
         url = {upstream}\n\
         \n\
         [log]\n\
         format = \"text\"\n\
         \n\
         [data]\n\
         dir = \"data\"\n\
         \n\
         [policy]\n\
         files = [\n",
        listen = toml_string(&listen.to_string()),
        upstream = toml_string(&format!("http://{upstream}")),
    );
    for file in &policy_files {
        let _ = writeln!(text, "    {file},");
    }
    text.push_str("]\n");

    let path = dir.join(CONFIG_FILE);
    write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// `policy_dir` relative to `dir` if it lies inside it, else absolute.
fn policy_base(dir: &Path, policy_dir: &Path) -> io::Result<PathBuf> {
    let dir_abs = resolve(dir)?;
    let policy_abs = resolve(policy_dir)?;
    Ok(match policy_abs.strip_prefix(&dir_abs) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => policy_abs,
    })
}

/// Absolute form of `p`: canonical when it exists, else joined onto the
/// current directory with `.` and `..` components folded lexically.
fn resolve(p: &Path) -> io::Result<PathBuf> {
    if let Ok(canonical) = fs::canonicalize(p) {
        return Ok(canonical);
    }
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

fn path_text(p: &Path) -> io::Result<String> {
    p.to_str().map(str::to_string).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path is not UTF-8: {}", p.display()),
        )
    })
}

/// A TOML basic string literal for `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::test_util::temp_dir;
    use super::*;

    fn parse(path: &Path) -> toml::Table {
        fs::read_to_string(path)
            .unwrap()
            .parse::<toml::Table>()
            .unwrap()
    }

    fn keys(t: &toml::Value) -> Vec<String> {
        let mut k: Vec<String> = t.as_table().unwrap().keys().cloned().collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn writes_the_schema_with_relative_policy_paths() {
        let dir = temp_dir("config");
        let policies = dir.join("policies");
        fs::create_dir_all(&policies).unwrap();
        let listen: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let upstream: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let path = write_config(&dir, listen, upstream, &policies).unwrap();
        assert_eq!(path, dir.join("maskgate.toml"));
        let t = parse(&path);

        let mut top: Vec<&str> = t.keys().map(String::as_str).collect();
        top.sort_unstable();
        assert_eq!(top, ["data", "log", "policy", "server", "upstream"]);
        assert_eq!(keys(&t["server"]), ["cert", "client_ca", "key", "listen"]);
        assert_eq!(t["server"]["listen"].as_str(), Some("127.0.0.1:8443"));
        assert_eq!(t["server"]["cert"].as_str(), Some("certs/server.pem"));
        assert_eq!(t["server"]["key"].as_str(), Some("certs/server.key"));
        assert_eq!(t["server"]["client_ca"].as_str(), Some("certs/ca.pem"));
        assert_eq!(keys(&t["upstream"]), ["url"]);
        assert_eq!(t["upstream"]["url"].as_str(), Some("http://127.0.0.1:9000"));
        assert_eq!(keys(&t["log"]), ["format"]);
        assert_eq!(t["log"]["format"].as_str(), Some("text"));
        assert_eq!(t["data"]["dir"].as_str(), Some("data"));
        assert_eq!(keys(&t["policy"]), ["files"]);
        let files: Vec<&str> = t["policy"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            files,
            [
                "policies/classes.toml",
                "policies/routes.toml",
                "policies/roles.toml",
                "policies/principals.toml"
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outside_policy_dir_is_absolute_and_ipv6_is_bracketed() {
        let base = temp_dir("config-abs");
        let dir = base.join("demo");
        let policies = base.join("shared \"policies\"");
        fs::create_dir_all(&policies).unwrap();
        let listen: SocketAddr = "[::1]:8443".parse().unwrap();
        let upstream: SocketAddr = "[::1]:9001".parse().unwrap();
        let path = write_config(&dir, listen, upstream, &policies).unwrap();
        let t = parse(&path);
        assert_eq!(t["server"]["listen"].as_str(), Some("[::1]:8443"));
        assert_eq!(t["upstream"]["url"].as_str(), Some("http://[::1]:9001"));
        let first = t["policy"]["files"][0].as_str().unwrap();
        let expected = fs::canonicalize(&policies).unwrap().join("classes.toml");
        assert_eq!(Path::new(first), expected);
        assert!(Path::new(first).is_absolute());

        // A relative policy dir that does not exist yet, inside `dir`.
        let path = write_config(&dir, listen, upstream, &dir.join("sub/../pol")).unwrap();
        let t = parse(&path);
        assert_eq!(
            t["policy"]["files"][3].as_str(),
            Some("pol/principals.toml")
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn toml_strings_escape() {
        assert_eq!(toml_string("a\"b\\c\u{1}"), "\"a\\\"b\\\\c\\u0001\"");
        let t: toml::Table = format!("x = {}", toml_string("q\"\\\n\t")).parse().unwrap();
        assert_eq!(t["x"].as_str(), Some("q\"\\\n\t"));
    }
}
