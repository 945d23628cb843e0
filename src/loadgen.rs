//! The load generator: realistic OTLP span traffic over gRPC or HTTP, at a
//! rate or flat out, across services with a stable deployment and a canary
//! each, optionally with a regression injected into the canaries. Also the
//! demo: watch a bad canary turn red.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::clock::system_now;
use crate::rng::Rng;

mod payload;
pub use payload::Payload;
use payload::{cohort_spans, DeploymentTraffic};

/// Where and what to send (also the `loadgen` command's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// grpc://HOST:PORT (OTLP/gRPC) or http://HOST:PORT (OTLP/HTTP protobuf).
    #[arg(long, default_value = "grpc://127.0.0.1:4317")]
    pub target: String,
    /// Spans per second in total; 0 sends flat out.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// How long to send, e.g. "30s".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub duration: Duration,
    /// Services, each with a stable deployment and a canary.
    #[arg(long, default_value_t = 4)]
    pub services: usize,
    /// Services are named PREFIX-0, PREFIX-1, …: two runs with different
    /// prefixes (one healthy, one failing) give a mixed fleet.
    #[arg(long, default_value = "loadgen")]
    pub service_prefix: String,
    /// The canaries' share of each service's traffic.
    #[arg(long, default_value_t = 0.1)]
    pub canary_weight: f64,
    #[arg(long, default_value_t = 0.005)]
    pub baseline_error: f64,
    /// Error ratio injected into the canaries (e.g. 0.05).
    #[arg(long, default_value_t = 0.005)]
    pub canary_error: f64,
    /// Canary latency multiplier (e.g. 1.5).
    #[arg(long, default_value_t = 1.0)]
    pub canary_slowdown: f64,
    #[arg(long, default_value_t = 512)]
    pub spans_per_request: usize,
    /// The spans' shape: `small` (the attributes the judge reads) or
    /// `http` (an instrumented HTTP server's, ~360 bytes a span).
    #[arg(long, value_enum, default_value_t = Payload::Small)]
    pub payload: Payload,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// An ingest token, when the daemon asks for one ([auth] ingest_tokens_file).
    #[arg(long, env = "RELEASE_VERDICT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// What was sent and what the daemon answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub requests: u64,
    pub spans_sent: u64,
    /// Spans the daemon took (sent, less those its partial success refused).
    pub spans_accepted: u64,
    /// Spans refused inside accepted requests (partial success).
    pub spans_rejected: u64,
    /// Spans in requests refused for overload (retryable).
    pub spans_throttled: u64,
    /// Spans in requests that failed otherwise.
    pub spans_failed: u64,
    pub elapsed: Duration,
}

impl Report {
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "{} requests, {} spans sent in {:.1}s ({:.0} spans/s); accepted {}, rejected {}, throttled {}, failed {}",
            self.requests,
            self.spans_sent,
            secs,
            self.spans_sent as f64 / secs,
            self.spans_accepted,
            self.spans_rejected,
            self.spans_throttled,
            self.spans_failed,
        )
    }
}

/// Why the load generator could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("target must start with grpc:// or http://, not {0:?}")]
    Target(String),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: tonic::transport::Error,
    },
    #[error("the token has characters a header cannot carry")]
    Token,
}

/// A pool of requests to cycle through: building spans costs more than
/// sending them, and the daemon judges by arrival time.
fn pool(o: &Options, canary_on: bool, n: usize) -> Vec<ExportTraceServiceRequest> {
    let mut rng = Rng::new(o.seed);
    let services = o.services.max(1);
    let per_service = (o.spans_per_request / services).max(1) as u64;
    (0..n)
        .map(|_| {
            let t = system_now();
            let resource_spans = (0..services)
                .flat_map(|s| {
                    let service = format!("{}-{s}", o.service_prefix);
                    let canary_n = if canary_on {
                        (per_service as f64 * o.canary_weight).round() as u64
                    } else {
                        0
                    };
                    let stable = format!("{service}-stable");
                    let canary = format!("{service}-canary");
                    let stable = DeploymentTraffic {
                        service: &service,
                        deployment_id: &stable,
                        spans: per_service - canary_n.min(per_service),
                        error: o.baseline_error,
                        median_ms: 50.0,
                    };
                    let mut out = vec![cohort_spans(&mut rng, o.payload, &stable, t)];
                    if canary_n > 0 {
                        let canary = DeploymentTraffic {
                            deployment_id: &canary,
                            spans: canary_n,
                            error: o.canary_error,
                            median_ms: 50.0 * o.canary_slowdown,
                            ..stable
                        };
                        out.push(cohort_spans(&mut rng, o.payload, &canary, t));
                    }
                    out
                })
                .collect();
            ExportTraceServiceRequest { resource_spans }
        })
        .collect()
}

/// A request as `run` sends it once the canaries are on (before its
/// latencies are drawn afresh): what `benches/engine.rs` decodes, so a
/// bare decode and the daemon's CPU per span are measured on the same bytes.
pub fn sample_request(o: &Options) -> ExportTraceServiceRequest {
    pool(o, true, 1).remove(0)
}

