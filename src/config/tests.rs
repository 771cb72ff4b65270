// Compiled only under #[cfg(test)] (see the parent module).
//! Tests of the loader against the fixtures in `tests/data/config/` and the
//! shipped default policy in `policies/`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Method;

use super::*;
use crate::class::{Action, FieldClass};
use crate::detect::DetectorSet;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config")
}

/// One line of a fixture's `expected.txt`: `file:line:col` and, optionally
/// after `: `, text the message must contain.
#[derive(Debug)]
struct Expected {
    file: String,
    line: usize,
    col: usize,
    contains: Option<String>,
}

impl Expected {
    fn matches(&self, e: &ConfigError) -> bool {
        e.file.ends_with(&self.file)
            && e.line == self.line
            && e.col == self.col
            && self
                .contains
                .as_ref()
                .is_none_or(|c| e.message.contains(c.as_str()))
    }
}

/// Parses `expected.txt`: blank lines and `#` comments are skipped; a line
/// `!secret TEXT` says no message may contain TEXT.
fn parse_expected(text: &str) -> (Vec<Expected>, Vec<String>) {
    let mut expected = Vec::new();
    let mut secrets = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(secret) = line.strip_prefix("!secret ") {
            secrets.push(secret.trim().to_owned());
            continue;
        }
        let (position, contains) = match line.split_once(": ") {
            Some((p, c)) => (p, Some(c.to_owned())),
            None => (line, None),
        };
        let mut parts = position.rsplitn(3, ':');
        let col = parts.next().and_then(|c| c.parse().ok());
        let row = parts.next().and_then(|l| l.parse().ok());
        let file = parts.next();
        let (Some(col), Some(line_no), Some(file)) = (col, row, file) else {
            panic!("bad expected.txt line: {line}");
        };
        expected.push(Expected {
            file: file.to_owned(),
            line: line_no,
            col,
            contains,
        });
    }
    (expected, secrets)
}

#[test]
fn broken_fixtures_report_exactly_the_expected_errors() {
    let broken = data_dir().join("broken");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&broken)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 12, "only {} broken fixtures", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let errors = match load(&case.join("maskgate.toml")) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without errors"));
                continue;
            }
            Err(e) => e.0,
        };
        let text = std::fs::read_to_string(case.join("expected.txt"))
            .unwrap_or_else(|e| panic!("{name}/expected.txt: {e}"));
        let (expected, secrets) = parse_expected(&text);
        assert!(!expected.is_empty(), "{name}: expected.txt lists no error");
        let mut unmatched: Vec<&ConfigError> = errors.iter().collect();
        let mut problems = Vec::new();
        for want in &expected {
            match unmatched.iter().position(|e| want.matches(e)) {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => problems.push(format!("  missing: {want:?}")),
            }
        }
        for e in &unmatched {
            problems.push(format!("  unexpected: {e}"));
        }
        for e in &errors {
            if e.line == 0 || e.col == 0 || e.message.is_empty() {
                problems.push(format!("  no position or message: {e}"));
            }
            for s in &secrets {
                if e.to_string().contains(s.as_str()) {
                    problems.push(format!("  echoes a secret: {e}"));
                }
            }
        }
        if !problems.is_empty() {
            let all: Vec<String> = errors.iter().map(|e| format!("  reported: {e}")).collect();
            failures.push(format!(
                "{name}:\n{}\n{}",
                problems.join("\n"),
                all.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ------------------------------------------------------------ default policy

fn good() -> Config {
    let path = data_dir().join("good/maskgate.toml");
    match load(&path) {
        Ok(c) => c,
        Err(e) => panic!("the good config does not load:\n{e}"),
    }
}

/// What DESIGN.md gives each role of the default policy.
struct Rights {
    role: &'static str,
    read_only: bool,
    allowlist: bool,
    action: Action,
    may_delegate: bool,
    /// (route, methods as granted); HEAD is implied by GET.
    grants: &'static [(&'static str, &'static [&'static str])],
}

const READ: &[(&str, &[&str])] = &[("accounts", &["GET"]), ("account", &["GET"])];

const RIGHTS: &[Rights] = &[
    Rights {
        role: "customer-service",
        read_only: true,
        allowlist: false,
        action: Action::Last4,
        may_delegate: true,
        grants: READ,
    },
    Rights {
        role: "billing",
        read_only: false,
        allowlist: false,
        action: Action::Last4,
        may_delegate: true,
        grants: &[
            ("accounts", &["GET", "POST"]),
            ("account", &["GET", "PUT", "PATCH"]),
            ("export-ndjson", &["GET"]),
            ("export-csv", &["GET"]),
            ("import-ndjson", &["POST"]),
            ("import-csv", &["POST"]),
        ],
    },
    Rights {
        role: "collections",
        read_only: true,
        allowlist: false,
        action: Action::Last4,
        may_delegate: false,
        grants: READ,
    },
    Rights {
        role: "it-data-management",
        read_only: true,
        allowlist: false,
        action: Action::Last4,
        may_delegate: false,
        grants: READ,
    },
    Rights {
        role: "pmo-approver",
        read_only: true,
        allowlist: false,
        action: Action::Last4,
        may_delegate: false,
        grants: &[],
    },
    Rights {
        role: "non-utilities",
        read_only: true,
        allowlist: true,
        action: Action::Remove,
        may_delegate: false,
        grants: READ,
    },
    Rights {
        role: "greenwaste",
        read_only: true,
        allowlist: true,
        action: Action::Remove,
        may_delegate: false,
        grants: READ,
    },
    Rights {
        role: "security-auditor",
        read_only: true,
        allowlist: false,
        action: Action::Last4,
        may_delegate: false,
        grants: &[],
    },
    Rights {
        role: "privacy-officer",
        read_only: true,
        allowlist: false,
        action: Action::Last4,
        may_delegate: false,
        grants: READ,
    },
];

