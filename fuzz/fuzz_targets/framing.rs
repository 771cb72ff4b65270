//! HTTP/1.x framing scanner: no panic on any bytes, the verdict (heads
//! accepted, first violation) does not depend on how the connection's bytes
//! are split, and every accepted head has a token method and a target
//! without whitespace or control bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maskgate::proxy::framing::{Fed, Scanner};
use maskgate_fuzz::Input;

fn run(chunks: &[&[u8]]) -> Fed {
    let mut scanner = Scanner::new(16 * 1024, 100);
    let mut all = Fed::default();
    for chunk in chunks {
        let fed = scanner.feed(chunk);
        all.heads.extend(fed.heads);
        if all.violation.is_none() {
            all.violation = fed.violation;
        }
    }
    all
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let whole = run(&[input.body]);
    let split = run(&input.chunks());
    assert_eq!(whole, split, "verdict depends on chunking");
    for head in &whole.heads {
        assert!(!head.method.is_empty());
        assert!(head
            .method
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)));
        assert!(!head.target.is_empty());
        assert!(head.target.bytes().all(|b| b.is_ascii_graphic()));
    }
});
