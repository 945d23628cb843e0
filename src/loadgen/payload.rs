//! What loadgen's spans look like: `small` (the few attributes the judge
//! reads, ~150 bytes a span) or `http` (an instrumented HTTP server as an
//! OpenTelemetry SDK exports it: the semantic conventions' request
//! attributes and a Kubernetes resource, ~360 bytes a span). The daemon's
//! CPU per span is only comparable with a decode of spans like the ones it
//! is given, so `benches/engine.rs` decodes these same requests.

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::model::NANOS_PER_SEC;
use crate::otlp_kit::{error_status, kv, kv_int, resource, SERVER};
use crate::rng::Rng;
use crate::sim::otlp::release_spans;

/// The shape of the spans sent (`loadgen --payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Payload {
    /// Only the attributes the judge reads.
    #[default]
    Small,
    /// Realistic HTTP server spans, ~360 bytes each.
    Http,
}

/// One deployment's spans: who sends them and how they behave.
pub struct DeploymentTraffic<'a> {
    pub service: &'a str,
    pub deployment_id: &'a str,
    pub spans: u64,
    pub error: f64,
    pub median_ms: f64,
}

/// `c.spans` SERVER spans of one deployment ending around `t`, in the shape
/// `payload` names.
pub fn cohort_spans(
    rng: &mut Rng,
    payload: Payload,
    c: &DeploymentTraffic,
    t: u64,
) -> ResourceSpans {
    match payload {
        Payload::Small => release_spans(
            rng,
            c.service,
            c.deployment_id,
            c.spans,
            c.error,
            c.median_ms,
            t,
        ),
        Payload::Http => http_spans(rng, c, t),
    }
}

/// The routes a service serves, with a path of each as a client sends it.
const ROUTES: [(&str, &str, &str); 4] = [
    ("GET", "/orders/{id}", "/orders/83712"),
    ("GET", "/orders", "/orders"),
    ("POST", "/orders", "/orders"),
    ("GET", "/healthz", "/healthz"),
];

fn http_spans(rng: &mut Rng, c: &DeploymentTraffic, t: u64) -> ResourceSpans {
    let sha = c
        .deployment_id
        .rsplit('-')
        .next()
        .unwrap_or(c.deployment_id);
    let resource = resource(vec![
        kv("service.name", c.service),
        kv("service.version", "2.14.1"),
        kv("deployment.environment.name", "prod"),
        kv("deployment.id", c.deployment_id),
        kv("git.sha", sha),
        kv("host.name", "ip-10-2-31-17.ec2.internal"),
        kv("k8s.pod.name", &format!("{}-7d9f8b6c4-x2k9q", c.service)),
        kv("telemetry.sdk.name", "opentelemetry"),
        kv("telemetry.sdk.language", "java"),
        kv("telemetry.sdk.version", "1.44.1"),
    ]);
    let spans = (0..c.spans)
        .map(|_| {
            let (method, route, path) = ROUTES[rng.below(ROUTES.len() as u64) as usize];
            let start = t + rng.below(NANOS_PER_SEC);
            let dur = (rng.lognormal(c.median_ms, 0.5) * 1e6) as u64;
            let failed = rng.bernoulli(c.error);
            Span {
                trace_id: rng.next_u64().to_be_bytes().repeat(2),
                span_id: (rng.next_u64() | 1).to_be_bytes().to_vec(),
                parent_span_id: rng.next_u64().to_be_bytes().to_vec(),
                name: format!("{method} {route}"),
                kind: SERVER,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes: vec![
                    kv("http.request.method", method),
                    kv("http.route", route),
                    kv("url.path", path),
                    kv("url.scheme", "https"),
                    kv("server.address", "api.shop.example"),
                    kv_int("http.response.status_code", if failed { 503 } else { 200 }),
                    kv("user_agent.original", "okhttp/4.12.0"),
                    kv("network.protocol.version", "1.1"),
                    kv("client.address", "10.2.14.201"),
                ],
                status: failed.then(|| error_status("")),
                ..Default::default()
            }
        })
        .collect();
    ResourceSpans {
        resource: Some(resource),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "io.opentelemetry.tomcat-10.0".into(),
                version: "2.10.0-alpha".into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}
