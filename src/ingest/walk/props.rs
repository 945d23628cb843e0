//! The walker against prost, the reference: on generated messages (every
//! field the schema has, attributes the mapper reads and nested values) the
//! walker's batch is the mapper's on prost's decoding; on those messages'
//! bytes mutated (bytes flipped, inserted, deleted, truncated, spliced,
//! unknown fields and groups added) the walker refuses exactly what prost
//! refuses, and where both accept, maps the same.
//!
//! `PROPTEST_CASES=100000 cargo test --lib walk` for a longer run.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::config::Config;
use crate::model::{ReleaseRef, Sample};
use crate::otlp_kit::kv;

/// What a batch says, comparable.
#[derive(Debug, PartialEq)]
pub(crate) struct Seen<'a> {
    items: u64,
    unattributed: u64,
    invalid: u64,
    first_error: Option<String>,
    groups: Vec<(ReleaseRef<'a>, u64, Sample)>,
}

pub(crate) fn seen<'a>(b: &Batch<'a>) -> Seen<'a> {
    assert_eq!((b.full, b.full_reason.as_ref()), (0, None));
    assert!(b.ignored_metrics.is_empty());
    Seen {
        items: b.items,
        unattributed: b.unattributed,
        invalid: b.invalid,
        first_error: b.first_error.clone(),
        groups: b
            .groups
            .iter()
            .map(|g| (g.release, g.items, g.sample.clone()))
            .collect(),
    }
}

pub(crate) fn mapper() -> Mapper {
    let mut config = Config::default();
    // Short enough that generated times cross it.
    config.limits.max_span_duration = std::time::Duration::from_secs(60);
    Mapper::new(&config)
}

/// The walker's answer on `bytes` against prost's decoding mapped.
fn check(mapper: &Mapper, bytes: &[u8]) -> Result<(), TestCaseError> {
    let reference = ExportTraceServiceRequest::decode(bytes);
    let walked = traces(mapper, bytes);
    match (&reference, &walked) {
        (Ok(req), Ok(batch)) => {
            prop_assert_eq!(seen(batch), seen(&mapper.traces(req)));
        }
        (Err(_), Err(_)) => {}
        _ => prop_assert!(
            false,
            "prost: {:?}, walker: {:?}, bytes: {:?}",
            reference.as_ref().err(),
            walked.as_ref().err(),
            bytes
        ),
    }
    Ok(())
}

const KEYS: &[&str] = &[
    "deployment.id",
    "service.name",
    "git.sha",
    "vcs.ref.head.revision",
    "deployment.environment.name",
    "deployment.environment",
    "service.env",
    "deployment.role",
    "http.route",
    "http.request.method",
    "http.method",
    "rpc.service",
    "rpc.method",
    "http.response.status_code",
    "http.status_code",
    "rpc.grpc.status_code",
    "rpc.response.status_code",
    "error.type",
    "exception.type",
    "",
    "other",
    "clé",
];

const STRINGS: &[&str] = &[
    "",
    "r1",
    "r2",
    "checkout",
    "prod",
    "canary",
    "Baseline",
    "/api/v1/checkout",
    "GET",
    "503",
    " 502 ",
    "200",
    "UNAVAILABLE",
    "INTERNAL",
    "timeout",
    "exception",
    "é",
];

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(STRINGS).prop_map(str::to_string),
        1 => Just("x".repeat(257)),
        1 => "[a-z0-9 ]{0,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => string().prop_map(|s| Some(Value::StringValue(s))),
        3 => prop_oneof![Just(503i64), Just(200), Just(14), Just(5), Just(-1), any::<i64>()]
            .prop_map(|i| Some(Value::IntValue(i))),
        2 => prop_oneof![Just(503.0f64), Just(2.5), Just(f64::NAN), Just(-0.0), any::<f64>()]
            .prop_map(|d| Some(Value::DoubleValue(d))),
        1 => any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        1 => prop::collection::vec(any::<u8>(), 0..4).prop_map(|b| Some(Value::BytesValue(b))),
        1 => any::<i32>().prop_map(|i| Some(Value::StringValueStrindex(i))),
        1 => Just(None),
    ]
}

