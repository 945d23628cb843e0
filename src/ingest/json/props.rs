//! The JSON reader against the reference (opentelemetry-proto's serde
//! mapping, then the mapper): on generated messages as the reference
//! writes them, the same batch; on those bodies bent (values swapped for
//! other JSON values, keys renamed, bytes mutated), the reader refuses
//! exactly what the reference refuses, and where both accept, maps alike.
//!
//! The streaming reader (`stream.rs`) is held to the model: it accepts
//! nothing the model refuses, maps what it accepts alike, and takes the
//! bodies exporters write.
//!
//! The reader parses with `read_json` (sonic-rs, serde_json after a
//! failure), the reference with serde_json, so the tests also hold
//! sonic-rs to accepting what serde_json accepts.
//!
//! `PROPTEST_CASES=100000 cargo test --lib json` for a longer run.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::prelude::*;

use super::*;
use crate::ingest::decode::{from_json, read_json};
use crate::ingest::walk::props::{cases, mapper, mutate, mutation, request, seen};

fn check(mapper: &Mapper, body: &[u8]) -> Result<(), TestCaseError> {
    let read = read_json::<Request>(body);
    // The streaming reader accepts nothing the model refuses, and maps
    // what it accepts alike.
    if let Some(streamed) = stream::traces(mapper, body) {
        let model = read.as_ref().map_err(|e| {
            TestCaseError::fail(format!(
                "streamed, yet the model refuses it: {e}; body: {}",
                String::from_utf8_lossy(body)
            ))
        })?;
        prop_assert_eq!(seen(&streamed), seen(&traces(mapper, model)));
    }
    // JSON is UTF-8 (RFC 8259, 8.1): a body that is not is refused, bad
    // bytes anywhere, where opentelemetry-proto's serde lets some pass
    // inside the fields it skips.
    if std::str::from_utf8(body).is_err() {
        prop_assert!(
            read.is_err(),
            "not UTF-8, yet read: {}",
            String::from_utf8_lossy(body)
        );
        return Ok(());
    }
    let reference = from_json::<ExportTraceServiceRequest>(body);
    match (&reference, &read) {
        (Ok(req), Ok(model)) => {
            prop_assert_eq!(seen(&traces(mapper, model)), seen(&mapper.traces(req)));
        }
        (Err(_), Err(_)) => {}
        _ => prop_assert!(
            false,
            "reference: {:?}, reader: {:?}, body: {}",
            reference.as_ref().err().map(ToString::to_string),
            read.as_ref().err().map(ToString::to_string),
            String::from_utf8_lossy(body)
        ),
    }
    Ok(())
}

/// JSON values a sender might put anywhere.
const VALUES: &[&str] = &[
    "null",
    "\"\"",
    "\"x\"",
    "\"r\\u0031\"",
    "1",
    "-1",
    "0",
    "1.5",
    "1e3",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "\"503\"",
    "\"+7\"",
    "\" 7\"",
    "\"0x0102030405060708\"",
    "\"0X0102030405060708\"",
    "\"0102030405060708090a0b0c0d0e0f10\"",
    "\"0102030405060708090A0B0C0D0E0F1011\"",
    "\"010\"",
    "\"zz\"",
    "\"AQID\"",
    "\"AQI=\"",
    "\"AQ\"",
    "true",
    "[]",
    "{}",
    "[1]",
    "{\"values\":[]}",
    "{\"values\":[{\"stringValue\":\"a\"}]}",
    "{\"values\":[{\"key\":\"a\"}]}",
    "{\"stringValue\":\"a\",\"unknown\":[[1]]}",
    "{\"intValue\":\"12\",\"doubleValue\":2}",
    "{\"bytesValue\":\"AQID\"}",
    "{\"kvlistValue\":{}}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

/// Keys as they are, or as a sender might misspell them.
const KEYS: &[(&str, &str)] = &[
    ("\"traceId\"", "\"trace_id\""),
    ("\"spanId\"", "\"spanID\""),
    ("\"kind\"", "\"Kind\""),
    ("\"key\"", "\"k\""),
    ("\"values\"", "\"value\""),
    ("\"stringValue\"", "\"string_value\""),
    ("\"intValue\"", "\"stringValue\""),
    ("\"startTimeUnixNano\"", "\"endTimeUnixNano\""),
    ("\"resource\"", "\"scope\""),
];

#[derive(Debug, Clone)]
enum Bend {
    /// The value after the n-th colon replaced.
    Value(usize, usize),
    /// The n-th occurrence of a key renamed.
    Key(usize, usize),
    /// A field added to the n-th object.
    Field(usize, usize),
}

fn bend() -> impl Strategy<Value = Bend> {
    prop_oneof![
        (any::<usize>(), 0..VALUES.len()).prop_map(|(n, v)| Bend::Value(n, v)),
        (any::<usize>(), 0..KEYS.len()).prop_map(|(n, k)| Bend::Key(n, k)),
        (any::<usize>(), 0..VALUES.len()).prop_map(|(n, v)| Bend::Field(n, v)),
    ]
}

/// The end of the JSON value starting at `i` (strings, numbers, literals,
/// nested arrays and objects).
fn value_end(s: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    let mut in_str = false;
    while i < s.len() {
        let c = s[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
                if depth == 0 {
                    return i + 1;
                }
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'[' | b'{' => depth += 1,
                b']' | b'}' if depth == 0 => return i,
                b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                b',' if depth == 0 => return i,
                _ => {}
            }
        }
        i += 1;
    }
    i
}