const ALL_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

#[test]
fn default_policy_gives_each_role_its_designed_rights() {
    let config = good();
    let policy = &config.policy;
    let names: Vec<&str> = policy.roles.keys().map(String::as_str).collect();
    let mut want_names: Vec<&str> = RIGHTS.iter().map(|r| r.role).collect();
    want_names.sort_unstable();
    assert_eq!(names, want_names);
    assert_eq!(policy.roles.len(), 9);
    for want in RIGHTS {
        let role = policy.role(want.role).unwrap();
        let r = want.role;
        assert_eq!(role.name, r);
        assert!(!role.description.is_empty(), "{r}: description");
        assert_eq!(role.read_only, want.read_only, "{r}: read_only");
        assert_eq!(role.is_allowlist(), want.allowlist, "{r}: allowlist");
        assert_eq!(
            role.rules.is_allowlist(),
            want.allowlist,
            "{r}: rules allowlist"
        );
        assert_eq!(
            role.rules.detector_set(),
            DetectorSet::ALL,
            "{r}: detectors"
        );
        assert_eq!(role.rules.redact_token(), "[REDACTED]", "{r}: redact token");
        for class in FieldClass::ALL {
            assert_eq!(
                role.actions.get(class),
                want.action,
                "{r}: action for {class}"
            );
            assert!(
                !role.actions.get(class).releases_clear_value(),
                "{r}: {class} released by role alone"
            );
        }
        for (index, route) in policy.routes.iter().enumerate() {
            let granted: &[&str] = want
                .grants
                .iter()
                .find(|(name, _)| *name == route.name)
                .map_or(&[], |(_, m)| *m);
            for method in &ALL_METHODS {
                let expect = granted.contains(&method.as_str())
                    || (*method == Method::HEAD && granted.contains(&"GET"));
                assert_eq!(
                    role.allows(index, method),
                    expect,
                    "{r}: {method} {} ({})",
                    route.name,
                    route.template
                );
            }
        }
        // grants() reports what was granted, by route index.
        let mut listed: Vec<(String, Vec<String>)> = role
            .grants()
            .map(|(i, ms)| {
                (
                    policy.routes[i].name.clone(),
                    ms.iter().map(|m| m.to_string()).collect(),
                )
            })
            .collect();
        listed.sort();
        let mut expected: Vec<(String, Vec<String>)> = want
            .grants
            .iter()
            .map(|(n, ms)| {
                let mut ms: Vec<String> = ms.iter().map(|m| (*m).to_owned()).collect();
                ms.sort_by_key(|m| ALL_METHODS.iter().position(|x| x.as_str() == m));
                ((*n).to_owned(), ms)
            })
            .collect();
        expected.sort();
        assert_eq!(listed, expected, "{r}: grants");
        assert!(
            !role.allows(policy.routes.len(), &Method::GET),
            "{r}: out-of-range route index"
        );
    }
}

#[test]
fn default_policy_has_one_principal_per_role() {
    let config = good();
    let policy = &config.policy;
    assert_eq!(policy.principals.len(), 9);
    for want in RIGHTS {
        let p = policy.principal(want.role).unwrap();
        assert_eq!(p.roles, [want.role]);
        assert_eq!(p.cert_names, [want.role]);
        assert_eq!(p.may_delegate, want.may_delegate, "{}", want.role);
        assert!(!p.revoked);
        assert_eq!(p.api_key_sha256, None);
        assert_eq!(
            policy
                .principal_by_cert_name(want.role)
                .map(|p| p.name.as_str()),
            Some(want.role)
        );
    }
    assert!(policy.principal("nobody").is_none());
    assert!(policy.principal_by_cert_name("Customer-Service").is_none());
    assert!(policy.principal_by_key_hash(&[0; 32]).is_none());
}

#[test]
fn default_policy_routes_match_the_demo_api() {
    let config = good();
    let policy = &config.policy;
    let table: &[(&str, Option<&str>)] = &[
        ("/accounts", Some("accounts")),
        ("/accounts/42", Some("account")),
        ("/accounts/AC-0001", Some("account")),
        ("/exports/accounts.ndjson", Some("export-ndjson")),
        ("/exports/accounts.csv", Some("export-csv")),
        ("/accounts/42/cards", None),
        ("/accounts/", None),
        ("/exports/accounts.json", None),
        ("/exports", None),
        ("/", None),
        ("", None),
    ];
    for (path, want) in table {
        let got = policy.match_route(path).map(|(i, r)| {
            assert_eq!(policy.routes[i].name, r.name);
            r.name.as_str()
        });
        assert_eq!(got, *want, "{path}");
    }
    for r in &policy.routes {
        assert!(r.red_flag, "{}", r.name);
        assert!(r.passthrough_types.is_empty());
        assert_eq!(r.export, r.name.starts_with("export-"), "{}", r.name);
    }
    let (_, account) = policy.match_route("/accounts/42").unwrap();
    assert_eq!(account.params("/accounts/42"), Some(vec![("id", "42")]));
}

/// Walks `path` (object keys; `#` for an array index) through `rules`.
fn walk(rules: &crate::rewrite::rules::Rules, path: &[&str]) -> crate::rewrite::rules::MemberMatch {
    let mut nodes = rules.root_nodes();
    let mut m = crate::rewrite::rules::MemberMatch::default();
    for step in path {
        m = if *step == "#" {
            rules.match_index(nodes)
        } else {
            rules.match_key(step.as_bytes(), nodes)
        };
        nodes = m.nodes;
    }
    m
}

/// True when an allowlist keeps the scalar at `path`: an ancestor (or the
/// member itself) is an allowed subtree, or the member's value is allowed.
fn kept(rules: &crate::rewrite::rules::Rules, path: &[&str]) -> bool {
    (1..=path.len()).any(|n| walk(rules, &path[..n]).allowed_subtree)
        || walk(rules, path).allowed_value
}

