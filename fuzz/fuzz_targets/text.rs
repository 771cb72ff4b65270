//! Text rewriter: no panic, chunk-split invariance, and with `last4` for
//! SSNs no valid `ddd-dd-dddd` SSN the detectors find survives in the output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maskgate::class::{Action, FieldClass};
use maskgate::detect::{DetectorKind, DetectorSet};
use maskgate::rewrite::text::TextRewriter;
use maskgate_fuzz::{detectors, drive, is_valid_dashed_ssn, spec, untouched, Input};

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let mut spec = spec(input.variant);
    spec.actions.set(FieldClass::Ssn, Action::Last4);
    let body = input.body;
    let whole = drive(&mut TextRewriter::new(spec.clone()), &[body]);
    let split = drive(&mut TextRewriter::new(spec), &input.chunks());
    assert_eq!(whole, split, "output depends on chunking");

    let Ok((out, counts)) = &whole else {
        return;
    };
    assert!(std::str::from_utf8(out).is_ok(), "output is not UTF-8");
    if untouched(counts) {
        assert_eq!(out.as_slice(), body, "nothing acted on, yet output differs");
    }
    assert_eq!(
        out.iter().filter(|&&b| b == b'\n').count(),
        body.iter().filter(|&&b| b == b'\n').count(),
        "line count changed"
    );
    // The rewriter scans line by line; so does the check.
    let det = detectors();
    let mut findings = Vec::new();
    for line in out.split(|&b| b == b'\n') {
        findings.clear();
        det.scan(line, DetectorSet::ALL, &mut findings);
        for f in &findings {
            let t = &line[f.start..f.end];
            assert!(
                !(f.kind == DetectorKind::Ssn && is_valid_dashed_ssn(t)),
                "SSN {:?} survived last4",
                String::from_utf8_lossy(t)
            );
        }
    }
});
