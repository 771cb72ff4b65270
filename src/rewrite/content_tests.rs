// Compiled only under #[cfg(test)] (see the parent module).
use std::io::{Read, Write};
use std::sync::Arc;

use super::*;
use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::Detectors;
use crate::rewrite::{rewrite_all, Limits, RewriteError, RewriteSpec, RulesBuilder};

use BodyKind::{Csv, Json, Ndjson, Passthrough, Text};
use UnsupportedContentType::{Charset, CsvWithoutHeader, Malformed, Missing, Type};

fn pass() -> Vec<String> {
    vec![
        "image/png".to_owned(),
        "Application/PDF".to_owned(),
        "video/*".to_owned(),
    ]
}

#[test]
fn content_types() {
    let table: &[(Option<&str>, Result<BodyKind, UnsupportedContentType>)] = &[
        (Some("application/json"), Ok(Json)),
        (Some("Application/JSON"), Ok(Json)),
        (Some("application/json; charset=utf-8"), Ok(Json)),
        (Some("application/json;charset=\"UTF-8\""), Ok(Json)),
        (
            Some("application/json ; charset=us-ascii ; foo=bar"),
            Ok(Json),
        ),
        (Some("  application/json  "), Ok(Json)),
        (Some("application/json;"), Ok(Json)),
        (Some("application/problem+json"), Ok(Json)),
        (
            Some("application/vnd.city.accounts.v2+json; q=\"a;b\""),
            Ok(Json),
        ),
        (Some("text/json"), Ok(Json)),
        (Some("application/x-ndjson"), Ok(Ndjson)),
        (Some("application/ndjson"), Ok(Ndjson)),
        (Some("application/jsonl"), Ok(Ndjson)),
        (Some("application/x-jsonlines"), Ok(Ndjson)),
        (Some("text/csv"), Ok(Csv)),
        (Some("text/csv; header=present; charset=utf-8"), Ok(Csv)),
        (Some("TEXT/CSV"), Ok(Csv)),
        (Some("text/plain"), Ok(Text)),
        (Some("text/plain; charset=UTF-8"), Ok(Text)),
        (Some("image/png"), Ok(Passthrough)),
        (Some("application/pdf; name=\"bill.pdf\""), Ok(Passthrough)),
        (Some("video/mp4"), Ok(Passthrough)),
        (None, Err(Missing)),
        (Some(""), Err(Malformed)),
        (Some("json"), Err(Malformed)),
        (Some("application/"), Err(Malformed)),
        (Some("/json"), Err(Malformed)),
        (Some("application/json charset=utf-8"), Err(Malformed)),
        (Some("application/json; charset"), Err(Malformed)),
        (Some("application/json; charset=\"utf-8"), Err(Malformed)),
        (Some("application/json; charset=utf-16"), Err(Charset)),
        (Some("text/plain; charset=iso-8859-1"), Err(Charset)),
        (
            Some("text/csv; charset=utf-8; charset=latin1"),
            Err(Charset),
        ),
        (Some("text/csv; header=absent"), Err(CsvWithoutHeader)),
        (Some("application/json-seq"), Err(Type)),
        (Some("application/+json"), Err(Type)),
        (Some("text/html"), Err(Type)),
        (Some("text/tab-separated-values"), Ok(Csv)),
        (Some("application/csv"), Ok(Csv)),
        (Some("application/vnd.api+json"), Ok(Json)),
        (Some("application/xml"), Err(Type)),
        (Some("application/octet-stream"), Err(Type)),
        (Some("image/jpeg"), Err(Type)),
        (Some("text/x+json"), Err(Type)),
        (Some("multipart/form-data; boundary=x"), Err(Type)),
    ];
    for (ct, want) in table {
        assert_eq!(body_kind(*ct, &pass()), *want, "{ct:?}");
    }
    // Passthrough charsets are not judged, and no list means nothing passes.
    assert_eq!(
        body_kind(Some("image/png; charset=latin1"), &pass()),
        Ok(Passthrough)
    );
    assert_eq!(body_kind(Some("image/png"), &[]), Err(Type));
    // Listing a rewritable type does not turn rewriting off.
    let listed = vec!["application/json".to_owned(), "text/*".to_owned()];
    assert_eq!(body_kind(Some("application/json"), &listed), Ok(Json));
    assert_eq!(body_kind(Some("text/plain"), &listed), Ok(Text));
    assert_eq!(body_kind(Some("text/html"), &listed), Ok(Passthrough));
    // A wildcard for every type is not a thing.
    assert_eq!(body_kind(Some("text/html"), &["*/*".to_owned()]), Err(Type));
}

fn spec() -> RewriteSpec {
    let mut b = RulesBuilder::new();
    b.class_name("ssn", FieldClass::Ssn).unwrap();
    RewriteSpec {
        rules: Arc::new(b.build()),
        actions: ActionTable::uniform(Action::Last4),
        detectors: Arc::new(Detectors::new()),
        limits: Limits::default(),
        opener: None,
        drop_accounts: None,
    }
}

fn rewrite(kind: BodyKind, codings: &[Coding], body: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut rw = rewriter_for(kind, spec(), codings, DecodeLimits::default()).unwrap();
    rewrite_all(rw.as_mut(), body)
}

#[test]
fn rewriters_for_each_kind() {
    assert!(rewriter_for(Passthrough, spec(), &[], DecodeLimits::default()).is_none());
    assert_eq!(
        rewrite(Json, &[], br#"{"ssn":"123-45-6789"}"#).unwrap(),
        br#"{"ssn":"***-**-6789"}"#
    );
    // The gateway allows an empty JSON body.
    assert_eq!(rewrite(Json, &[], b"").unwrap(), b"");
    assert_eq!(
        rewrite(Ndjson, &[], b"{\"ssn\":\"123-45-6789\"}\n{\"ssn\":1}\n").unwrap(),
        b"{\"ssn\":\"***-**-6789\"}\n{\"ssn\":\"*\"}\n"
    );
    assert_eq!(
        rewrite(Csv, &[], b"SSN\n123-45-6789\n").unwrap(),
        b"SSN\n***-**-6789\n"
    );
    assert_eq!(
        rewrite(Text, &[], b"no detectors here 123-45-6789\n").unwrap(),
        b"no detectors here 123-45-6789\n"
    );
}

#[test]
fn codings_are_undone_last_first_and_redone() {
    // "gzip, br": gzip was applied first, then br.
    let body = b"id,ssn\n1,123-45-6789\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body).unwrap();
    let gz = gz.finish().unwrap();
    let mut both = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    both.write_all(&gz).unwrap();
    let both = both.into_inner();

    let codings = parse_content_encoding("gzip, br").unwrap();
    let out = rewrite(Csv, &codings, &both).unwrap();
    let mut unbr = Vec::new();
    brotli::Decompressor::new(&out[..], 4096)
        .read_to_end(&mut unbr)
        .unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&unbr[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, b"id,ssn\n1,***-**-6789\n");
    // The wrong order is refused, not passed on.
    let wrong = parse_content_encoding("br, gzip").unwrap();
    assert!(matches!(
        rewrite(Csv, &wrong, &both),
        Err(RewriteError::Encoding { .. })
    ));
}