#[test]
fn default_policy_selects_the_demo_fields() {
    let config = good();
    let rules = &config.policy.role("customer-service").unwrap().rules;
    let class = |path: &[&str]| walk(rules, path).class;
    let table: &[(&[&str], Option<FieldClass>)] = &[
        (&["ssn"], Some(FieldClass::Ssn)),
        (
            &["accounts", "#", "SocialSecurityNumber"],
            Some(FieldClass::Ssn),
        ),
        (&["accounts", "#", "tin"], Some(FieldClass::Tin)),
        (&["accounts", "#", "dob"], Some(FieldClass::Dob)),
        (&["passport"], Some(FieldClass::Passport)),
        (&["drivers_license"], Some(FieldClass::Dln)),
        (&["drivers_license", "number"], Some(FieldClass::Dln)),
        (
            &["accounts", "#", "drivers_license", "number"],
            Some(FieldClass::Dln),
        ),
        (&["drivers_license", "state"], None),
        (&["cards", "#", "card_number"], Some(FieldClass::CardNumber)),
        (&["cards", "#", "card_expiry"], Some(FieldClass::CardExpiry)),
        (&["cards", "#", "cardholder"], None),
        (&["bank", "routing_number"], Some(FieldClass::BankRouting)),
        (&["bank", "account_number"], Some(FieldClass::BankAccount)),
        (
            &["accounts", "#", "bank", "account_number"],
            Some(FieldClass::BankAccount),
        ),
        (&["account_number"], None),
        (&["accounts", "#", "account_number"], None),
        (&["bank_account_number"], Some(FieldClass::BankAccount)),
        (&["notes"], None),
        (&["phone"], None),
        (&["id"], None),
    ];
    for (path, want) in table {
        assert_eq!(class(path), *want, "{path:?}");
    }
    assert!(rules.root_is_record());
    assert!(walk(rules, &["accounts", "#"]).record);
    assert!(!walk(rules, &["accounts"]).record);
}

#[test]
fn allowlist_roles_keep_only_their_fields() {
    let config = good();
    let nu = &config.policy.role("non-utilities").unwrap().rules;
    let gw = &config.policy.role("greenwaste").unwrap().rules;
    let allowed = |rules, path: &[&str]| kept(rules, path);
    for path in [
        &["accounts", "#", "id"][..],
        &["accounts", "#", "name"],
        &["accounts", "#", "service_address"],
        &["accounts", "#", "service_address", "street"],
        &["service_address", "zip"],
        &["accounts", "#", "phone"],
        &["accounts", "#", "city"],
        &["city"],
        &["zip"],
        &["total"],
        &["status"],
    ] {
        assert!(allowed(nu, path), "non-utilities {path:?}");
    }
    for path in [
        &["accounts", "#", "email"][..],
        &["accounts", "#", "mailing_address"],
        &["accounts", "#", "mailing_address", "city"],
        &["mailing_address", "zip"],
        &["notes"],
        &["container_size"],
        &["ssn"],
        &["accounts"],
    ] {
        assert!(!allowed(nu, path), "non-utilities {path:?}");
    }
    for path in [
        &["accounts", "#", "container_size"][..],
        &["pickup_day"],
        &["service_address", "city"],
        &["id"],
    ] {
        assert!(allowed(gw, path), "greenwaste {path:?}");
    }
    for path in [
        &["accounts", "#", "phone"][..],
        &["email"],
        &["service_start"],
        &["bank", "routing_number"],
    ] {
        assert!(!allowed(gw, path), "greenwaste {path:?}");
    }
    // red-flag fields are still classified, and their action is remove
    assert_eq!(
        walk(gw, &["accounts", "#", "ssn"]).class,
        Some(FieldClass::Ssn)
    );
}

