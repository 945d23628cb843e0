//! Verdict state machine tests, on seeded samples fed tick by tick.

use super::*;
use crate::config::Config;
use crate::model::Sample;
use crate::rng::Rng;

const SEC: u64 = NANOS_PER_SEC;

struct Pair {
    judge: Judge,
    j: Judgement,
    canary_window: Signals,
    baseline_window: Signals,
    id: Arc<str>,
    rng: Rng,
    t: UnixNanos,
}

fn sample(rng: &mut Rng, n: u64, error: f64, median_ms: f64) -> Signals {
    let mut s = Signals::default();
    let errors = rng.binomial(n, error);
    let latencies_us = (0..n)
        .map(|_| ((rng.lognormal(median_ms, 0.4) * 1000.0) as u64, 1))
        .collect();
    s.add_sample(&Sample {
        requests: n,
        errors,
        latencies_us,
        ..Default::default()
    });
    s
}

impl Pair {
    fn new(config: &Config) -> Self {
        Self {
            judge: Judge::new(&config.judge, &config.checks),
            j: Judgement::new(&config.checks, 0),
            canary_window: Signals::default(),
            baseline_window: Signals::default(),
            id: Arc::from("base"),
            rng: Rng::new(17),
            t: 0,
        }
    }

    /// One second: `n` canary and `9n` baseline requests.
    fn second(&mut self, n: u64, canary_error: f64, canary_ms: f64, with_baseline: bool) -> Color {
        let c = sample(&mut self.rng, n, canary_error, canary_ms);
        let b = sample(&mut self.rng, 9 * n, 0.005, 50.0);
        self.second_of(c, b, with_baseline)
    }

    /// One second of the given samples.
    fn second_of(&mut self, c: Signals, b: Signals, with_baseline: bool) -> Color {
        self.t += SEC;
        self.canary_window.add(&c);
        self.baseline_window.add(&b);
        let canary = View {
            first_seen: 0,
            pending: &c,
            window: &self.canary_window,
            detail: &crate::window::Detail::default(),
            buckets: false,
        };
        let pairing = if with_baseline {
            Pairing::Compared(BaselineView {
                id: &self.id,
                view: View {
                    first_seen: 0,
                    pending: &b,
                    window: &self.baseline_window,
                    detail: &crate::window::Detail::default(),
                    buckets: false,
                },
            })
        } else {
            Pairing::Unpaired(Unpaired::Alone)
        };
        self.judge.evaluate(&mut self.j, canary, pairing, self.t);
        self.j.color
    }
}

#[test]
fn a_healthy_canary_goes_green_then_red_when_it_regresses_and_stays_red() {
    let mut p = Pair::new(&Config::default());
    let mut green_at = None;
    for s in 0..120 {
        if p.second(50, 0.005, 50.0, true) == Color::Green && green_at.is_none() {
            green_at = Some(s);
        }
    }
    assert!(green_at.is_some(), "never green: {}", p.j.reason);
    assert_eq!(p.j.color, Color::Green);
    assert!(p.j.reason.contains("promote"), "{}", p.j.reason);
    let mut red_at = None;
    for s in 0..120 {
        if p.second(50, 0.08, 50.0, true) == Color::Red {
            red_at = Some(s);
            break;
        }
    }
    assert!(red_at.is_some(), "never red: {}", p.j.reason);
    assert!(p.j.red_since.is_some());
    assert!(p.j.reason.contains("error ratio"), "{}", p.j.reason);
    // red is final, whatever comes next
    for _ in 0..60 {
        assert_eq!(p.second(50, 0.0, 50.0, true), Color::Red);
    }
}

