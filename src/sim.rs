//! The judge's evaluation suite: simulated releases (a warm baseline, then
//! a canary beside it) fed straight into the store on a simulated clock,
//! and the table `release-verdict simulate` prints. `otlp` builds the same
//! traffic as OTLP requests for replay, the benches and the load generator.

pub use crate::rng::Rng;

use crate::config::Config;
use crate::judge::Color;
use crate::model::{Batch, Group, ReleaseRef, Sample, SpanFacts, NANOS_PER_SEC};
use crate::store::{BaselineRule, Store};

/// One simulated release: a warm baseline, then a canary beside it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    /// Requests per second of both cohorts together.
    pub total_rps: f64,
    /// The canary's share of traffic.
    pub canary_weight: f64,
    pub baseline_error: f64,
    pub canary_error: f64,
    pub median_ms: f64,
    /// Log-space spread of latencies.
    pub sigma: f64,
    /// Canary latencies are multiplied by this.
    pub canary_slowdown: f64,
    /// The canary behaves like the baseline until this many seconds in.
    pub regression_at: u64,
    /// Seconds the baseline serves alone before the canary appears.
    pub warmup: u64,
    /// Seconds simulated after the canary appears.
    pub duration: u64,
    /// Whether a baseline deployment exists at all.
    pub with_baseline: bool,
    /// The canary's share of traffic from a given second on (a split that
    /// moves during the rollout); empty for `canary_weight` throughout.
    pub split: Vec<(u64, f64)>,
    /// Share of requests on a second, small endpoint (0: one endpoint).
    pub small_endpoint: f64,
    /// The canary's error ratio on the small endpoint once bad (a
    /// regression confined to it); None for `canary_error` there too.
    pub small_endpoint_error: Option<f64>,
    /// Once bad, this share of canary requests is `tail_slowdown` times
    /// slower (a p99-only regression).
    pub tail_share: f64,
    pub tail_slowdown: f64,
    /// Once bad, the canary's errors are of a kind the baseline never shows.
    pub new_error_kind: bool,
    /// Both cohorts: from, to (seconds after the canary appears), error
    /// ratio and slowdown (an incident that is not the canary's fault).
    pub incident: Option<(u64, u64, f64, f64)>,
}

impl Scenario {
    /// Identical cohorts at the given total traffic.
    pub fn a_a(name: &'static str, total_rps: f64) -> Self {
        Self {
            name,
            total_rps,
            canary_weight: 0.1,
            baseline_error: 0.005,
            canary_error: 0.005,
            median_ms: 50.0,
            sigma: 0.5,
            canary_slowdown: 1.0,
            regression_at: 0,
            warmup: 120,
            duration: 300,
            with_baseline: true,
            split: Vec::new(),
            small_endpoint: 0.0,
            small_endpoint_error: None,
            tail_share: 0.0,
            tail_slowdown: 1.0,
            new_error_kind: false,
            incident: None,
        }
    }

    /// Whether the canary is healthy (any red is a false red).
    pub fn healthy(&self) -> bool {
        self.canary_error == self.baseline_error
            && self.canary_slowdown == 1.0
            && self.small_endpoint_error.is_none()
            && self.tail_share == 0.0
            && self.with_baseline
    }

    /// Canary requests per second at second `t` after it appears.
    pub fn canary_rps(&self, t: u64) -> f64 {
        self.total_rps * self.weight(t)
    }

    fn weight(&self, t: u64) -> f64 {
        self.split
            .iter()
            .rev()
            .find(|(from, _)| t >= *from)
            .map_or(self.canary_weight, |(_, w)| *w)
    }

