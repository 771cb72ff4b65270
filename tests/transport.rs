//! Issue #14, families 7–10 through the real gateway: response headers,
//! every status, media types and compression. (The leak corpus in
//! `leaks.rs` runs the same families at scale; these tests pin each rule.)

mod common;

use std::io::{Read, Write};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;

use common::{scripted_upstream, temp_dir, Env, Reply};

const SSN: &str = "123-45-6789";
const CARD: &str = "4111111111111111";

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body)))
        .expect("response")
}

/// A gateway whose upstream answers every request with `status`, `headers`
/// and `body`.
async fn gateway(
    tag: &str,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Env {
    let (upstream, _) = scripted_upstream(move |_req| {
        let headers = headers.clone();
        let body = body.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            response(status, &h, &body)
        }
    })
    .await;
    Env::start(temp_dir(tag), upstream, |_| {}).await
}

fn header_values(r: &Reply, name: &str) -> Vec<String> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn no_clear_value(r: &Reply, values: &[&str]) {
    let text = r.text();
    for v in values {
        let digits: String = v.chars().filter(char::is_ascii_digit).collect();
        assert!(!text.contains(v), "body holds {v}: {text}");
        assert!(!text.contains(&digits), "body holds {digits}: {text}");
        for (name, hv) in &r.headers {
            let hv = String::from_utf8_lossy(hv.as_bytes());
            let decoded = percent_encoding::percent_decode_str(&hv).decode_utf8_lossy();
            assert!(
                !decoded.contains(v) && !decoded.contains(&digits),
                "header {name} holds {v}: {hv}"
            );
        }
    }
}

// ---- family 7: response headers -----------------------------------------

fn red_headers() -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".to_owned()),
        ("x-customer-ssn", SSN.to_owned()),
        (
            "location",
            format!("/accounts/1000234?ssn={}", SSN.replace('-', "%2D")),
        ),
        ("set-cookie", format!("last_card={CARD}; Path=/; HttpOnly")),
        ("set-cookie", "theme=dark; Path=/".to_owned()),
        (
            "content-disposition",
            format!("attachment; filename=\"statement {SSN}.pdf\""),
        ),
        (
            "link",
            "</accounts?bank_account=12345678>; rel=\"next\"".to_owned(),
        ),
        ("x-note", "checking acct 12345678 on file".to_owned()),
        (
            "x-benign",
            "order ORD-2026-004512, call (650) 555-0123".to_owned(),
        ),
    ]
}

