//! The demo pieces of maskgate: a synthetic customer database API to put the
//! gateway in front of, demo certificates, a generated gateway config and
//! ready-to-paste curl lines.
//!
//! Nothing here depends on the rest of maskgate, so the demo can be tested
//! alone. All customer data is synthetic: SSNs use areas 700–728 (valid in
//! format, not issued since 1963), card numbers use public test BINs, phone
//! numbers are the fictional 555-01xx range and e-mail addresses use the
//! reserved `example.com` / `example.org` domains.

pub mod certs;
pub mod config;
pub mod curl;
pub mod data;
pub mod run;
pub mod store;
pub mod upstream;

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;

    /// A fresh, unique directory under the system temp dir.
    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "maskgate-demo-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