    /// The cases of the evaluation suite: healthy canaries (any red is
    /// false), regressions (red must come, green must not come first), and
    /// too little traffic to tell.
    pub fn suite() -> Vec<Scenario> {
        let base = Scenario::a_a("", 100.0);
        let busy = Scenario::a_a("", 1000.0);
        vec![
            Scenario::a_a("A/A, 10 rps", 10.0),
            Scenario::a_a("A/A, 100 rps", 100.0),
            Scenario::a_a("A/A, 1000 rps", 1000.0),
            Scenario {
                name: "A/A, split 5% → 25% → 50%",
                split: vec![(0, 0.05), (60, 0.25), (120, 0.5)],
                ..busy.clone()
            },
            Scenario {
                name: "A/A, heavy-tailed latency",
                sigma: 1.5,
                ..busy.clone()
            },
            Scenario {
                name: "A/A, incident on both cohorts",
                incident: Some((45, 105, 0.08, 2.0)),
                ..busy.clone()
            },
            Scenario {
                name: "errors 0.5% → 5%",
                canary_error: 0.05,
                ..base.clone()
            },
            Scenario {
                name: "errors 0.5% → 2%",
                canary_error: 0.02,
                ..base.clone()
            },
            Scenario {
                name: "busy, errors 1% → 2%",
                baseline_error: 0.01,
                canary_error: 0.02,
                ..busy.clone()
            },
            Scenario {
                name: "latency ×1.5",
                canary_slowdown: 1.5,
                ..base.clone()
            },
            Scenario {
                name: "p99 only: 2% of requests ×5",
                tail_share: 0.02,
                tail_slowdown: 5.0,
                ..busy.clone()
            },
            Scenario {
                name: "one endpoint (10%), errors ×10",
                small_endpoint: 0.1,
                small_endpoint_error: Some(0.05),
                ..busy.clone()
            },
            Scenario {
                name: "new error kind, 0.5% → 1.5%",
                canary_error: 0.015,
                new_error_kind: true,
                ..busy.clone()
            },
            Scenario {
                name: "errors → 5% at 2 min",
                canary_error: 0.05,
                regression_at: 120,
                ..base.clone()
            },
            Scenario {
                name: "too little traffic (2 rps)",
                ..Scenario::a_a("", 2.0)
            },
            Scenario {
                name: "no baseline",
                with_baseline: false,
                ..base
            },
        ]
    }
}

/// What happened to one simulated release.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Seconds from the canary's (or regression's) start to red / green.
    pub red_after: Option<u64>,
    pub green_after: Option<u64>,
    /// Shown green at or after the regression's onset, before any red.
    pub green_before_red: bool,
    /// Shown green, then yellow again (not red).
    pub green_taken_back: bool,
    /// The first time-to-decision estimate: (seconds in, estimate), and
    /// the seconds in of the first decision (green or red) after it.
    pub first_eta: Option<(u64, u64)>,
    pub decided_at: Option<u64>,
    pub last: Color,
    pub last_reason: String,
    /// Kinds of error the last verdict lists as new.
    pub new_errors: Vec<String>,
    /// The endpoint the last red reason names, if any.
    pub red_endpoint: bool,
}

/// How one cohort behaves for one second.
struct Behaviour {
    rps: f64,
    error: f64,
    median_ms: f64,
    sigma: f64,
    /// Error ratio on the small endpoint.
    small_error: f64,
    small_share: f64,
    tail_share: f64,
    tail_slowdown: f64,
    error_kind: &'static str,
}

fn cohort(rng: &mut Rng, b: &Behaviour) -> Sample {
    let n = rng.poisson(b.rps);
    let mut sample = Sample::default();
    for _ in 0..n {
        let small = b.small_share > 0.0 && rng.bernoulli(b.small_share);
        let (endpoint, error) = if small {
            ("GET /small", b.small_error)
        } else {
            ("POST /checkout", b.error)
        };
        let failed = rng.bernoulli(error);
        let mut ms = rng.lognormal(b.median_ms, b.sigma);
        if b.tail_share > 0.0 && rng.bernoulli(b.tail_share) {
            ms *= b.tail_slowdown;
        }
        let trace = rng.next_u64().to_be_bytes().repeat(2);
        let span = (rng.next_u64() | 1).to_be_bytes();
        sample.add_span(SpanFacts {
            latency_us: (ms * 1000.0) as u64,
            failed,
            endpoint: Some(endpoint),
            error_kind: failed.then_some(b.error_kind),
            trace_id: &trace,
            span_id: &span,
            end_time: 0,
        });
    }
    sample
}

/// A batch's group of `sample` for release `id` of `service` in prod
/// (no sha, no declared role), as a store receives it.
pub fn group<'a>(service: &'a str, id: &'a str, sample: Sample) -> Group<'a> {
    Group {
        release: ReleaseRef {
            service,
            environment: "prod",
            deployment_id: id,
            git_sha: None,
            role: None,
        },
        items: sample.requests,
        sample,
    }
}