#[test]
fn a_red_tells_its_numbers_then_and_the_same_numbers_now() {
    let mut p = Pair::new(&Config::default());
    while p.second(50, 0.2, 50.0, true) != Color::Red {
        assert!(p.t < 120 * SEC, "never red: {}", p.j.reason);
    }
    let ev = p.j.red_evidence.clone().expect("a red keeps its evidence");
    assert_eq!(ev.check, "error_ratio");
    let then = ev.then.clone();
    assert!(then.canary.unwrap() > then.baseline.unwrap(), "{then:?}");
    assert!(p.j.reason.starts_with("red since "), "{}", p.j.reason);
    assert!(p.j.reason.ends_with("; roll back"), "{}", p.j.reason);
    // The canary recovers: the reason keeps the numbers red was decided
    // on, and tells today's, which the evidence then agrees with.
    for _ in 0..30 {
        p.second(50, 0.0, 50.0, true);
    }
    let now = p.j.red_now.clone().expect("the same numbers now");
    assert!(now.canary_requests > then.canary_requests, "{now:?}");
    assert!(
        now.canary.unwrap() < then.canary.unwrap(),
        "{now:?} vs {then:?}"
    );
    assert_eq!(p.j.red_evidence.as_ref().unwrap().then, then, "then stays");
    let pct = |x: f64| format!("{:.2}%", x * 100.0);
    let reason = &p.j.reason;
    assert!(
        reason.contains(&format!(
            "when the error ratio was {}",
            pct(then.canary.unwrap())
        )) && reason.contains(&format!("now {} vs", pct(now.canary.unwrap()))),
        "{reason}"
    );
}

#[test]
fn evidence_reads_as_words_with_odds() {
    let levels = Levels::new(0.99);
    let words = |r, e: f64| levels.words(r, e.ln(), Some("+10%".into()));
    assert_eq!(
        words(CheckResult::Pass, 0.2),
        "no regression (ruled out beyond +10%)"
    );
    assert_eq!(
        words(CheckResult::Fail, 1e12),
        "regression shown (odds 1e12 : 1)"
    );
    assert_eq!(
        words(CheckResult::Fail, 2500.0),
        "regression shown (odds 2,500 : 1)"
    );
    assert_eq!(
        words(CheckResult::Marginal, 40.0),
        "leaning worse (odds 40 : 1)"
    );
    assert_eq!(words(CheckResult::Marginal, 2.0), "not conclusive yet");
    assert_eq!(
        words(CheckResult::Marginal, 500.0),
        "worse, by less than the tolerance (odds 500 : 1)"
    );
    assert_eq!(words(CheckResult::Nodata, 1.0), "no data yet");
}

#[test]
fn a_slower_canary_is_red_on_latency() {
    let mut p = Pair::new(&Config::default());
    for _ in 0..60 {
        if p.second(20, 0.005, 100.0, true) == Color::Red {
            break;
        }
    }
    assert_eq!(p.j.color, Color::Red, "{}", p.j.reason);
    let latency = p.j.checks.iter().find(|c| c.name == "latency").unwrap();
    assert_eq!(latency.result, CheckResult::Fail);
    assert!(latency.canary.p50_ms.unwrap() > latency.baseline.as_ref().unwrap().p50_ms.unwrap());
}

#[test]
fn too_little_traffic_is_yellow_insufficient_data() {
    let mut p = Pair::new(&Config::default());
    for _ in 0..120 {
        p.second(1, 0.005, 50.0, true);
    }
    assert_eq!(p.j.color, Color::Yellow);
    assert!(
        p.j.reason.starts_with("insufficient data"),
        "{}",
        p.j.reason
    );
}

#[test]
fn without_baseline_or_guardrails_the_verdict_says_so() {
    let mut p = Pair::new(&Config::default());
    for _ in 0..60 {
        p.second(50, 0.005, 50.0, false);
    }
    assert_eq!(p.j.color, Color::Yellow);
    assert!(p.j.reason.contains("no baseline"), "{}", p.j.reason);
    assert!(p.j.checks.is_empty());
}