#[test]
fn good_gateway_config_is_resolved() {
    let config = good();
    let dir = std::path::absolute(data_dir().join("good")).unwrap();
    assert!(config.source.is_absolute());
    assert_eq!(config.source, dir.join("maskgate.toml"));
    assert_eq!(config.server.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(config.server.cert, dir.join("certs/server.pem"));
    assert_eq!(config.server.key, dir.join("certs/server.key"));
    assert_eq!(config.server.client_ca, Some(dir.join("certs/ca.pem")));
    assert_eq!(config.server.server_names, ["localhost", "127.0.0.1"]);
    assert_eq!(
        config.server.shutdown_grace,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(config.upstream.url.scheme_str(), Some("http"));
    assert_eq!(
        config.upstream.url.authority().unwrap().as_str(),
        "127.0.0.1:9000"
    );
    assert_eq!(config.upstream.base_path, "/api");
    assert_eq!(config.upstream.ca, None);
    assert_eq!(
        config.upstream.connect_timeout,
        std::time::Duration::from_millis(2000)
    );
    assert_eq!(
        config.upstream.response_timeout,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(config.upstream.pool_max_idle_per_host, 32);
    assert_eq!(
        config.limits,
        Limits {
            max_json_depth: 64,
            ..Limits::default()
        }
    );
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "info,maskgate=debug");
    assert_eq!(config.data_dir, dir.join("data"));
}

// ------------------------------------------------------------ small configs

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("maskgate-config-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MINIMAL_GATEWAY: &str = r#"
[server]
listen = "[::1]:8443"
cert = "/etc/maskgate/server.pem"
key = "tls/server.key"

[upstream]
url = "https://db.internal"

[policy]
files = ["policy/p.toml"]
"#;

/// Loads MINIMAL_GATEWAY with `policy` as its only policy file.
fn load_policy(policy: &str) -> Result<Config, ConfigErrors> {
    let dir = TempDir::new();
    dir.write("policy/p.toml", policy);
    load(&dir.write("maskgate.toml", MINIMAL_GATEWAY))
}

#[test]
fn optional_sections_take_their_defaults() {
    let dir = TempDir::new();
    dir.write("policy/p.toml", "");
    let config = load(&dir.write("maskgate.toml", MINIMAL_GATEWAY)).unwrap();
    let base = std::path::absolute(&dir.0).unwrap();
    assert_eq!(config.server.listen, "[::1]:8443".parse().unwrap());
    assert_eq!(
        config.server.cert,
        PathBuf::from("/etc/maskgate/server.pem")
    );
    assert_eq!(config.server.key, base.join("tls/server.key"));
    assert_eq!(config.server.client_ca, None);
    assert!(config.server.server_names.is_empty());
    assert_eq!(config.upstream.base_path, "");
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.limits.max_request_body_bytes, 10 * 1024 * 1024);
    assert_eq!(
        config.limits.request_timeout,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(config.log, LogConfig::default());
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.data_dir, base.join("data"));
    // an empty policy is valid: no role, no route, default deny
    assert!(config.policy.roles.is_empty());
    assert!(config.policy.match_route("/accounts").is_none());
}

#[test]
fn most_specific_route_wins() {
    let config = load_policy(
        r#"
[routes.rest]
path = "/accounts/*"
[routes.one]
path = "/accounts/{id}"
[routes.special]
path = "/accounts/special"
[routes.cards]
path = "/accounts/{id}/cards"
[routes.catch-all]
path = "/*"
[routes.root]
path = "/"
"#,
    )
    .unwrap();
    let p = &config.policy;
    let table = [
        ("/accounts/special", "special"),
        ("/accounts/7", "one"),
        ("/accounts/7/cards", "cards"),
        ("/accounts/7/notes", "rest"),
        ("/accounts/special/cards", "cards"),
        ("/accounts", "catch-all"),
        ("/other/x", "catch-all"),
        ("/", "root"),
    ];
    for (path, want) in table {
        let (i, r) = p.match_route(path).unwrap();
        assert_eq!(r.name, want, "{path}");
        assert_eq!(p.routes[i].name, want);
    }
    // indexes follow definition order
    assert_eq!(p.match_route("/accounts/7/x").unwrap().0, 0);
}

#[test]
fn principals_are_found_by_cert_name_and_key_hash() {
    let config = load_policy(
        r#"
[routes.accounts]
path = "/accounts"

[roles.reader]
routes = [{ route = "accounts", methods = ["GET"] }]
detectors = ["ssn", "card"]

[roles.writer]
routes = [{ route = "accounts", methods = ["POST", "OPTIONS"] }]
detectors = "none"

[[principals]]
name = "app@city.gov"
roles = ["reader", "writer", "reader"]
cert_names = ["app.city.internal", "app"]
api_key_sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
may_delegate = true
delegates = { names = ["clerk.one"], pattern = '[a-z]+@city\.gov', max_per_day = 20 }

[[principals]]
name = "gone"
roles = ["reader"]
revoked = true
"#,
    )
    .unwrap();
    let p = &config.policy;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        &mut hash,
    )
    .unwrap();
    let app = p.principal_by_key_hash(&hash).unwrap();
    assert_eq!(app.name, "app@city.gov");
    assert_eq!(app.roles, ["reader", "writer"]);
    assert!(app.may_delegate);
    let delegates = app.delegates.as_ref().unwrap();
    assert_eq!(delegates.max_per_day, 20);
    assert!(delegates.admits("clerk.one") && delegates.admits("ann@city.gov"));
    // The pattern matches whole names only.
    assert!(!delegates.admits("ann@city.gov.evil") && !delegates.admits("x ann@city.gov"));
    assert_eq!(
        p.principal_by_cert_name("app").unwrap().name,
        "app@city.gov"
    );
    assert_eq!(
        p.principal_by_cert_name("app.city.internal").unwrap().name,
        "app@city.gov"
    );
    assert!(p.principal("gone").unwrap().revoked);
    assert!(
        !format!("{app:?}").contains("9f86"),
        "Debug shows the key hash"
    );
    let reader = p.role("reader").unwrap();
    let writer = p.role("writer").unwrap();
    assert!(reader.read_only);
    assert!(!writer.read_only);
    assert!(reader.allows(0, &Method::HEAD));
    assert!(!writer.allows(0, &Method::GET));
    assert!(!writer.allows(0, &Method::HEAD));
    assert!(writer.allows(0, &Method::OPTIONS));
    assert!(!writer.allows(0, &Method::CONNECT));
    use crate::detect::DetectorKind;
    let set = reader.rules.detector_set();
    assert!(set.contains(DetectorKind::Ssn) && set.contains(DetectorKind::Card));
    assert!(!set.contains(DetectorKind::Ein));
    assert!(writer.rules.detector_set().is_empty());
}

#[test]
fn actions_and_redact_token_reach_the_rules() {
    let config = load_policy(
        r#"
redact_token = "<hidden>"

[records]
paths = ["/items/*"]

[routes.items]
path = "/items"

[roles.r]
routes = [{ route = "items", methods = ["GET"] }]
actions = { ssn = "redact", default = "remove", card_number = "decrypt", tin = "clear" }
"#,
    )
    .unwrap();
    let role = config.policy.role("r").unwrap();
    assert_eq!(role.actions.get(FieldClass::Ssn), Action::Redact);
    assert_eq!(role.actions.get(FieldClass::CardNumber), Action::Decrypt);
    assert_eq!(role.actions.get(FieldClass::Tin), Action::Clear);
    assert_eq!(role.actions.get(FieldClass::Dob), Action::Remove);
    assert_eq!(role.rules.redact_token(), "<hidden>");
    assert!(!role.rules.root_is_record());
    assert!(walk(&role.rules, &["items", "#"]).record);
    assert!(!role.is_allowlist());
}

#[test]
fn an_unreadable_gateway_file_is_one_error() {
    let dir = TempDir::new();
    let path = dir.0.join("missing.toml");
    let errors = load(&path).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!((errors.0[0].line, errors.0[0].col), (1, 1));
    assert_eq!(errors.0[0].file, path);
    assert!(errors.0[0].message.contains("cannot read"));
}

#[test]
fn errors_are_sorted_by_file_order_then_position() {
    let dir = TempDir::new();
    dir.write(
        "b.toml",
        "[roles.x]\nroutes = [{ route = \"nope\", methods = [\"GET\"] }]\n",
    );
    dir.write("a.toml", "[routes.r]\npath = \"r\"\n");
    let gateway = MINIMAL_GATEWAY
        .replace("[\"policy/p.toml\"]", "[\"b.toml\", \"a.toml\"]")
        .replace("[::1]:8443", "nowhere");
    let errors = load(&dir.write("maskgate.toml", &gateway)).unwrap_err();
    let files: Vec<String> = errors
        .0
        .iter()
        .map(|e| e.file.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["maskgate.toml", "b.toml", "a.toml"], "{errors}");
    assert_eq!(errors.to_string().lines().count(), 3);
    // `nope` is unknown; the broken route `r` is listed as defined
    assert!(errors.0[1].message.contains("unknown route `nope`"));
    assert!(errors.0[1].message.contains("use one of: r"));
}

#[test]
fn syntax_errors_in_the_gateway_file_stop_there() {
    let dir = TempDir::new();
    let errors = load(&dir.write("maskgate.toml", "[server\nlisten = 1\n")).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].line, 1);
    assert!(errors.0[0].message.starts_with("TOML syntax error"));
}

