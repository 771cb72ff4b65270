//! Detectors::scan: findings in bounds, sorted, non-overlapping, and a
//! subset of detectors finds exactly the full set's findings of its kinds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maskgate::detect::DetectorSet;
use maskgate_fuzz::{check_findings, detectors, set_from_bits};

fuzz_target!(|data: &[u8]| {
    // Byte 0 picks a subset of detectors; the rest is the text.
    let Some((&mask, text)) = data.split_first() else {
        return;
    };
    let det = detectors();
    let mut all = Vec::new();
    det.scan(text, DetectorSet::ALL, &mut all);
    check_findings(text, &all);

    // `scan` appends: a second scan after the first leaves the first's findings.
    let mut again = all.clone();
    det.scan(text, DetectorSet::ALL, &mut again);
    assert_eq!(again.len(), 2 * all.len());
    assert_eq!(&again[all.len()..], &all[..]);

    let set = set_from_bits(mask);
    let mut some = Vec::new();
    det.scan(text, set, &mut some);
    check_findings(text, &some);
    let expected: Vec<_> = all
        .iter()
        .copied()
        .filter(|f| set.contains(f.kind))
        .collect();
    assert_eq!(
        some, expected,
        "findings of a subset differ from the full set's"
    );
});