#[test]
fn guardrails_judge_a_release_without_baseline() {
    let mut config = Config::default();
    config.checks.guardrails.max_error_ratio = Some(0.02);
    config.checks.guardrails.max_p95 = Some(std::time::Duration::from_millis(500));
    let mut healthy = Pair::new(&config);
    for _ in 0..90 {
        healthy.second(50, 0.002, 50.0, false);
    }
    assert_eq!(healthy.j.color, Color::Green, "{}", healthy.j.reason);
    assert!(
        healthy.j.reason.contains("guardrail"),
        "{}",
        healthy.j.reason
    );
    let mut failing = Pair::new(&config);
    for _ in 0..90 {
        if failing.second(50, 0.10, 50.0, false) == Color::Red {
            break;
        }
    }
    assert_eq!(failing.j.color, Color::Red, "{}", failing.j.reason);
    assert!(
        failing.j.reason.contains("guardrail"),
        "{}",
        failing.j.reason
    );
}

#[test]
fn a_non_critical_failure_does_not_make_red() {
    let mut config = Config::default();
    config.checks.latency.critical = false;
    let mut p = Pair::new(&config);
    for _ in 0..90 {
        p.second(20, 0.005, 150.0, true);
    }
    assert_eq!(p.j.color, Color::Yellow, "{}", p.j.reason);
    assert!(p.j.reason.contains("non-critical"), "{}", p.j.reason);
}

fn metric_config(direction: crate::config::Direction) -> Config {
    let mut config = Config::default();
    config.checks.metric.push(crate::config::MetricCheck {
        name: "queue".into(),
        metric: "app.queue.depth".into(),
        direction,
        tolerance: 0.1,
        tolerance_abs: 0.0,
        pass_bound: 0.25,
        pass_bound_abs: 0.0,
        quantiles: vec![0.5],
        critical: true,
        weight: 1.0,
    });
    config
}

/// One second of a configured metric: `n` gauge values around `median`
/// (canary) and `9n` around 10 (baseline), or sum increments.
fn metric_second(p: &mut Pair, n: u64, canary: f64, sums: bool) -> Color {
    use crate::model::MetricObservation::{Count, Values};
    p.t += SEC;
    let mut draw = |median: f64, n: u64| -> Sample {
        let metrics = if sums {
            vec![(
                0,
                Count((0..n).filter(|_| p.rng.bernoulli(median / 100.0)).count() as u64),
            )]
        } else {
            (0..n)
                .map(|_| {
                    (
                        0,
                        Values {
                            milli: (p.rng.lognormal(median, 0.3) * 1000.0) as u64,
                            count: 1,
                        },
                    )
                })
                .collect()
        };
        Sample {
            requests: n,
            metrics,
            ..Default::default()
        }
    };
    let (cs, bs) = (draw(canary, n), draw(10.0, 9 * n));
    let (mut c, mut b) = (Signals::default(), Signals::default());
    c.add_sample(&cs);
    b.add_sample(&bs);
    p.canary_window.add(&c);
    p.baseline_window.add(&b);
    let canary = View {
        first_seen: 0,
        pending: &c,
        window: &p.canary_window,
        detail: &crate::window::Detail::default(),
        buckets: false,
    };
    let baseline = Pairing::Compared(BaselineView {
        id: &p.id,
        view: View {
            first_seen: 0,
            pending: &b,
            window: &p.baseline_window,
            detail: &crate::window::Detail::default(),
            buckets: false,
        },
    });
    p.judge.evaluate(&mut p.j, canary, baseline, p.t);
    p.j.checks
        .iter()
        .find(|c| c.name == "queue")
        .map(|_| p.j.color)
        .unwrap_or(Color::Yellow)
}

#[test]
fn a_metric_check_on_a_gauge_catches_an_increase() {
    let mut p = Pair::new(&metric_config(crate::config::Direction::Increase));
    for _ in 0..60 {
        if metric_second(&mut p, 20, 15.0, false) == Color::Red {
            break;
        }
    }
    assert_eq!(p.j.color, Color::Red, "{}", p.j.reason);
    let q = p.j.checks.iter().find(|c| c.name == "queue").unwrap();
    assert_eq!(q.result, CheckResult::Fail);
    assert!(q.canary.median.unwrap() > q.baseline.as_ref().unwrap().median.unwrap());
}

