//! One simulated release: each cohort's samples a second at a time, fed
//! into the store on a simulated clock with a judge tick after each, and
//! what the verdicts did.

use super::{Histograms, Rng, Scenario};
use crate::config::Config;
use crate::judge::Color;
use crate::model::{
    explicit_buckets, Batch, Group, ReleaseRef, RequestSource, Sample, SpanFacts, NANOS_PER_SEC,
};
use crate::store::{BaselineRule, Store};

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
    /// The first red reason names the new error kind.
    pub red_kind: bool,
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
    /// Latencies on the small endpoint are multiplied by this.
    small_slowdown: f64,
    tail_share: f64,
    tail_slowdown: f64,
    tail_add_ms: f64,
    error_kind: &'static str,
    /// Share of requests failing with `NEW_KIND` besides.
    new_kind: f64,
}

/// The kind of error the baseline never shows.
const NEW_KIND: &str = "NullPointerException";

/// One simulated request.
struct Request {
    endpoint: &'static str,
    failed: bool,
    kind: &'static str,
    ms: f64,
    trace: [u8; 16],
    span: [u8; 8],
}

/// One cohort's requests for one second.
fn cohort(rng: &mut Rng, b: &Behaviour) -> Vec<Request> {
    let n = rng.poisson(b.rps);
    let mut requests = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let small = b.small_share > 0.0 && rng.bernoulli(b.small_share);
        let (endpoint, error) = if small {
            ("GET /small", b.small_error)
        } else {
            ("POST /checkout", b.error)
        };
        let failed = rng.bernoulli(error);
        let new_kind = !failed && b.new_kind > 0.0 && rng.bernoulli(b.new_kind);
        let mut ms = rng.lognormal(b.median_ms, b.sigma);
        if small {
            ms *= b.small_slowdown;
        }
        if b.tail_share > 0.0 && rng.bernoulli(b.tail_share) {
            ms = ms * b.tail_slowdown + b.tail_add_ms;
        }
        let kind = if new_kind { NEW_KIND } else { b.error_kind };
        let mut trace = [0u8; 16];
        let id = rng.next_u64().to_be_bytes();
        trace[..8].copy_from_slice(&id);
        trace[8..].copy_from_slice(&id);
        requests.push(Request {
            endpoint,
            failed: failed || new_kind,
            kind,
            ms,
            trace,
            span: (rng.next_u64() | 1).to_be_bytes(),
        });
    }
    requests
}

/// Requests as spans, one observation each.
fn spans(requests: &[Request]) -> Sample {
    let mut sample = Sample::default();
    for r in requests {
        sample.add_span(SpanFacts {
            latency_us: (r.ms * 1000.0) as u64,
            failed: r.failed,
            endpoint: Some(r.endpoint),
            error_kind: r.failed.then_some(r.kind),
            trace_id: &r.trace,
            span_id: &r.span,
            end_time: 0,
        });
    }
    sample
}

/// Requests as one export of a request-duration histogram: a point per
/// endpoint and outcome (the SDKs' route and status attributes), its
/// buckets read as the daemon reads them.
fn histogram(requests: &[Request], h: &Histograms) -> Sample {
    let mut sample = Sample {
        source: RequestSource::Metrics,
        ..Sample::default()
    };
    // (endpoint, error kind if failed): one point's attribute set.
    type Point = (&'static str, Option<&'static str>);
    let mut points: Vec<(Point, Vec<u64>)> = Vec::new();
    for r in requests {
        let key = (r.endpoint, r.failed.then_some(r.kind));
        let i = match points.iter().position(|p| p.0 == key) {
            Some(i) => i,
            None => {
                points.push((key, vec![0; h.bounds_ms.len() + 1]));
                points.len() - 1
            }
        };
        let ms = if h.whole_ms { r.ms.round() } else { r.ms };
        points[i].1[h.bounds_ms.partition_point(|&b| b < ms)] += 1;
    }
    for ((endpoint, kind), counts) in points {
        let n = counts.iter().sum::<u64>();
        sample.requests += n;
        let e = sample.add_endpoint(endpoint, n, if kind.is_some() { n } else { 0 });
        if let Some(kind) = kind {
            sample.errors += n;
            sample.add_error_kind(kind, n);
        }
        let from = sample.latencies_us.len();
        explicit_buckets(h.bounds_ms, &counts, 1000.0, &mut sample.latencies_us);
        let added: Vec<_> = sample.latencies_us[from..]
            .iter()
            .map(|&(us, c)| (e, us, c))
            .collect();
        sample.endpoint_latencies.extend(added);
    }
    sample
}

/// What a cohort reports for a second: its spans, or, for a metrics-only
/// service, the requests held until its next export (at `phase` seconds
/// into each interval).
fn report(
    requests: Vec<Request>,
    held: &mut Vec<Request>,
    s: &Scenario,
    t: u64,
    phase: u64,
) -> Option<Sample> {
    let Some(h) = &s.histograms else {
        return Some(spans(&requests));
    };
    held.extend(requests);
    (t % h.every == phase % h.every).then(|| histogram(&std::mem::take(held), h))
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
        red_kind: false,
        green_taken_back: false,
    };
    // Requests a metrics-only cohort holds until its next export.
    let mut held = (Vec::new(), Vec::new());
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
            small_slowdown: s.small_endpoint_slowdown,
            tail_share: 0.0,
            tail_slowdown: 1.0,
            tail_add_ms: 0.0,
            error_kind: "HTTP 503",
            new_kind: 0.0,
        };
        let canary_rps = if canary_on { s.canary_rps(since) } else { 0.0 };
        if s.with_baseline {
            let b = Behaviour {
                rps: s.total_rps - canary_rps,
                ..healthy
            };
            let requests = cohort(&mut rng, &b);
            if let Some(sample) = report(requests, &mut held.0, s, t, 3) {
                batch.groups.push(group("sim", "baseline", sample));
            }
        }
        if canary_on {
            let bad = since >= s.regression_at;
            let canary_small = s.canary_small_endpoint.unwrap_or(s.small_endpoint);
            let b = if bad {
                Behaviour {
                    rps: canary_rps,
                    error: s.canary_error.max(error),
                    median_ms: s.median_ms * slow * s.canary_slowdown,
                    small_error: s.small_endpoint_error.unwrap_or(s.canary_error).max(error),
                    small_share: canary_small,
                    small_slowdown: s.small_endpoint_slowdown * s.small_endpoint_canary_slowdown,
                    tail_share: s.tail_share,
                    tail_slowdown: s.tail_slowdown,
                    tail_add_ms: s.tail_add_ms,
                    error_kind: if s.new_error_kind {
                        NEW_KIND
                    } else {
                        "HTTP 503"
                    },
                    new_kind: s.new_kind_share,
                    ..healthy
                }
            } else {
                Behaviour {
                    rps: canary_rps,
                    small_share: canary_small,
                    ..healthy
                }
            };
            let requests = cohort(&mut rng, &b);
            if let Some(sample) = report(requests, &mut held.1, s, t, 7) {
                batch.groups.push(group("sim", "canary", sample));
            }
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
                    out.red_endpoint = j.reason.contains("GET /small");
                    out.red_kind = j.reason.contains(NEW_KIND);
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
