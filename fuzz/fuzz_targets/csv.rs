//! CSV rewriter: no panic, chunk-split invariance, well-formed output,
//! poisoned after an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maskgate::rewrite::csv::CsvRewriter;
use maskgate_fuzz::{drive, drop_specs, empty_spec, untouched, DropMode, Input};

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let mode = DropMode::of(input.extra);
    let (spec, plain) = drop_specs(input.variant, mode);
    let body = input.body;
    let whole = drive(&mut CsvRewriter::new(spec.clone()), &[body]);
    let split = drive(&mut CsvRewriter::new(spec), &input.chunks());
    assert_eq!(whole, split, "output depends on chunking");
    if mode == DropMode::KeepAll {
        let unfiltered = drive(&mut CsvRewriter::new(plain), &[body]);
        assert_eq!(
            whole, unfiltered,
            "a filter that drops nothing changed the result"
        );
    }

    if let Ok((out, counts)) = &whole {
        assert!(std::str::from_utf8(out).is_ok(), "output is not UTF-8");
        // Columns are removed from the header uncounted; with one record or
        // more, every removal is counted.
        if untouched(counts) && counts.records > 0 {
            assert_eq!(out.as_slice(), body, "nothing acted on, yet output differs");
        }
        // The output is CSV with consistent records: a no-op policy passes it unchanged.
        let again = drive(&mut CsvRewriter::new(empty_spec()), &[out]);
        assert_eq!(again.map(|(o, _)| o).as_deref(), Ok(out.as_slice()));
    }
});
