//! Streaming keeps memory flat: a 200 MB body rewrites in a few MB.

use std::process::Command;

#[test]
fn a_200_mb_body_rewrites_in_well_under_64_mb() {
    let out = Command::new(env!("CARGO_BIN_EXE_maskgate"))
        .args(["bench", "stream", "--size", "200000000", "--detectors"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let peak = v["peak_rss_kib"].as_u64().unwrap();
    assert!(v["input_bytes"].as_u64().unwrap() >= 200_000_000);
    assert!(v["records"].as_u64().unwrap() > 100_000);
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB while streaming 200 MB"
    );
}