#[tokio::test]
async fn response_headers_are_masked_on_every_kind_of_response() {
    let env = gateway("hdr", 200, red_headers(), br#"{"id":"1000234"}"#.to_vec()).await;
    let cs = env.client(Some("customer-service"), false);
    for h2 in [false, true] {
        let cs = if h2 {
            env.client(Some("customer-service"), true)
        } else {
            env.client(Some("customer-service"), false)
        };
        let r = cs.get("/accounts/1000234").await;
        assert_eq!(r.status, 200);
        no_clear_value(&r, &[SSN, CARD, "12345678"]);
        assert_eq!(header_values(&r, "x-customer-ssn"), ["***-**-6789"]);
        assert_eq!(
            header_values(&r, "location"),
            ["/accounts/1000234?ssn=***%2D**%2D6789"]
        );
        assert_eq!(
            header_values(&r, "set-cookie"),
            [
                "last_card=************1111; Path=/; HttpOnly",
                "theme=dark; Path=/"
            ]
        );
        assert_eq!(
            header_values(&r, "content-disposition"),
            ["attachment; filename=\"statement ***-**-6789.pdf\""]
        );
        assert_eq!(
            header_values(&r, "link"),
            ["</accounts?bank_account=****5678>; rel=\"next\""]
        );
        assert_eq!(
            header_values(&r, "x-note"),
            ["checking acct ****5678 on file"]
        );
        // A header with only look-alikes is passed as it came.
        assert_eq!(
            header_values(&r, "x-benign"),
            ["order ORD-2026-004512, call (650) 555-0123"]
        );
    }
    // HEAD has no body, but its headers are checked all the same.
    let r = cs
        .send(http::Method::HEAD, "/accounts/1000234", &[], b"")
        .await
        .expect("HEAD");
    assert_eq!(r.status, 200);
    no_clear_value(&r, &[SSN, CARD, "12345678"]);
    assert_eq!(header_values(&r, "x-customer-ssn"), ["***-**-6789"]);
    env.stop().await;
}

#[tokio::test]
async fn headers_of_a_bodiless_status_are_masked() {
    let env = gateway("hdr204", 204, red_headers(), Vec::new()).await;
    let r = env
        .client(Some("customer-service"), false)
        .get("/accounts/1000234")
        .await;
    assert_eq!(r.status, 204);
    no_clear_value(&r, &[SSN, CARD, "12345678"]);
    assert_eq!(header_values(&r, "x-customer-ssn"), ["***-**-6789"]);
    env.stop().await;
}

#[tokio::test]
async fn header_values_the_allowlist_role_may_not_see_are_dropped() {
    // non-utilities removes red-flag values: a header holding one goes.
    let env = gateway(
        "hdrallow",
        200,
        red_headers(),
        br#"{"id":"1000234"}"#.to_vec(),
    )
    .await;
    let r = env
        .client(Some("non-utilities"), false)
        .get("/accounts/1000234")
        .await;
    assert_eq!(r.status, 200);
    no_clear_value(&r, &[SSN, CARD, "12345678"]);
    assert!(header_values(&r, "x-customer-ssn").is_empty());
    assert_eq!(header_values(&r, "set-cookie"), ["theme=dark; Path=/"]);
    assert_eq!(
        header_values(&r, "x-benign"),
        ["order ORD-2026-004512, call (650) 555-0123"]
    );
    env.stop().await;
}

// ---- family 8: every status -------------------------------------------------

#[tokio::test]
async fn bodies_of_every_status_are_rewritten() {
    for status in [
        201u16, 203, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503,
    ] {
        let body = format!(
            r#"{{"error":{{"message":"no account for ssn {SSN}","path":"/accounts?card={CARD}"}},"ssn":"{SSN}"}}"#
        );
        let env = gateway(
            &format!("status{status}"),
            status,
            vec![("content-type", "application/problem+json".to_owned())],
            body.into_bytes(),
        )
        .await;
        let r = env
            .client(Some("customer-service"), false)
            .get("/accounts/1000234")
            .await;
        assert_eq!(r.status.as_u16(), status, "{}", r.text());
        no_clear_value(&r, &[SSN, CARD]);
        let v = r.json();
        assert_eq!(v["ssn"], "***-**-6789", "status {status}");
        assert_eq!(
            v["error"]["path"], "/accounts?card=************1111",
            "status {status}"
        );
        env.stop().await;
    }
}

#[tokio::test]
async fn a_plain_text_error_that_echoes_the_query_is_masked() {
    let env = gateway(
        "status-text",
        404,
        vec![("content-type", "text/plain".to_owned())],
        format!("404 Not Found: GET /accounts?ssn={SSN}\n").into_bytes(),
    )
    .await;
    let r = env
        .client(Some("customer-service"), false)
        .get("/accounts/1000234")
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "404 Not Found: GET /accounts?ssn=***-**-6789\n");
    env.stop().await;
}

// ---- family 10: compression -------------------------------------------------

fn gzip(level: u32, b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

fn zlib(level: u32, b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(b).expect("zlib");
    e.finish().expect("zlib")
}

fn raw_deflate(level: u32, b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(b).expect("deflate");
    e.finish().expect("deflate")
}

fn brotli(quality: u32, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = brotli::CompressorWriter::new(&mut out, 4096, quality, 22);
        e.write_all(b).expect("brotli");
    }
    out
}

fn decode(coding: &str, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" | "x-gzip" => {
            flate2::read::MultiGzDecoder::new(b)
                .read_to_end(&mut out)
                .expect("gunzip");
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(b)
                .read_to_end(&mut out)
                .expect("inflate");
        }
        "br" => {
            brotli::Decompressor::new(b, 4096)
                .read_to_end(&mut out)
                .expect("unbrotli");
        }
        _ => out.extend_from_slice(b),
    }
    out
}