/// Runs one release of a scenario with its own seed, one sample batch
/// per cohort per second and a judge tick after each.
pub fn run(s: &Scenario, seed: u64, config: &Config) -> RunResult {
    let judge = crate::judge::Judge::new(&config.judge, &config.checks);
    let mut store = Store::new(16, judge, BaselineRule::from(&config.baseline));
    let mut rng = Rng::new(seed);
    let start = 1_700_000_000 * NANOS_PER_SEC;
    let mut out = RunResult {
        red_after: None,
        green_after: None,
        green_before_red: false,
        first_eta: None,
        decided_at: None,
        last: Color::Yellow,
        last_reason: String::new(),
        new_errors: Vec::new(),
        red_endpoint: false,
        green_taken_back: false,
    };
    for t in 0..s.warmup + s.duration {
        let now = start + t * NANOS_PER_SEC;
        let mut batch = Batch::default();
        let canary_on = t >= s.warmup;
        let since = t.saturating_sub(s.warmup);
        let (mut error, mut slow) = (s.baseline_error, 1.0);
        if let Some((from, to, e, x)) = s.incident {
            if canary_on && (from..to).contains(&since) {
                (error, slow) = (e, x);
            }
        }
        let healthy = Behaviour {
            rps: 0.0,
            error,
            median_ms: s.median_ms * slow,
            sigma: s.sigma,
            small_error: error,
            small_share: s.small_endpoint,
            tail_share: 0.0,
            tail_slowdown: 1.0,
            error_kind: "HTTP 503",
        };
        let canary_rps = if canary_on { s.canary_rps(since) } else { 0.0 };
        if s.with_baseline {
            let b = Behaviour {
                rps: s.total_rps - canary_rps,
                ..healthy
            };
            batch
                .groups
                .push(group("sim", "baseline", cohort(&mut rng, &b)));
        }
        if canary_on {
            let bad = since >= s.regression_at;
            let b = if bad {
                Behaviour {
                    rps: canary_rps,
                    error: s.canary_error.max(error),
                    median_ms: s.median_ms * slow * s.canary_slowdown,
                    small_error: s.small_endpoint_error.unwrap_or(s.canary_error).max(error),
                    tail_share: s.tail_share,
                    tail_slowdown: s.tail_slowdown,
                    error_kind: if s.new_error_kind {
                        "NullPointerException"
                    } else {
                        "HTTP 503"
                    },
                    ..healthy
                }
            } else {
                Behaviour {
                    rps: canary_rps,
                    ..healthy
                }
            };
            batch
                .groups
                .push(group("sim", "canary", cohort(&mut rng, &b)));
        }
        store.apply(&batch, now);
        store.tick(now + NANOS_PER_SEC / 2);
        if canary_on {
            let since = since + 1;
            let after_onset = since.saturating_sub(s.regression_at);
            let Some((_, _, fleet)) = store.fleets().next() else {
                continue;
            };
            let Some(canary) = fleet.releases.get("canary") else {
                continue;
            };
            let j = canary.judgement();
            match j.color {
                Color::Red if out.red_after.is_none() => {
                    out.red_after = Some(after_onset);
                    out.red_endpoint = j.reason.starts_with("GET /small:");
                }
                Color::Green if out.green_after.is_none() => out.green_after = Some(since),
                _ => {}
            }
            if j.color == Color::Green
                && out.red_after.is_none()
                && out.green_after.is_some_and(|g| g > s.regression_at)
            {
                out.green_before_red = true;
            }
            if j.color == Color::Yellow && out.green_after.is_some() {
                out.green_taken_back = true;
            }
            // The first estimate before any decision (a green that later
            // turns yellow again has been decided once already).
            let undecided = out.green_after.is_none() && out.red_after.is_none();
            if out.first_eta.is_none() && undecided && j.color == Color::Yellow {
                if let Some(eta) = j.decision_eta {
                    out.first_eta = Some((since, eta));
                }
            }
            if out.first_eta.is_some() && out.decided_at.is_none() && j.color != Color::Yellow {
                out.decided_at = Some(since);
            }
        }
    }
    let (_, _, fleet) = store.fleets().next().expect("the simulated fleet exists");
    let j = fleet.releases["canary"].judgement();
    out.last = j.color;
    out.last_reason = j.reason.clone();
    out.new_errors = j.new_errors.iter().map(|(k, _)| k.to_string()).collect();
    out
}