fn value() -> impl Strategy<Value = Option<Value>> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|vs| {
                Some(Value::ArrayValue(ArrayValue {
                    values: vs.into_iter().map(|value| AnyValue { value }).collect(),
                }))
            }),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..3).prop_map(|kvs| {
                Some(Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(k, value)| KeyValue {
                            key: k.into(),
                            value: Some(AnyValue { value }),
                            key_strindex: 0,
                        })
                        .collect(),
                }))
            }),
        ]
    })
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    (
        prop::sample::select(KEYS),
        value(),
        any::<bool>(),
        prop_oneof![4 => Just(0i32), 1 => any::<i32>()],
    )
        .prop_map(|(key, value, present, key_strindex)| KeyValue {
            key: key.into(),
            value: present.then_some(AnyValue { value }),
            key_strindex,
        })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(key_value(), 0..8)
}

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), len),
        1 => Just(vec![0; len]),
        1 => prop::collection::vec(any::<u8>(), 0..len + 2),
    ]
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        1_700_000_000_000_000_000u64..1_700_000_000_000_000_000 + 100_000_000_000,
    ]
}

fn event() -> impl Strategy<Value = span::Event> {
    (
        prop_oneof![Just("exception"), Just("log"), Just("")],
        attributes(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(name, attributes, time, dropped)| span::Event {
            time_unix_nano: time,
            name: name.into(),
            attributes,
            dropped_attributes_count: dropped,
        })
}

fn link() -> impl Strategy<Value = span::Link> {
    (id(16), id(8), string(), attributes(), any::<u32>()).prop_map(
        |(trace_id, span_id, trace_state, attributes, flags)| span::Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            dropped_attributes_count: flags / 3,
            flags,
        },
    )
}

fn a_span() -> impl Strategy<Value = Span> {
    (
        (id(16), id(8), id(8), string(), string()),
        (
            prop_oneof![6 => Just(2i32), 2 => 0i32..7, 1 => any::<i32>()],
            time(),
            0u64..120_000_000_000,
            prop::option::of(prop_oneof![0i32..3, any::<i32>()]),
            any::<u32>(),
        ),
        attributes(),
        prop::collection::vec(event(), 0..3),
        prop::collection::vec(link(), 0..2),
        prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
    )
        .prop_map(
            |(
                (trace_id, span_id, parent, trace_state, name),
                (kind, start, lasts, code, flags),
                attributes,
                events,
                links,
                backwards,
            )| {
                let end = match backwards {
                    None => start.saturating_add(lasts),
                    Some(true) => start.saturating_sub(lasts),
                    Some(false) => u64::MAX - lasts,
                };
                Span {
                    trace_id,
                    span_id,
                    trace_state,
                    parent_span_id: parent,
                    flags,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    dropped_attributes_count: flags % 7,
                    events,
                    dropped_events_count: flags % 5,
                    links,
                    dropped_links_count: flags % 3,
                    status: code.map(|code| Status {
                        message: "m".into(),
                        code,
                    }),
                }
            },
        )
}

pub(crate) fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = (
        prop::option::of((string(), string(), attributes())),
        prop::collection::vec(a_span(), 0..5),
        string(),
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope: scope.map(|(name, version, attributes)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count: 1,
            }),
            spans,
            schema_url,
        });
    let resource = (
        prop::option::of((attributes(), any::<bool>())),
        prop::collection::vec(scope, 0..3),
        string(),
    )
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
            resource: resource.map(|(attributes, entity)| Resource {
                attributes,
                dropped_attributes_count: 2,
                entity_refs: if entity {
                    vec![EntityRef {
                        schema_url: "s".into(),
                        r#type: "service".into(),
                        id_keys: vec!["service.name".into()],
                        description_keys: vec![],
                    }]
                } else {
                    vec![]
                },
            }),
            scope_spans,
            schema_url,
        });
    prop::collection::vec(resource, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// Ways to break or bend an encoding.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// A copy of bytes[from..from+len] inserted at `at`.
    Repeat {
        from: usize,
        len: usize,
        at: usize,
    },
    Splice(usize, Vec<u8>),
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0usize..40, any::<usize>()).prop_map(|(from, len, at)| Mutation::Repeat {
            from,
            len,
            at
        }),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..12),
                // Fields and groups a newer schema or a hostile sender adds.
                Just(vec![0x98, 0x06, 0x01]),
                Just(vec![0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06]),
                Just(vec![0xa3, 0x06, 0xa4, 0x07]),
                Just(vec![0x0c]),
                Just(vec![0x7a, 0x02, 0xc3, 0x28]),
                Just(vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
                Just(vec![
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02
                ]),
            ]
        )
            .prop_map(|(i, b)| Mutation::Splice(i, b)),
    ]
}