// ------------------------------------------------------------ unmask rules

#[test]
fn default_policy_unmask_rules_and_grants() {
    let config = good();
    let policy = &config.policy;
    let route = |name: &str| policy.routes.iter().position(|r| r.name == name).unwrap();
    let mut both = vec![route("accounts"), route("account")];
    both.sort_unstable();

    let coll = policy.role("collections").unwrap();
    let rule = coll.unmask.as_ref().expect("collections may unmask");
    assert_eq!(rule.classes, [FieldClass::Ssn]);
    assert_eq!(rule.routes, both);
    assert!(rule.covers_route(route("account")));
    assert!(!rule.covers_route(route("export-csv")));
    assert!(rule.covers_class(FieldClass::Ssn));
    assert!(!rule.covers_class(FieldClass::CardNumber));
    assert_eq!(rule.reason_min_len, 12);
    let pattern = rule.reason_pattern.as_ref().expect("a reason pattern");
    assert!(pattern.is_match(b"COLL-2026-00042 agency transfer"));
    assert!(pattern.is_match(b"COLL-2026-00042"));
    assert!(!pattern.is_match(b"COLL-2026-000421"));
    assert!(!pattern.is_match(b"see COLL-2026-00042"));
    assert!(!pattern.is_match(b"because I want to"));
    assert_eq!(
        (
            rule.max_records_per_request,
            rule.max_records_per_hour,
            rule.max_records_per_day
        ),
        (5, 50, 200)
    );
    assert!(!rule.grant_required);

    let it = policy.role("it-data-management").unwrap();
    let rule = it.unmask.as_ref().expect("IT may decrypt with a grant");
    assert_eq!(
        rule.classes,
        [FieldClass::CardNumber, FieldClass::CardExpiry]
    );
    assert_eq!(rule.routes, both);
    assert!(rule.grant_required);
    assert_eq!(rule.max_records_per_request, 1);
    assert!(rule.reason_pattern.is_none());
    for class in &rule.classes {
        assert!(is_encrypted_class(*class));
    }

    for (name, role) in &policy.roles {
        if name != "collections" && name != "it-data-management" {
            assert!(role.unmask.is_none(), "{name} may unmask");
        }
    }
    assert_eq!(
        policy.grants,
        GrantPolicy {
            max_validity_minutes: 240,
            max_uses: 10,
            approver_role: "pmo-approver".to_owned(),
            grantee_role: "it-data-management".to_owned(),
        }
    );
}

#[test]
fn unmask_defaults_and_inline_form() {
    let config = load_policy(
        r#"
[routes.a]
path = "/a"
[routes.b]
path = "/b"

[roles.r]
routes = [{ route = "b", methods = ["GET"] }, { route = "a", methods = ["GET"] }]
unmask = { classes = ["dob", "ssn"], routes = ["b", "a"] }

[roles.plain]
routes = [{ route = "a", methods = ["GET"] }]
"#,
    )
    .unwrap();
    let p = &config.policy;
    let rule = p.role("r").unwrap().unmask.as_ref().unwrap();
    // sorted: classes in FieldClass order, routes by index
    assert_eq!(rule.classes, [FieldClass::Ssn, FieldClass::Dob]);
    assert_eq!(rule.routes, [0, 1]);
    assert_eq!(rule.reason_min_len, 12);
    assert!(rule.reason_pattern.is_none());
    assert_eq!(rule.max_records_per_request, 1);
    assert_eq!(rule.max_records_per_hour, 20);
    assert_eq!(rule.max_records_per_day, 100);
    assert!(!rule.grant_required);
    assert!(p.role("plain").unwrap().unmask.is_none());
    // no [grants] table: the defaults, even without those roles defined
    assert_eq!(p.grants, GrantPolicy::default());
}

#[test]
fn reason_patterns_are_ascii_and_byte_oriented() {
    let config = load_policy(
        r#"
[routes.a]
path = "/a"
[roles.r]
routes = [{ route = "a", methods = ["GET"] }]
[roles.r.unmask]
classes = ["ssn"]
routes = ["a"]
reason_min_len = 0
reason_pattern = '\bTICKET-\d+\b.'
"#,
    )
    .unwrap();
    let rule = config.policy.role("r").unwrap().unmask.clone().unwrap();
    assert_eq!(rule.reason_min_len, 0);
    let re = rule.reason_pattern.unwrap();
    assert!(re.is_match(b"per TICKET-77 ok"));
    assert!(re.is_match("TICKET-7 é".as_bytes()));
    assert!(!re.is_match("TICKET-٣ é".as_bytes()), "\\d is ASCII only");
    assert!(!re.is_match(b"XTICKET-7 "));
}

