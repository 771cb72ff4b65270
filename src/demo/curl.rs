//! Ready-to-paste curl lines, one per demo role, using the demo client
//! certificates.

use std::path::Path;

/// The account every example line fetches.
pub const EXAMPLE_ACCOUNT: &str = "ACC-100006";

/// The path the example line for `role` requests: for the roles that see
/// no customer data, the gateway's metrics (security auditor) or the
/// decrypt grants (PMO approver); else one account.
pub fn example_path(role: &str) -> String {
    match role {
        "security-auditor" => "/_maskgate/metrics".to_string(),
        "pmo-approver" => "/_maskgate/grants".to_string(),
        _ => format!("/accounts/{EXAMPLE_ACCOUNT}"),
    }
}

/// One curl line per role, e.g.
/// `curl --cacert certs/ca.pem --cert certs/billing.pem --key certs/billing.key https://127.0.0.1:8443/accounts/ACC-100006`.
///
/// Paths are used as given (relative stays relative); arguments that need
/// it are single-quoted for a POSIX shell.
pub fn curl_lines(certs_dir: &Path, base_url: &str, roles: &[&str]) -> Vec<String> {
    roles
        .iter()
        .map(|role| curl_line(certs_dir, base_url, role, &example_path(role)))
        .collect()
}

/// A curl line for `role` requesting `path` (which should start with `/`)
/// under `base_url`.
pub fn curl_line(certs_dir: &Path, base_url: &str, role: &str, path: &str) -> String {
    let file = |name: String| shell_quote(&certs_dir.join(name).to_string_lossy());
    let url = format!("{}{}", base_url.trim_end_matches('/'), path);
    format!(
        "curl --cacert {} --cert {} --key {} {}",
        file("ca.pem".to_string()),
        file(format!("{role}.pem")),
        file(format!("{role}.key")),
        shell_quote(&url)
    )
}

fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@%+=,[]".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_role() {
        let lines = curl_lines(
            Path::new("certs"),
            "https://127.0.0.1:8443/",
            &["billing", "security-auditor", "pmo-approver"],
        );
        assert_eq!(
            lines,
            [
                "curl --cacert certs/ca.pem --cert certs/billing.pem --key certs/billing.key https://127.0.0.1:8443/accounts/ACC-100006",
                "curl --cacert certs/ca.pem --cert certs/security-auditor.pem --key certs/security-auditor.key https://127.0.0.1:8443/_maskgate/metrics",
                "curl --cacert certs/ca.pem --cert certs/pmo-approver.pem --key certs/pmo-approver.key https://127.0.0.1:8443/_maskgate/grants",
            ]
        );
        assert!(curl_lines(Path::new("certs"), "https://x", &[]).is_empty());
    }

    #[test]
    fn quotes_awkward_paths() {
        let line = curl_line(
            Path::new("/tmp/my demo/it's"),
            "https://[::1]:8443",
            "billing",
            "/accounts?limit=5&offset=0",
        );
        assert_eq!(
            line,
            "curl --cacert '/tmp/my demo/it'\\''s/ca.pem' --cert '/tmp/my demo/it'\\''s/billing.pem' \
             --key '/tmp/my demo/it'\\''s/billing.key' 'https://[::1]:8443/accounts?limit=5&offset=0'"
        );
    }
}
