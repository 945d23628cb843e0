//! Simulated traffic as OTLP: one `ExportTraceServiceRequest` per second of
//! a scenario, with both cohorts' SERVER spans (for replay tests, benches
//! and the load generator).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};

use super::{Rng, Scenario};
use crate::model::NANOS_PER_SEC;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn resource(id: &str, sha: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", "checkout"),
            kv("deployment.environment.name", "prod"),
            kv("deployment.id", id),
            kv("git.sha", sha),
            kv("host.name", "pod-1"),
            kv("telemetry.sdk.language", "rust"),
        ],
        ..Default::default()
    }
}

/// Spans of one cohort for one second starting at `t`.
fn spans(rng: &mut Rng, t: u64, rps: f64, error: f64, median_ms: f64, sigma: f64) -> Vec<Span> {
    let n = rng.poisson(rps);
    (0..n)
        .map(|_| one_span(rng, t, error, median_ms, sigma))
        .collect()
}

fn one_span(rng: &mut Rng, t: u64, error: f64, median_ms: f64, sigma: f64) -> Span {
    let start = t + rng.below(NANOS_PER_SEC);
    let dur = (rng.lognormal(median_ms, sigma) * 1e6) as u64;
    let failed = rng.bernoulli(error);
    Span {
        trace_id: rng.next_u64().to_be_bytes().repeat(2),
        span_id: (rng.next_u64() | 1).to_be_bytes().to_vec(),
        name: "POST /checkout".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur,
        attributes: vec![
            kv("http.request.method", "POST"),
            kv("http.route", "/checkout"),
            KeyValue {
                key: "http.response.status_code".into(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(if failed { 503 } else { 200 })),
                }),
                ..Default::default()
            },
        ],
        status: failed.then(|| Status {
            code: StatusCode::Error as i32,
            message: "upstream unavailable".into(),
        }),
        ..Default::default()
    }
}

/// A request as an instrumented HTTP fleet exports it: `spans` SERVER
/// spans spread over `releases` deployments (a resource each), about 8
/// resource and 9 span attributes, 2% errors — ~360 bytes a span.
pub fn fleet_request(
    rng: &mut Rng,
    spans: usize,
    releases: usize,
    start: u64,
) -> ExportTraceServiceRequest {
    let per = spans.div_ceil(releases.max(1));
    let resource_spans = (0..releases.max(1))
        .map(|r| {
            let id = format!("checkout-{:07x}", 0x1a2b3c4 + r);
            let mut res = resource(&id, &id[9..]);
            res.attributes
                .push(kv("k8s.pod.name", &format!("checkout-7d9f8b-{r:05}")));
            res.attributes.push(kv("service.version", "2.14.1"));
            ResourceSpans {
                resource: Some(res),
                scope_spans: vec![ScopeSpans {
                    spans: (0..per)
                        .map(|_| {
                            let t = start + rng.below(NANOS_PER_SEC);
                            let dur = (rng.lognormal(50.0, 0.5) * 1e6) as u64;
                            let failed = rng.bernoulli(0.02);
                            let code = if failed { 503 } else { 200 };
                            Span {
                                trace_id: rng.next_u64().to_be_bytes().repeat(2),
                                span_id: (rng.next_u64() | 1).to_be_bytes().to_vec(),
                                parent_span_id: rng.next_u64().to_be_bytes().to_vec(),
                                name: "POST /api/v1/checkout".into(),
                                kind: 2,
                                start_time_unix_nano: t,
                                end_time_unix_nano: t + dur,
                                attributes: vec![
                                    kv("http.request.method", "POST"),
                                    kv("http.route", "/api/v1/checkout"),
                                    kv("url.scheme", "https"),
                                    kv("url.path", "/api/v1/checkout"),
                                    kv("server.address", "checkout.prod.svc"),
                                    kv("user_agent.original", "okhttp/4.12.0"),
                                    kv("network.protocol.version", "1.1"),
                                    kv("client.address", "10.2.3.4"),
                                    KeyValue {
                                        key: "http.response.status_code".into(),
                                        value: Some(AnyValue {
                                            value: Some(Value::IntValue(code)),
                                        }),
                                        ..Default::default()
                                    },
                                ],
                                status: failed.then(|| Status {
                                    code: StatusCode::Error as i32,
                                    message: String::new(),
                                }),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// `n` SERVER spans of one deployment of `service` ending around `t`,
/// a `error` share failed, latencies log-normal around `median_ms`.
pub fn release_spans(
    rng: &mut Rng,
    service: &str,
    id: &str,
    n: u64,
    error: f64,
    median_ms: f64,
    t: u64,
) -> ResourceSpans {
    let mut res = resource(id, id);
    res.attributes[0] = kv("service.name", service);
    let spans = (0..n)
        .map(|_| one_span(rng, t, error, median_ms, 0.5))
        .collect();
    ResourceSpans {
        resource: Some(res),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The scenario's traffic, one request per simulated second, from `start`.
pub fn requests(s: &Scenario, seed: u64, start: u64) -> Vec<ExportTraceServiceRequest> {
    let mut rng = Rng::new(seed);
    let canary_rps = s.total_rps * s.canary_weight;
    (0..s.warmup + s.duration)
        .map(|sec| {
            let t = start + sec * NANOS_PER_SEC;
            let canary_on = sec >= s.warmup;
            let mut out = Vec::new();
            if s.with_baseline {
                let rps = if canary_on {
                    s.total_rps - canary_rps
                } else {
                    s.total_rps
                };
                out.push(ResourceSpans {
                    resource: Some(resource("checkout-1a2b3c4", "1a2b3c4")),
                    scope_spans: vec![ScopeSpans {
                        spans: spans(&mut rng, t, rps, s.baseline_error, s.median_ms, s.sigma),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
            if canary_on {
                let bad = sec - s.warmup >= s.regression_at;
                let (error, slow) = if bad {
                    (s.canary_error, s.canary_slowdown)
                } else {
                    (s.baseline_error, 1.0)
                };
                out.push(ResourceSpans {
                    resource: Some(resource("checkout-2b5d9af", "2b5d9af")),
                    scope_spans: vec![ScopeSpans {
                        spans: spans(&mut rng, t, canary_rps, error, s.median_ms * slow, s.sigma),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
            ExportTraceServiceRequest {
                resource_spans: out,
            }
        })
        .collect()
}
