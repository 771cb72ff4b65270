//! NDJSON rewriter: the JSON target's checks, for newline-separated values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maskgate::rewrite::{JsonRewriter, Limits};
use maskgate_fuzz::{
    drive, drop_specs, empty_spec, json_depth, ndjson_strict, ndjson_valid, untouched, withheld,
    DropMode, Input,
};

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let mode = DropMode::of(input.extra);
    let (spec, plain) = drop_specs(input.variant, mode);
    let body = input.body;
    let whole = drive(&mut JsonRewriter::ndjson(spec.clone()), &[body]);
    let split = drive(&mut JsonRewriter::ndjson(spec), &input.chunks());
    assert_eq!(whole, split, "output depends on chunking");
    if mode == DropMode::KeepAll {
        let unfiltered = drive(&mut JsonRewriter::ndjson(plain), &[body]);
        assert_eq!(
            whole, unfiltered,
            "a filter that drops nothing changed the result"
        );
    }

    let max_depth = Limits::default().max_depth;
    let valid = ndjson_valid(body) && json_depth(body) <= max_depth;
    match &whole {
        Err(e) => assert!(
            !valid || withheld(mode, &whole),
            "valid NDJSON rejected: {e:?}"
        ),
        Ok((out, counts)) => {
            assert!(valid, "invalid NDJSON accepted");
            assert!(ndjson_valid(out), "output is not NDJSON");
            if ndjson_strict(body) {
                assert!(ndjson_strict(out), "output does not parse with serde_json");
            }
            if untouched(counts) {
                assert_eq!(out.as_slice(), body, "nothing acted on, yet output differs");
            }
            let again = drive(&mut JsonRewriter::ndjson(empty_spec()), &[out]);
            assert_eq!(again.map(|(o, _)| o).as_deref(), Ok(out.as_slice()));
        }
    }
});