fn apply(body: &str, bends: &[Bend]) -> String {
    let mut s = body.to_string();
    for b in bends {
        match b {
            Bend::Value(n, v) => {
                let colons: Vec<usize> = s.match_indices(':').map(|(i, _)| i).collect();
                if colons.is_empty() {
                    continue;
                }
                let at = colons[n % colons.len()] + 1;
                let end = value_end(s.as_bytes(), at);
                s.replace_range(at..end, VALUES[*v]);
            }
            Bend::Key(n, k) => {
                let (from, to) = KEYS[*k];
                let hits: Vec<usize> = s.match_indices(from).map(|(i, _)| i).collect();
                if hits.is_empty() {
                    continue;
                }
                let at = hits[n % hits.len()];
                s.replace_range(at..at + from.len(), to);
            }
            Bend::Field(n, v) => {
                let opens: Vec<usize> = s.match_indices('{').map(|(i, _)| i).collect();
                if opens.is_empty() {
                    continue;
                }
                let at = opens[n % opens.len()] + 1;
                let (key, _) = KEYS[n % KEYS.len()];
                let empty = s.as_bytes().get(at) == Some(&b'}');
                let field = format!("{key}:{}{}", VALUES[*v], if empty { "" } else { "," });
                s.insert_str(at, &field);
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn reader_maps_valid_bodies_as_the_reference_does(req in request()) {
        let mapper = mapper();
        let body = serde_json::to_vec(&req).unwrap();
        let model = read_json::<Request>(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let reference = from_json::<ExportTraceServiceRequest>(&body).unwrap();
        prop_assert_eq!(seen(&traces(&mapper, &model)), seen(&mapper.traces(&reference)));
        // Bodies as exporters write them are streamed, unless a string the
        // mapper keeps has an escape.
        let streamed = stream::traces(&mapper, &body);
        prop_assert!(streamed.is_some() || body.contains(&b'\\'), "not streamed");
        if let Some(streamed) = streamed {
            prop_assert_eq!(seen(&streamed), seen(&traces(&mapper, &model)));
        }
    }

    #[test]
    fn reader_refuses_what_the_reference_refuses(
        req in request(),
        bends in prop::collection::vec(bend(), 1..4),
    ) {
        let body = serde_json::to_string(&req).unwrap();
        check(&mapper(), apply(&body, &bends).as_bytes())?;
    }

    #[test]
    fn reader_agrees_on_mutated_bytes(
        req in request(),
        mutations in prop::collection::vec(mutation(), 1..3),
    ) {
        let body = mutate(serde_json::to_vec(&req).unwrap(), &mutations);
        check(&mapper(), &body)?;
    }
}

#[test]
fn ids_numbers_and_values_as_otlp_json_writes_them() {
    let body = br#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"deployment.id","value":{"stringValue":"r\u0031"}},
        {"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"spans":[{
        "traceId":"0x0102030405060708090A0B0C0D0E0F10","spanId":"0102030405060708",
        "kind":2,"startTimeUnixNano":"1000","endTimeUnixNano":5000000,
        "name":"GET /x","attributes":[{"key":"http.response.status_code","value":{"intValue":"503"}}],
        "unknownField":{"a":[1,2]}}]}]}]}"#;
    check(&mapper(), body).unwrap();
    let model = read_json::<Request>(body).unwrap();
    let batch = traces(&mapper(), &model);
    assert_eq!(batch.groups[0].release.deployment_id, "r1");
    assert_eq!(batch.groups[0].sample.errors, 1);
    let e = read_json::<Request>(
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("invalid OTLP JSON: resourceSpans[0].scopeSpans[0].spans[0].traceId"),
        "{e}"
    );
}