#[test]
fn grants_table_roles_must_differ() {
    let errors = load_policy(
        r#"
[roles.approver]
routes = []

[grants]
approver_role = "approver"
grantee_role = "approver"
"#,
    )
    .unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    let e = &errors.0[0];
    assert_eq!((e.line, e.col), (7, 16), "{errors}");
    assert!(e.message.contains("two-person rule"), "{errors}");

    let config = load_policy(
        r#"
[roles.x]
routes = []
[roles.y]
routes = []
[grants]
max_validity_minutes = 30
max_uses = 1
approver_role = "x"
grantee_role = "y"
"#,
    )
    .unwrap();
    assert_eq!(
        config.policy.grants,
        GrantPolicy {
            max_validity_minutes: 30,
            max_uses: 1,
            approver_role: "x".to_owned(),
            grantee_role: "y".to_owned(),
        }
    );
}

#[test]
fn unmask_errors_in_a_broken_role_do_not_hide_others() {
    // A role whose unmask fails to deserialize is reported by the focus pass;
    // the next role's semantic errors are still found.
    let errors = load_policy(
        r#"
[routes.a]
path = "/a"
[roles.bad]
routes = [{ route = "a", methods = ["GET"] }]
unmask = { classes = "ssn", routes = ["a"] }
[roles.worse]
routes = [{ route = "a", methods = ["GET"] }]
unmask = { classes = ["ssn"], routes = ["a"], max_records_per_hour = -1 }
[roles.third]
routes = [{ route = "a", methods = ["GET"] }]
unmask = { classes = ["ssn"], routes = ["a"], max_records_per_request = 50 }
"#,
    )
    .unwrap_err();
    let lines: Vec<(usize, usize)> = errors.0.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(lines, [(6, 22), (9, 70), (12, 73)], "{errors}");
    assert!(errors.0[0].message.contains("wrong type"), "{errors}");
    assert!(
        errors.0[2].message.contains("max_records_per_request (50)"),
        "{errors}"
    );
}

#[test]
fn edge_keys_are_read_and_checked() {
    let dir = TempDir::new();
    dir.write("policy/p.toml", "");
    let text = MINIMAL_GATEWAY.replace(
        "key = \"tls/server.key\"\n",
        "key = \"tls/server.key\"\nclient_ca = \"ca.pem\"\nclient_crl = \"crl.pem\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n",
    ) + "\n[limits]\nmax_connections = 7\nmax_header_count = 20\nmax_header_bytes = 4096\nheader_timeout_secs = 3\nidle_timeout_secs = 30\nhandshake_timeout_secs = 4\nh2_max_concurrent_streams = 16\nh2_max_pending_reset_streams = 5\nh2_max_local_reset_streams = 6\n";
    let config = load(&dir.write("maskgate.toml", &text)).unwrap_or_else(|e| panic!("{e}"));
    let base = std::path::absolute(&dir.0).unwrap();
    assert_eq!(config.server.client_crl, Some(base.join("crl.pem")));
    let trusted = &config.server.trusted_proxies;
    assert_eq!(trusted.len(), 3);
    assert!(trusted[0].contains("10.200.3.4".parse().unwrap()));
    assert!(!trusted[0].contains("11.0.0.1".parse().unwrap()));
    assert!(trusted[1].contains("192.0.2.7".parse().unwrap()));
    assert!(!trusted[1].contains("192.0.2.8".parse().unwrap()));
    // an IPv4-mapped IPv6 peer is compared as IPv4
    assert!(trusted[0].contains("::ffff:10.1.2.3".parse().unwrap()));
    assert!(trusted[2].contains("2001:db8:1::9".parse().unwrap()));
    assert!(!trusted[2].contains("2001:db9::1".parse().unwrap()));
    let l = &config.limits;
    assert_eq!(l.max_connections, 7);
    assert_eq!(l.max_header_count, 20);
    assert_eq!(l.max_header_bytes, 4096);
    assert_eq!(l.header_timeout, std::time::Duration::from_secs(3));
    assert_eq!(l.idle_timeout, std::time::Duration::from_secs(30));
    assert_eq!(l.handshake_timeout, std::time::Duration::from_secs(4));
    assert_eq!(l.h2_max_concurrent_streams, 16);
    assert_eq!(l.h2_max_pending_reset_streams, 5);
    assert_eq!(l.h2_max_local_reset_streams, 6);
}

#[test]
fn edge_defaults_are_bounded() {
    let d = Limits::default();
    assert_eq!(d.max_connections, 1024);
    assert_eq!(d.max_header_count, 100);
    assert_eq!(d.max_header_bytes, 16 * 1024);
    assert_eq!(d.header_timeout, std::time::Duration::from_secs(10));
    assert_eq!(d.idle_timeout, std::time::Duration::from_secs(60));
    assert_eq!(d.h2_max_concurrent_streams, 100);
    assert_eq!(d.h2_max_pending_reset_streams, 20);
    // every default lies inside the range the loader accepts
    for (v, (min, max)) in [
        (d.max_connections as u64, Limits::CONNECTIONS),
        (d.max_header_count as u64, Limits::HEADER_COUNT),
        (d.max_header_bytes as u64, Limits::HEADER_BYTES),
        (d.header_timeout.as_secs(), Limits::TIMEOUT_SECS),
        (d.idle_timeout.as_secs(), Limits::TIMEOUT_SECS),
        (d.handshake_timeout.as_secs(), Limits::TIMEOUT_SECS),
        (u64::from(d.h2_max_concurrent_streams), Limits::H2_STREAMS),
        (d.h2_max_pending_reset_streams as u64, Limits::H2_RESETS),
        (d.h2_max_local_reset_streams as u64, Limits::H2_RESETS),
    ] {
        assert!((min..=max).contains(&v), "{v} not in {min}..={max}");
    }
}