/// Draws fresh latencies and failures into a pooled request, so a long run
/// does not replay the same finite sample (which a judge can tell apart
/// from the baseline's, rightly). Resources alternate stable, canary.
fn refresh(req: &mut ExportTraceServiceRequest, rng: &mut Rng, o: &Options) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Status};
    let now = system_now();
    for (i, rs) in req.resource_spans.iter_mut().enumerate() {
        let canary = i % 2 == 1;
        let (error, median_ms) = if canary {
            (o.canary_error, 50.0 * o.canary_slowdown)
        } else {
            (o.baseline_error, 50.0)
        };
        for span in rs.scope_spans.iter_mut().flat_map(|ss| ss.spans.iter_mut()) {
            let dur = (rng.lognormal(median_ms, 0.5) * 1e6) as u64;
            span.start_time_unix_nano = now;
            span.end_time_unix_nano = now + dur;
            let failed = rng.bernoulli(error);
            span.status = failed.then(|| Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            });
            if let Some(code) = span
                .attributes
                .iter_mut()
                .find(|kv| kv.key == "http.response.status_code")
                .and_then(|kv| kv.value.as_mut())
            {
                code.value = Some(Value::IntValue(if failed { 503 } else { 200 }));
            }
        }
    }
}

fn spans_in(r: &ExportTraceServiceRequest) -> u64 {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}

enum Sender {
    /// The client and the `authorization` value it sends, if any.
    Grpc(
        TraceServiceClient<tonic::transport::Channel>,
        Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ),
    Http(reqwest::Client, String),
}

/// What one export came to: (accepted, rejected, throttled, failed) spans.
async fn send(sender: &mut Sender, req: &ExportTraceServiceRequest) -> [u64; 4] {
    let n = spans_in(req);
    let rejected = |resp: ExportTraceServiceResponse| {
        resp.partial_success
            .map(|p| p.rejected_spans.max(0) as u64)
            .unwrap_or(0)
            .min(n)
    };
    match sender {
        Sender::Grpc(client, token) => {
            let mut request = tonic::Request::new(req.clone());
            if let Some(token) = token {
                request
                    .metadata_mut()
                    .insert("authorization", token.clone());
            }
            match client.export(request).await {
                Ok(resp) => {
                    let r = rejected(resp.into_inner());
                    [n - r, r, 0, 0]
                }
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                    ) =>
                {
                    [0, 0, n, 0]
                }
                Err(_) => [0, 0, 0, n],
            }
        }
        Sender::Http(client, url) => {
            let resp = client
                .post(url.as_str())
                .header("content-type", "application/x-protobuf")
                .body(req.encode_to_vec())
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    let body = r.bytes().await.unwrap_or_default();
                    let r = ExportTraceServiceResponse::decode(body)
                        .map(rejected)
                        .unwrap_or(0);
                    [n - r, r, 0, 0]
                }
                Ok(r) if matches!(r.status().as_u16(), 429 | 503) => [0, 0, n, 0],
                _ => [0, 0, 0, n],
            }
        }
    }
}

async fn connect(target: &str, token: Option<&str>) -> Result<Sender, LoadError> {
    let bad_token = |_| LoadError::Token;
    if let Some(addr) = target.strip_prefix("grpc://") {
        let token = token
            .map(|t| format!("Bearer {t}").parse())
            .transpose()
            .map_err(bad_token)?;
        let client = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .map_err(|source| LoadError::Connect {
                target: target.to_string(),
                source,
            })?;
        Ok(Sender::Grpc(
            client.max_encoding_message_size(64 << 20),
            token,
        ))
    } else if target.starts_with("http://") {
        let client = crate::client::http(token, None)
            .map_err(|_| LoadError::Token)?
            .build()
            .map_err(|_| LoadError::Token)?;
        Ok(Sender::Http(
            client,
            format!("{}/v1/traces", target.trim_end_matches('/')),
        ))
    } else {
        Err(LoadError::Target(target.to_string()))
    }
}

/// Sends traffic for `o.duration` and reports what the daemon answered.
pub async fn run(o: Options) -> Result<Report, LoadError> {
    // The stable deployments serve first, so each becomes its canary's baseline.
    let mut first = connect(&o.target, o.token.as_deref()).await?;
    let warm = pool(&o, false, 1).remove(0);
    let warm_outcome = send(&mut first, &warm).await;
    let requests: Arc<Vec<ExportTraceServiceRequest>> = Arc::new(pool(&o, true, 16));
    let counters: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let started = Instant::now();
    let deadline = started + o.duration;
    let workers = o.concurrency.max(1);
    // Each worker paces itself to its share of the rate.
    let interval = (o.rate > 0).then(|| {
        Duration::from_secs_f64(o.spans_per_request as f64 * workers as f64 / o.rate as f64)
    });
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (requests, counters, o) = (requests.clone(), counters.clone(), o.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&o.target, o.token.as_deref()).await?;
            let mut rng = Rng::new(o.seed.wrapping_add(1 + w as u64));
            let mut next = Instant::now();
            let mut i = w;
            while Instant::now() < deadline {
                let mut req = requests[i % requests.len()].clone();
                refresh(&mut req, &mut rng, &o);
                i += workers;
                let outcome = send(&mut sender, &req).await;
                counters[0].fetch_add(1, Ordering::Relaxed);
                for (c, v) in counters[1..].iter().zip(outcome) {
                    c.fetch_add(v, Ordering::Relaxed);
                }
                if let Some(every) = interval {
                    next += every;
                    tokio::time::sleep_until(next.into()).await;
                }
            }
            Ok::<(), LoadError>(())
        }));
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            return Err(e);
        }
    }
    let c: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let [a, r, t, f] = warm_outcome;
    Ok(Report {
        requests: c[0] + 1,
        spans_accepted: c[1] + a,
        spans_rejected: c[2] + r,
        spans_throttled: c[3] + t,
        spans_failed: c[4] + f,
        spans_sent: c[1..].iter().sum::<u64>() + a + r + t + f,
        elapsed: started.elapsed(),
    })
}