/// A scenario's results over many releases.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: &'static str,
    pub runs: usize,
    pub red: usize,
    pub green: usize,
    pub green_within_60s: usize,
    pub red_within_60s: usize,
    pub median_red: Option<u64>,
    pub p95_red: Option<u64>,
    pub median_green: Option<u64>,
    pub green_within_180s: usize,
    /// Shown green after the regression's onset and before red.
    pub green_before_red: usize,
    /// Shown green, then yellow again.
    pub green_taken_back: usize,
    pub yellow_insufficient: usize,
    /// Releases with a time-to-decision estimate and a decision after it,
    /// and those decided within 0.5×–2× of the first estimate.
    pub eta_decided: usize,
    pub eta_accurate: usize,
    /// Releases whose red names the regressed endpoint.
    pub red_on_endpoint: usize,
    /// Releases whose last verdict lists the new error kind.
    pub new_error_listed: usize,
}

fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

/// Runs `runs` releases of a scenario with seeds `seed..seed+runs`.
pub fn summarize(s: &Scenario, runs: usize, seed: u64, config: &Config) -> Summary {
    let results: Vec<RunResult> = (0..runs as u64).map(|i| run(s, seed + i, config)).collect();
    let mut reds: Vec<u64> = results.iter().filter_map(|r| r.red_after).collect();
    let mut greens: Vec<u64> = results.iter().filter_map(|r| r.green_after).collect();
    reds.sort_unstable();
    greens.sort_unstable();
    Summary {
        name: s.name,
        runs,
        red: reds.len(),
        green: greens.len(),
        green_within_60s: greens.iter().filter(|g| **g <= 60).count(),
        red_within_60s: reds.iter().filter(|r| **r <= 60).count(),
        median_red: quantile(&reds, 0.5),
        p95_red: quantile(&reds, 0.95),
        median_green: quantile(&greens, 0.5),
        green_within_180s: greens.iter().filter(|g| **g <= 180).count(),
        green_before_red: results.iter().filter(|r| r.green_before_red).count(),
        green_taken_back: results.iter().filter(|r| r.green_taken_back).count(),
        eta_decided: results
            .iter()
            .filter(|r| r.first_eta.is_some() && r.decided_at.is_some())
            .count(),
        eta_accurate: results
            .iter()
            .filter(|r| match (r.first_eta, r.decided_at) {
                (Some((shown, eta)), Some(done)) => {
                    let ratio = (done - shown) as f64 / eta.max(1) as f64;
                    (0.5..=2.0).contains(&ratio)
                }
                _ => false,
            })
            .count(),
        red_on_endpoint: results.iter().filter(|r| r.red_endpoint).count(),
        new_error_listed: results
            .iter()
            .filter(|r| r.new_errors.iter().any(|k| k == "NullPointerException"))
            .count(),
        yellow_insufficient: results
            .iter()
            .filter(|r| r.last == Color::Yellow && r.last_reason.starts_with("insufficient data"))
            .count(),
    }
}

impl Summary {
    pub fn header() -> &'static str {
        "| case | releases | red | red ≤60s | median to red | p95 to red | green before red | green | green ≤60s | green ≤3 min | median to green | ETA within 0.5–2× | yellow, insufficient data |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    pub fn row(&self) -> String {
        let pct = |n: usize| format!("{:.1}%", 100.0 * n as f64 / self.runs as f64);
        let secs = |s: Option<u64>| s.map(|s| format!("{s} s")).unwrap_or_else(|| "–".into());
        let eta = if self.eta_decided == 0 {
            "–".to_string()
        } else {
            format!(
                "{:.0}% of {}",
                100.0 * self.eta_accurate as f64 / self.eta_decided as f64,
                self.eta_decided
            )
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.name,
            self.runs,
            pct(self.red),
            pct(self.red_within_60s),
            secs(self.median_red),
            secs(self.p95_red),
            pct(self.green_before_red),
            pct(self.green),
            pct(self.green_within_60s),
            pct(self.green_within_180s),
            secs(self.median_green),
            eta,
            pct(self.yellow_insufficient),
        )
    }
}

/// Simulated traffic as OTLP: one `ExportTraceServiceRequest` per second of
/// a scenario, with both cohorts' SERVER spans (for replay tests, benches
/// and the load generator).
pub mod otlp {
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
                            spans: spans(
                                &mut rng,
                                t,
                                canary_rps,
                                error,
                                s.median_ms * slow,
                                s.sigma,
                            ),
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
}