#[test]
fn a_metric_check_on_a_sum_catches_a_decrease_and_passes_when_equal() {
    let mut bad = Pair::new(&metric_config(crate::config::Direction::Decrease));
    for _ in 0..120 {
        if metric_second(&mut bad, 20, 3.0, true) == Color::Red {
            break;
        }
    }
    let q = bad.j.checks.iter().find(|c| c.name == "queue").unwrap();
    assert_eq!(q.result, CheckResult::Fail, "{}", q.detail);
    assert!(q.canary.per_request.unwrap() < q.baseline.as_ref().unwrap().per_request.unwrap());

    let mut same = Pair::new(&metric_config(crate::config::Direction::Either));
    for _ in 0..120 {
        metric_second(&mut same, 50, 10.0, true);
    }
    let q = same.j.checks.iter().find(|c| c.name == "queue").unwrap();
    assert_ne!(q.result, CheckResult::Fail, "{}", q.detail);
}

/// `n` requests, none failed, every one lasting exactly `ms` (coarse timers).
fn flat(n: u64, ms: u64) -> Signals {
    let mut s = Signals::default();
    s.add_sample(&Sample {
        requests: n,
        latencies_us: vec![(ms * 1000, n)],
        ..Default::default()
    });
    s
}

#[test]
fn identical_latencies_go_green_and_a_slower_flat_canary_red() {
    // The security review: every request at 50 ms in both cohorts never
    // went green, for no request was ever strictly slower than the baseline.
    let mut p = Pair::new(&Config::default());
    let green = (0..120).any(|_| p.second_of(flat(50, 50), flat(450, 50), true) == Color::Green);
    assert!(green, "never green: {}", p.j.reason);
    let mut p = Pair::new(&Config::default());
    let red = (0..120).any(|_| p.second_of(flat(50, 80), flat(450, 50), true) == Color::Red);
    assert!(red, "never red: {}", p.j.reason);
    assert!(p.j.reason.contains("latency"), "{}", p.j.reason);
}

#[test]
fn the_time_to_red_is_told_only_half_way_there() {
    let fail = 100f64.ln();
    // Not half-way: growth so far says too little.
    assert_eq!(super::eta::seconds_to_level(1.0, fail, 1.0, 10.0), None);
    // 4 nats in 10 s from -1: half a nat a second, 0.6 nats to go.
    let s = super::eta::seconds_to_level(4.0, fail, 1.0, 10.0).unwrap();
    assert!((s - (fail - 4.0) / 0.5).abs() < 1e-9, "{s}");
    // Past the level: no time left.
    assert_eq!(
        super::eta::seconds_to_level(fail + 1.0, fail, 1.0, 10.0),
        Some(0.0)
    );
}

#[test]
fn a_metric_quantile_tested_later_does_not_take_a_green_back() {
    // A gauge judged at p50 and p99, 10 canary values a second: the p99 is
    // tested from the 1,000th, 100 s in, after the release has gone green.
    let mut config = metric_config(crate::config::Direction::Increase);
    config.checks.metric[0].quantiles = vec![0.5, 0.99];
    config.checks.latency.enabled = false;
    let mut p = Pair::new(&config);
    let mut green_at = None;
    for t in 0..160 {
        let color = metric_second(&mut p, 10, 10.0, false);
        if color == Color::Green && green_at.is_none() {
            green_at = Some(t);
        }
        if green_at.is_some() {
            assert_eq!(color, Color::Green, "{t}s: {}", p.j.reason);
        }
    }
    assert!(
        green_at.is_some_and(|t| t < 100),
        "{green_at:?}: {}",
        p.j.reason
    );
}