pub(crate) fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len();
        let at = |i: usize| if n == 0 { 0 } else { i % (n + 1) };
        match m {
            Mutation::Flip(i, b) if n > 0 => bytes[i % n] ^= b | 1,
            Mutation::Insert(i, b) => bytes.insert(at(*i), *b),
            Mutation::Delete(i) if n > 0 => {
                bytes.remove(i % n);
            }
            Mutation::Truncate(i) => bytes.truncate(at(*i)),
            Mutation::Repeat { from, len, at: to } if n > 0 => {
                let from = from % n;
                let part = bytes[from..(from + len).min(n)].to_vec();
                let to = at(*to);
                bytes.splice(to..to, part);
            }
            Mutation::Splice(i, b) => {
                let i = at(*i);
                bytes.splice(i..i, b.iter().copied());
            }
            _ => {}
        }
    }
    bytes
}

pub(crate) fn cases() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig::with_cases(default.cases.max(2000))
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn walker_maps_valid_messages_as_prost_and_the_mapper_do(req in request()) {
        let mapper = mapper();
        let bytes = req.encode_to_vec();
        let batch = traces(&mapper, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(seen(&batch), seen(&mapper.traces(&req)));
    }

    /// The straight-through read of an SDK-laid-out attribute is a
    /// shortcut, never a second opinion: where it answers, the general
    /// reader agrees, on attributes as encoded and mutated.
    #[test]
    fn common_attributes_read_as_the_general_reader_reads_them(
        kv in key_value(),
        mutations in prop::collection::vec(mutation(), 0..2),
        depth in prop_oneof![Just(0u32), Just(1), Just(RECURSION_LIMIT)],
    ) {
        let bytes = mutate(kv.encode_to_vec(), &mutations);
        if let Some((key, value)) = common_key_value(&bytes, depth) {
            let (k, v) = any_key_value(&bytes, depth).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(key, k);
            prop_assert_eq!(format!("{:?}", value.val()), format!("{:?}", v.val()));
        }
    }

    #[test]
    fn walker_refuses_what_prost_refuses(
        req in request(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let bytes = mutate(req.encode_to_vec(), &mutations);
        check(&mapper(), &bytes)?;
    }

    #[test]
    fn walker_on_arbitrary_bytes_agrees_with_prost(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check(&mapper(), &bytes)?;
    }
}

// The corners, one by one.

fn one_span() -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        kind: 2,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 5_000_000,
        name: "GET /x".into(),
        ..Default::default()
    }
}