#[test]
fn ip_networks_parse_strictly() {
    for bad in [
        "",
        "10.0.0.0/",
        "10.0.0.0/x",
        "10.0.0.0/+8",
        "10/8",
        "::1/129",
        "1.2.3.4/0008",
    ] {
        assert!(IpNet::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(IpNet::parse("10.0.0.1/8"), Err(IpNetError::HostBits));
    assert!(IpNet::parse("0.0.0.0/0")
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    assert!(!IpNet::parse("0.0.0.0/0")
        .unwrap()
        .contains("::1".parse().unwrap()));
    assert!(IpNet::parse("::/0")
        .unwrap()
        .contains("::1".parse().unwrap()));
}

/// Loads MINIMAL_GATEWAY plus `extra` with an empty policy.
fn load_with(extra: &str) -> Result<Config, ConfigErrors> {
    let dir = TempDir::new();
    dir.write("policy/p.toml", "");
    load(&dir.write("maskgate.toml", &format!("{MINIMAL_GATEWAY}\n{extra}")))
}

#[test]
fn state_postgres_takes_defaults_and_values() {
    let c = load_with("[state]\nbackend = \"postgres\"\nurl = \"postgresql://gw:s3cret@db.internal:5432/maskgate\"\n")
        .unwrap();
    assert_eq!(c.state.backend, StateBackend::Postgres);
    assert!(c.state.serve_masked_when_unavailable);
    let pg = c.state.postgres.clone().expect("postgres settings");
    assert_eq!(pg.pool_size, 8);
    assert_eq!(pg.connect_timeout, std::time::Duration::from_secs(2));
    assert_eq!(pg.statement_timeout, std::time::Duration::from_secs(2));
    assert_eq!(pg.ca, None);
    // The password never shows in Debug.
    let debug = format!("{pg:?} {c:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(
        debug.contains("postgresql://gw:***@db.internal:5432/maskgate"),
        "{debug}"
    );

    let dir = TempDir::new();
    dir.write("policy/p.toml", "");
    let c = load(&dir.write(
        "maskgate.toml",
        &format!(
            "{MINIMAL_GATEWAY}\n[state]\nbackend = \"postgres\"\nurl = \"host=db user=gw password=s3cret dbname=m\"\nca = \"db-ca.pem\"\npool_size = 3\nconnect_timeout_ms = 500\nstatement_timeout_ms = 750\non_unavailable = \"refuse\"\n"
        ),
    ))
    .unwrap();
    let pg = c.state.postgres.clone().unwrap();
    assert!(!c.state.serve_masked_when_unavailable);
    assert_eq!(pg.pool_size, 3);
    assert_eq!(pg.connect_timeout, std::time::Duration::from_millis(500));
    assert_eq!(pg.statement_timeout, std::time::Duration::from_millis(750));
    assert_eq!(
        pg.ca,
        Some(std::path::absolute(&dir.0).unwrap().join("db-ca.pem"))
    );
    assert_eq!(pg.redacted_url(), "host=db user=gw password=*** dbname=m");

    let local = load_with("[state]\non_unavailable = \"serve_masked\"\n").unwrap();
    assert_eq!(local.state.backend, StateBackend::Local);
    assert!(local.state.postgres.is_none());
}

#[test]
fn state_errors_name_the_line() {
    let err = |extra: &str| load_with(extra).unwrap_err().to_string();
    let e = err("[state]\nbackend = \"postgres\"\n");
    assert!(
        e.contains("maskgate.toml:") && e.contains("needs url"),
        "{e}"
    );
    let e = err("[state]\nbackend = \"postgres\"\nurl = \"postgresql://u:pw@h/d?sslmode=bogus\"\n");
    assert!(
        e.contains("not a valid PostgreSQL connection string"),
        "{e}"
    );
    assert!(!e.contains("pw@"), "the password is not repeated: {e}");
    let e = err("[state]\nbackend = \"postgres\"\nurl = \"postgresql://h/d\"\npool_size = 0\n");
    assert!(e.contains("state.pool_size must be 1 to 256"), "{e}");
    let e = err(
        "[state]\nbackend = \"postgres\"\nurl = \"postgresql://h/d\"\nstatement_timeout_ms = 1\n",
    );
    assert!(
        e.contains("state.statement_timeout_ms must be 10 to 600000"),
        "{e}"
    );
    let e = err("[state]\non_unavailable = \"maybe\"\n");
    assert!(e.contains("unknown state.on_unavailable `maybe`"), "{e}");
    let e = err("[state]\nbackend = \"local\"\nurl = \"postgresql://h/d\"\n");
    assert!(
        e.contains("state.url applies to backend = \"postgres\" only"),
        "{e}"
    );
    let e = err("[state]\nbackend = \"mysql\"\n");
    assert!(e.contains("unknown state backend `mysql`"), "{e}");
    // file:line:col
    let line = e.lines().next().unwrap_or("");
    let mut parts = line.split(':');
    assert!(
        parts.next().is_some_and(|f| f.ends_with("maskgate.toml")),
        "{line}"
    );
    assert!(
        parts.next().is_some_and(|l| l.parse::<u32>().is_ok()),
        "{line}"
    );
    assert!(
        parts.next().is_some_and(|c| c.parse::<u32>().is_ok()),
        "{line}"
    );
}

#[test]
fn connection_strings_are_redacted() {
    for (url, want) in [
        ("postgresql://u:pw@h:1/d", "postgresql://u:***@h:1/d"),
        ("postgres://u@h/d", "postgres://u@h/d"),
        (
            "postgresql://h/d?password=pw&sslmode=require",
            "postgresql://h/d?password=***&sslmode=require",
        ),
        (
            "postgresql://h/d?sslmode=require&password=pw",
            "postgresql://h/d?sslmode=require&password=***",
        ),
        ("host=h password=pw user=u", "host=h password=*** user=u"),
        ("postgresql://u:p@ss@h/d", "postgresql://u:***@h/d"),
    ] {
        assert_eq!(redact_url(url), want, "{url}");
    }
}

#[test]
fn default_policy_reads_field_names_by_their_words() {
    let config = good();
    let rules = &config.policy.role("customer-service").unwrap().rules;
    let word_class = |name: &str| {
        let m = rules.match_key(name.as_bytes(), rules.root_nodes());
        m.class.or(m.word_class)
    };
    use FieldClass::*;
    let named: &[(&str, FieldClass)] = &[
        ("primary_holder_ssn", Ssn),
        ("ssn_no", Ssn),
        ("SSN_NUM", Ssn),
        ("spouseSSN", Ssn),
        ("SOCIALSECURITYNUMBER", Ssn),
        ("Social Security No.", Ssn),
        ("soc_sec_nbr", Ssn),
        ("taxpayer_id_number", Tin),
        ("EmployerIdentificationNo", Tin),
        ("fein", Tin),
        ("dl_num", Dln),
        ("driversLicenceNo", Dln),
        ("Driver's License #", Dln),
        ("dlno", Dln),
        ("passport_no", Passport),
        ("PassportNumber", Passport),
        ("cc_num", CardNumber),
        ("creditCardNo", CardNumber),
        ("card_no", CardNumber),
        ("PAN", CardNumber),
        ("cc", CardNumber),
        ("cc_exp", CardExpiry),
        ("card_expiry_date", CardExpiry),
        ("expiryDate", CardExpiry),
        ("exp", CardExpiry),
        ("checking_acct_no", BankAccount),
        ("savings_account_number", BankAccount),
        ("direct_deposit_account", BankAccount),
        ("refund_account", BankAccount),
        ("ACH Account", BankAccount),
        ("iban", BankAccount),
        ("account_number", BankAccount),
        ("acct_no", BankAccount),
        ("number", BankAccount),
        ("aba_no", BankRouting),
        ("RoutingTransitNumber", BankRouting),
        ("rtn", BankRouting),
        ("direct_deposit_routing_number", BankRouting),
        ("date_of_birth", Dob),
        ("birthDate", Dob),
    ];
    for (name, class) in named {
        assert_eq!(word_class(name), Some(*class), "{name}");
    }
    for name in [
        "id",
        "account_id",
        "customer_id",
        "account_type",
        "card_type",
        "card_brand",
        "cardholder",
        "card_holder_name",
        "ssn_last4",
        "ssn_verified",
        "bank_name",
        "drivers_license_state",
        "phone_number",
        "company",
        "panel",
        "cc_email",
        "contract_expiration_date",
        "energy_savings",
        "status",
        "service_start",
        "notes",
        "pickup_day",
        "container_size",
    ] {
        assert_eq!(word_class(name), None, "{name}");
    }
    let bank = rules.match_key(b"bank", rules.root_nodes());
    assert_eq!(bank.word_class, None);
    assert_eq!(bank.container_class, Some(BankAccount));
    let accounts = rules.match_key(b"accounts", rules.root_nodes());
    assert_eq!(accounts.container_class, None);
}

#[test]
fn vocabulary_overlaps_are_reported_where_written() {
    let errors = load_policy(
        r#"
[vocabulary]
synonyms = { number = ["no"], north = ["no"] }

[classes.ssn]
names = ["ssn"]
words = ["pan"]

[classes.card_number]
words = ["pan"]

[identifiers]
names = ["SSN"]
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("spelling `no` is a synonym of both"),
        "{errors}"
    );
    assert!(
        errors.contains("phrase `pan` is given to both ssn and card_number"),
        "{errors}"
    );
    assert!(
        errors.contains("identifier `SSN` is also a field name of class ssn"),
        "{errors}"
    );
    // Each names its file and line.
    assert!(errors.contains("p.toml:3:"), "{errors}");
    assert!(errors.contains("p.toml:10:"), "{errors}");
    assert!(errors.contains("p.toml:13:"), "{errors}");
}

#[test]
fn client_cert_headers_are_checked_names() {
    let dir = TempDir::new();
    dir.write("policy/p.toml", "");
    let with = |section: &str| {
        let text = MINIMAL_GATEWAY.replace(
            "url = \"https://db.internal\"\n",
            &format!(
                "url = \"https://db.internal\"\n\n[upstream.client_cert_headers]\n{section}\n"
            ),
        );
        load(&dir.write("maskgate.toml", &text))
    };
    let config = with("verify = \"X-Client-Verify\"\nserial = \"X-Client-Serial\"").unwrap();
    let names = &config.upstream.client_cert_headers;
    assert_eq!(names.verify.as_ref().unwrap(), "x-client-verify");
    assert_eq!(names.serial.as_ref().unwrap(), "x-client-serial");
    assert!(names.subject.is_none());
    for (section, says) in [
        ("verify = \"bad name\"", "not a valid header name"),
        ("subject = \"X-Maskgate-Role\"", "already sets or removes"),
        ("subject = \"X-Forwarded-For\"", "already sets or removes"),
        ("serial = \"X_Client_Serial\"", "already sets or removes"),
        ("verify = \"X-A\"\nserial = \"x-a\"", "used twice"),
        ("fingerprint = \"X-Fp\"", "fingerprint"),
    ] {
        let errors = with(section).unwrap_err();
        assert!(
            errors.0.iter().any(|e| e.message.contains(says)),
            "{section}: {errors}"
        );
    }
}
