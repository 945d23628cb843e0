//! Simulated traffic as OTLP: one `ExportTraceServiceRequest` per second of
//! a scenario, with both cohorts' SERVER spans (for replay tests, benches
//! and the load generator).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

use super::{Rng, Scenario};
use crate::model::NANOS_PER_SEC;
use crate::otlp_kit::{error_status, kv, kv_int, release_resource, resource_spans, SERVER};

/// A deployment of `service` in prod, as one pod of it reports.
fn resource(service: &str, id: &str, sha: &str) -> Vec<KeyValue> {
    let mut attributes = release_resource(service, "prod", id, sha);
    attributes.push(kv("host.name", "pod-1"));
    attributes.push(kv("telemetry.sdk.language", "rust"));
    attributes
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
        kind: SERVER,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur,
        attributes: vec![
            kv("http.request.method", "POST"),
            kv("http.route", "/checkout"),
            kv_int("http.response.status_code", if failed { 503 } else { 200 }),
        ],
        status: failed.then(|| error_status("upstream unavailable")),
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
            let mut res = resource("checkout", &id, &id[9..]);
            res.push(kv("k8s.pod.name", &format!("checkout-7d9f8b-{r:05}")));
            res.push(kv("service.version", "2.14.1"));
            resource_spans(
                res,
                (0..per)
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
                            kind: SERVER,
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
                                kv_int("http.response.status_code", code),
                            ],
                            status: failed.then(|| error_status("")),
                            ..Default::default()
                        }
                    })
                    .collect(),
            )
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
    let spans = (0..n)
        .map(|_| one_span(rng, t, error, median_ms, 0.5))
        .collect();
    resource_spans(resource(service, id, id), spans)
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
                let spans = spans(&mut rng, t, rps, s.baseline_error, s.median_ms, s.sigma);
                out.push(resource_spans(
                    resource("checkout", "checkout-1a2b3c4", "1a2b3c4"),
                    spans,
                ));
            }
            if canary_on {
                let bad = sec - s.warmup >= s.regression_at;
                let (error, slow) = if bad {
                    (s.canary_error, s.canary_slowdown)
                } else {
                    (s.baseline_error, 1.0)
                };
                let spans = spans(&mut rng, t, canary_rps, error, s.median_ms * slow, s.sigma);
                out.push(resource_spans(
                    resource("checkout", "checkout-2b5d9af", "2b5d9af"),
                    spans,
                ));
            }
            ExportTraceServiceRequest {
                resource_spans: out,
            }
        })
        .collect()
}