fn with(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

fn ok(bytes: &[u8]) {
    assert!(ExportTraceServiceRequest::decode(bytes).is_ok());
    check(&mapper(), bytes).unwrap();
}

fn refused(bytes: &[u8]) -> String {
    assert!(ExportTraceServiceRequest::decode(bytes).is_err());
    check(&mapper(), bytes).unwrap();
    traces(&mapper(), bytes).unwrap_err().to_string()
}

/// A length-delimited field.
fn ld(tag: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

#[test]
fn the_resource_may_follow_its_spans_and_come_in_parts() {
    let req = with(
        vec![kv("service.name", "checkout"), kv("deployment.id", "r1")],
        vec![one_span()],
    );
    let rs = &req.resource_spans[0];
    let resource = |attrs: Vec<KeyValue>| {
        Resource {
            attributes: attrs,
            ..Default::default()
        }
        .encode_to_vec()
    };
    // scope_spans first, then the resource in two parts (merged by prost).
    let mut body = ld(2, &rs.scope_spans[0].encode_to_vec());
    body.extend(ld(1, &resource(vec![kv("service.name", "checkout")])));
    body.extend(ld(1, &resource(vec![kv("deployment.id", "r1")])));
    let bytes = ld(1, &body);
    ok(&bytes);
    let mapper = mapper();
    let batch = traces(&mapper, &bytes).unwrap();
    assert_eq!(batch.groups.len(), 1);
    assert_eq!(batch.groups[0].release.service, "checkout");
    assert_eq!(batch.groups[0].release.deployment_id, "r1");
}

#[test]
fn repeated_singular_fields_merge_as_prost_merges_them() {
    let mut span = one_span();
    span.status = Some(Status {
        code: 2,
        message: String::new(),
    });
    let req = with(vec![kv("deployment.id", "r1")], vec![span]);
    let mut span_bytes = req.resource_spans[0].scope_spans[0].spans[0].encode_to_vec();
    // A second status without a code keeps the first's code (ERROR).
    span_bytes.extend(ld(15, &ld(2, b"later")));
    // A second value of the first attribute: the later string wins.
    span_bytes.extend(ld(
        9,
        &[
            ld(1, b"http.route"),
            ld(2, &ld(1, b"/a")),
            ld(2, &ld(1, b"/b")),
        ]
        .concat(),
    ));
    // A later trace id replaces the first.
    span_bytes.extend(ld(1, &[7; 16]));
    let scope = ld(2, &span_bytes);
    let rs = [
        ld(
            1,
            &req.resource_spans[0]
                .resource
                .as_ref()
                .unwrap()
                .encode_to_vec(),
        ),
        ld(2, &scope),
    ]
    .concat();
    let bytes = ld(1, &rs);
    ok(&bytes);
    let mapper = mapper();
    let batch = traces(&mapper, &bytes).unwrap();
    let sample = &batch.groups[0].sample;
    assert_eq!(sample.errors, 1);
    assert_eq!(&*sample.endpoints[0].name, "/b");
    assert_eq!(sample.exemplars[0].trace_id, [7; 16]);
}

#[test]
fn unknown_fields_and_groups_are_skipped() {
    let req = with(vec![kv("deployment.id", "r1")], vec![one_span()]);
    let mut bytes = req.encode_to_vec();
    // Field 99 as varint, fixed64, fixed32, bytes and a group with a field in it.
    bytes.extend([0x98, 0x06, 0x05]);
    bytes.extend([0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
    bytes.extend([0x9d, 0x06, 1, 2, 3, 4]);
    bytes.extend([0x9a, 0x06, 0x02, 0xff, 0xff]);
    bytes.extend([0x9b, 0x06, 0x08, 0x01, 0x9c, 0x06]);
    ok(&bytes);
    assert_eq!(
        traces(&mapper(), &bytes).unwrap().groups[0].sample.requests,
        1
    );
    // A group ended by another field's end tag, or an end tag alone.
    let mut bad = req.encode_to_vec();
    bad.extend([0x9b, 0x06, 0xa4, 0x06]);
    assert!(refused(&bad).contains("end group"));
    let mut bad = req.encode_to_vec();
    bad.extend([0x9c, 0x06]);
    refused(&bad);
}

#[test]
fn bad_wire_data_is_refused_and_said_where() {
    let req = with(vec![kv("deployment.id", "r1")], vec![one_span()]);
    let bytes = req.encode_to_vec();
    for cut in 1..bytes.len() {
        refused(&bytes[..cut]);
    }
    // Invalid UTF-8 in a string nothing reads (the span's trace_state).
    let mut span = one_span().encode_to_vec();
    span.extend(ld(3, &[0xc3, 0x28]));
    let bytes = ld(1, &ld(2, &ld(2, &span)));
    let e = refused(&bytes);
    assert_eq!(
        e,
        "resource_spans[0].scope_spans[0].spans[0].trace_state: invalid string value: data is not UTF-8 encoded"
    );
    // A string where the kind's varint belongs.
    let mut span = one_span().encode_to_vec();
    span.extend(ld(6, b"x"));
    let e = refused(&ld(1, &ld(2, &ld(2, &span))));
    assert!(
        e.ends_with("kind: invalid wire type: 2 (expected 0)"),
        "{e}"
    );
    // Varints: 11 bytes, and a tenth byte over 1.
    refused(&[
        0x98, 0x06, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
    ]);
    refused(&[
        0x98, 0x06, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02,
    ]);
    ok(&[
        0x98, 0x06, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ]);
    // Tag 0, wire types 6 and 7, a key over 32 bits.
    refused(&[0x00]);
    refused(&[0x0e]);
    refused(&[0x0f]);
    refused(&[0x80, 0x80, 0x80, 0x80, 0x10]);
}

/// An attribute whose value nests `depth` array values deep.
fn nested(depth: usize) -> KeyValue {
    let mut value = AnyValue {
        value: Some(Value::IntValue(1)),
    };
    for _ in 0..depth {
        value = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    KeyValue {
        key: "deep".into(),
        value: Some(value),
        key_strindex: 0,
    }
}

#[test]
fn nesting_is_refused_where_prost_refuses_it() {
    // Span attributes start at depth 5 (request, resource spans, scope
    // spans, span, key value, any value), so prost's limit falls in here.
    let mut limit = None;
    for depth in 40..60 {
        let mut span = one_span();
        span.attributes.push(nested(depth));
        let bytes = with(vec![kv("deployment.id", "r1")], vec![span]).encode_to_vec();
        check(&mapper(), &bytes).unwrap();
        if ExportTraceServiceRequest::decode(&bytes[..]).is_err() && limit.is_none() {
            limit = Some(depth);
        }
    }
    assert!(limit.is_some(), "prost's recursion limit was not reached");
    // An unknown field (or a group) in the deepest value: prost's skip
    // checks the limit too, one level before a message would.
    for inner in [
        vec![0x98u8, 0x06, 0x01],
        vec![0x9b, 0x06, 0x9c, 0x06],
        vec![0x08, 0x01],
    ] {
        for depth in 40..50 {
            let mut value = inner.clone();
            for _ in 0..depth {
                value = ld(5, &ld(1, &value));
            }
            let mut span = one_span().encode_to_vec();
            span.extend(ld(9, &[ld(1, b"deep"), ld(2, &value)].concat()));
            check(&mapper(), &ld(1, &ld(2, &ld(2, &span)))).unwrap();
        }
    }
}

#[test]
fn the_shortcut_takes_what_sdks_write_and_leaves_the_rest() {
    let kv = |key: &str, value: Value| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    };
    let common = |kv: KeyValue| {
        common_key_value(&kv.encode_to_vec(), 1)
            .map(|(k, v)| (k.to_vec(), v.val().str().map(str::to_string)))
    };
    let route = kv("http.route", Value::StringValue("/orders/{id}".into()));
    assert_eq!(
        common(route.clone()),
        Some((b"http.route".to_vec(), Some("/orders/{id}".into())))
    );
    assert!(common(kv("http.response.status_code", Value::IntValue(503))).is_some());
    assert!(common(kv("x", Value::DoubleValue(0.5))).is_some());
    // Not ASCII, another kind of value, another field, or no room to nest.
    assert_eq!(common(kv("clé", Value::StringValue("v".into()))), None);
    assert_eq!(common(kv("k", Value::StringValue("é".into()))), None);
    assert_eq!(common(kv("k", Value::BoolValue(true))), None);
    assert_eq!(
        common(KeyValue {
            key_strindex: 3,
            ..route.clone()
        }),
        None
    );
    assert_eq!(common_key_value(&route.encode_to_vec(), 0).map(drop), None);
}