#[tokio::test]
async fn every_compression_is_undone_for_named_fields_and_detectors_alike() {
    let plain = format!(
        r#"{{"id":"1000234","drivers_license":{{"number":"D1234567","state":"CA"}},"bank":{{"routing_number":"021000021","account_number":"12345678"}},"notes":"caller gave SSN {SSN}, card 4111 1111 1111 1111"}}"#
    );
    let mut cases: Vec<(String, &str, Vec<u8>)> = Vec::new();
    for level in 0..=9 {
        cases.push((
            format!("gzip-{level}"),
            "gzip",
            gzip(level, plain.as_bytes()),
        ));
    }
    cases.push(("x-gzip".into(), "x-gzip", gzip(6, plain.as_bytes())));
    for level in [0, 1, 6, 9] {
        cases.push((
            format!("zlib-{level}"),
            "deflate",
            zlib(level, plain.as_bytes()),
        ));
        cases.push((
            format!("raw-deflate-{level}"),
            "deflate",
            raw_deflate(level, plain.as_bytes()),
        ));
    }
    for quality in [0, 1, 5, 9, 11] {
        cases.push((
            format!("br-{quality}"),
            "br",
            brotli(quality, plain.as_bytes()),
        ));
    }
    for (label, coding, wire) in cases {
        let env = gateway(
            &format!("enc-{label}"),
            200,
            vec![
                ("content-type", "application/json".to_owned()),
                ("content-encoding", coding.to_owned()),
            ],
            wire,
        )
        .await;
        let r = env
            .client(Some("customer-service"), false)
            .get_with(
                "/accounts/1000234",
                &[("accept-encoding", "gzip, deflate, br")],
            )
            .await;
        assert_eq!(r.status, 200, "{label}: {}", r.text());
        let got_coding = r
            .headers
            .get("content-encoding")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let body = decode(&got_coding, &r.body);
        let v: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{label}: not JSON ({e})"));
        assert_eq!(v["drivers_license"]["number"], "****4567", "{label}");
        assert_eq!(v["bank"]["account_number"], "****5678", "{label}");
        assert_eq!(v["bank"]["routing_number"], "*****0021", "{label}");
        assert_eq!(
            v["notes"], "caller gave SSN ***-**-6789, card **** **** **** 1111",
            "{label}"
        );
        env.stop().await;
    }
}

// ---- family 9: media types --------------------------------------------------

#[tokio::test]
async fn mislabelled_and_unusual_media_types_are_read_for_what_they_are() {
    let json = "{\n  \"id\": \"1000234\",\n  \"drivers_license\": \"D1234567\",\n  \"ssn\": \"123-45-6789\"\n}\n";
    let json_masked = "{\n  \"id\": \"1000234\",\n  \"drivers_license\": \"****4567\",\n  \"ssn\": \"***-**-6789\"\n}\n";
    let csv_semicolon =
        "\u{feff}id;Social Security Number;Drivers License\r\n1000234;123-45-6789;D1234567\r\n";
    let csv_semicolon_masked =
        "\u{feff}id;Social Security Number;Drivers License\r\n1000234;***-**-6789;****4567\r\n";
    let tsv = "id\tssn\tdrivers_license\n1000234\t123-45-6789\tD1234567\n";
    let tsv_masked = "id\tssn\tdrivers_license\n1000234\t***-**-6789\t****4567\n";
    let cases: [(&str, &str, &str); 9] = [
        ("application/vnd.api+json", json, json_masked),
        ("application/problem+json", json, json_masked),
        ("application/hal+json; charset=utf-8", json, json_masked),
        ("application/x-ndjson", json, json_masked),
        ("text/plain", json, json_masked),
        (
            "text/plain; charset=utf-8",
            csv_semicolon,
            csv_semicolon_masked,
        ),
        ("text/csv", csv_semicolon, csv_semicolon_masked),
        ("text/tab-separated-values", tsv, tsv_masked),
        ("application/csv", tsv, tsv_masked),
    ];
    for (i, (content_type, body, masked)) in cases.into_iter().enumerate() {
        let env = gateway(
            &format!("media{i}"),
            200,
            vec![("content-type", content_type.to_owned())],
            body.as_bytes().to_vec(),
        )
        .await;
        let r = env
            .client(Some("customer-service"), false)
            .get("/accounts/1000234")
            .await;
        assert_eq!(r.status, 200, "{content_type}: {}", r.text());
        assert_eq!(r.text(), masked, "{content_type}");
        env.stop().await;
    }
}
