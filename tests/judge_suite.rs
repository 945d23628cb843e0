//! The judge's evaluation suite with fixed seeds: false-red rate, detection
//! rate and time to red / green on simulated canaries with known truth.
//! `release-verdict simulate` prints the same table with 200 releases per
//! case; here fewer keep CI quick, and the seeds keep it stable.

use release_verdict::config::Config;
use release_verdict::sim::{summarize, Scenario, Summary};

const RELEASES: usize = 100;

fn case(name: &str) -> Summary {
    case_with(name, RELEASES)
}

/// A case with as many releases as `release-verdict simulate` runs, for the
/// targets whose margins are too thin for fewer.
fn full_case(name: &str) -> Summary {
    case_with(name, 200)
}

fn case_with(name: &str, releases: usize) -> Summary {
    let suite = Scenario::suite();
    let (k, s) = suite
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    let summary = summarize(s, releases, 1 + k as u64 * 1_000_000, &Config::default());
    println!("{}\n{}", Summary::header(), summary.row());
    summary
}

fn share(n: usize) -> f64 {
    n as f64 / RELEASES as f64
}

fn share_of(n: usize, s: &Summary) -> f64 {
    n as f64 / s.runs as f64
}

#[test]
fn identical_cohorts_are_almost_never_red() {
    for name in ["A/A, 10 rps", "A/A, 100 rps", "A/A, 1000 rps"] {
        let s = case(name);
        assert!(share(s.red) <= 0.01, "{name}: {}", s.row());
    }
}

#[test]
fn identical_cohorts_turn_green() {
    // At 10 canary rps and 0.5% errors, green within 3 min in 90% (green
    // rules out 1.25% there, which a minute cannot); at 100 canary rps,
    // within 60 s in 95%.
    let s = full_case("A/A, 100 rps");
    assert!(share_of(s.green_within_180s, &s) >= 0.9, "{}", s.row());
    for name in ["A/A, 1000 rps", "A/A, incident on both cohorts"] {
        let s = case(name);
        assert!(share(s.green_within_60s) >= 0.95, "{name}: {}", s.row());
    }
    // Heavy-tailed latency (log-normal σ 1.5): at p99 a 25% bound is a
    // sliver of the spread, and green there rests on `pass_tail` (the
    // canary's p99 no slower than the baseline's p99.5); without it, about
    // 70% within 60 s.
    let s = case("A/A, heavy-tailed latency");
    assert!(share(s.green_within_60s) >= 0.95, "{}", s.row());
}

#[test]
fn green_is_not_taken_back() {
    // At 10 canary requests/s the p99 is tested from the 1,000th request,
    // 100 s in, after most releases have gone green: it does not turn
    // them yellow again for want of evidence of its own.
    let s = case("A/A, 100 rps");
    assert!(share(s.green) >= 0.95, "{}", s.row());
    assert!(
        share(s.green_taken_back) <= 0.02,
        "green, then yellow again: {} of {}",
        s.green_taken_back,
        s.runs
    );
}

#[test]
fn the_time_to_a_decision_shown_is_good_to_within_twice() {
    // Where traffic makes it predictable, the first estimate shown is
    // within 0.5–2× of the decision in at least 80% of releases, and one
    // is shown in nearly all of them.
    for name in [
        "A/A, 1000 rps",
        "A/A, heavy-tailed latency",
        "A/A, incident on both cohorts",
    ] {
        let s = case(name);
        assert!(s.eta_decided >= 80, "{name}: {}", s.row());
        assert!(
            s.eta_accurate as f64 >= 0.8 * s.eta_decided as f64,
            "{name}: {}",
            s.row()
        );
    }
}

#[test]
fn a_tenfold_error_increase_is_red_fast() {
    let s = case("errors 0.5% → 5%");
    assert!(share(s.red) >= 0.99, "{}", s.row());
    assert!(s.median_red.unwrap() <= 15, "{}", s.row());
    assert_eq!(s.green, 0, "{}", s.row());
}

#[test]
fn a_fourfold_error_increase_is_red() {
    let s = full_case("errors 0.5% → 2%");
    assert!(share_of(s.red, &s) >= 0.95, "{}", s.row());
    assert!(s.median_red.unwrap() <= 45, "{}", s.row());
    // Green rules out 1.25% here, so a canary at 2% is not shown green first.
    assert!(share_of(s.green_before_red, &s) <= 0.02, "{}", s.row());
}

#[test]
fn a_slower_canary_is_red_fast() {
    let s = case("latency ×1.5");
    assert!(share(s.red) >= 0.95, "{}", s.row());
    // p99 joined the quantiles, and the average of three e-processes
    // takes a few seconds longer than that of two.
    assert!(s.median_red.unwrap() <= 30, "{}", s.row());
}

#[test]
fn a_regression_two_minutes_in_is_caught_within_a_minute() {
    let s = case("errors → 5% at 2 min");
    assert!(share(s.red_within_60s) >= 0.95, "{}", s.row());
}

#[test]
fn too_little_traffic_stays_yellow() {
    let s = case("too little traffic (2 rps)");
    assert_eq!((s.red, s.green), (0, 0), "{}", s.row());
    assert_eq!(s.yellow_insufficient, RELEASES, "{}", s.row());
}

#[test]
fn healthy_canaries_in_harder_settings_are_not_red() {
    for name in ["A/A, heavy-tailed latency", "A/A, incident on both cohorts"] {
        let s = case(name);
        assert!(share(s.red) <= 0.01, "{name}: {}", s.row());
    }
    // The moving split is red in 2 of these 100 seeds; over 2,000 releases
    // (`simulate --releases 2000 --seed 5000 --case split`) in 0.5%, the
    // same as its errors' e-process alone on the same traffic.
    let s = case("A/A, split 5% → 25% → 50%");
    assert!(share(s.red) <= 0.02, "{}", s.row());
}

#[test]
fn regressions_are_red_and_not_green_first() {
    for name in [
        "busy, errors 1% → 2%",
        "p99 only: 2% of requests ×5",
        "one endpoint (10%), errors ×10",
        "new error kind, 0.5% → 1.5%",
    ] {
        let s = case(name);
        assert!(share(s.red) >= 0.95, "{name}: {}", s.row());
        assert!(share(s.green_before_red) <= 0.02, "{name}: {}", s.row());
        // 100 canary requests/s: red within 30 s, half the time.
        assert!(s.median_red.unwrap() <= 30, "{name}: {}", s.row());
    }
    let s = case("one endpoint (10%), errors ×10");
    assert!(share(s.red_within_60s) >= 0.95, "{}", s.row());
    assert!(
        share(s.red_on_endpoint) >= 0.5,
        "the red reason names the endpoint: {}",
        s.row()
    );
    let s = case("new error kind, 0.5% → 1.5%");
    assert!(share(s.new_error_listed) >= 0.95, "{}", s.row());
}

#[test]
fn a_new_error_kind_is_red_and_named() {
    // 0.5% of the canary's requests fail with a kind the baseline never
    // shows, on top of the usual 0.5%: a handful of them, all on the
    // canary's side, is the evidence.
    for (name, median) in [
        ("new error kind on 0.5% more, 10 rps", 90),
        ("new error kind on 0.5% more, 100 rps", 15),
    ] {
        let s = case(name);
        assert!(share(s.red) >= 0.95, "{name}: {}", s.row());
        assert!(s.p95_red.unwrap() <= 180, "{name}: {}", s.row());
        assert!(s.median_red.unwrap() <= median, "{name}: {}", s.row());
        assert!(share(s.red_on_kind) >= 0.95, "{name}: {}", s.row());
    }
    // Green before red: 0% at 100 canary rps; at 10, 1.5% on simulate's
    // seeds (32% before kinds were evidence, 7.5% while green ruled out new
    // kinds only on the error ratio's 0.75% of requests).
    let s = case("new error kind on 0.5% more, 100 rps");
    assert!(share(s.green_before_red) <= 0.02, "{}", s.row());
    let s = full_case("new error kind on 0.5% more, 10 rps");
    assert!(share_of(s.green_before_red, &s) <= 0.02, "{}", s.row());
}

#[test]
fn tails_and_large_regressions_are_judged_from_the_first_requests() {
    // Green before red 2.5% while a p99 too thin to test did not hold
    // green back however it leaned; 0% since.
    let s = full_case("tail: 3% of requests +1 s, 10 rps");
    assert!(share_of(s.red, &s) >= 0.95, "{}", s.row());
    assert!(s.median_red.unwrap() <= 60, "{}", s.row());
    assert!(share_of(s.green_before_red, &s) <= 0.02, "{}", s.row());
    // 1% of requests 500 ms slower put only 1.6 times the canary's share
    // of the requests beyond the baseline's p99 + 10% (median to red 71 s
    // with p50, p95 and p99), but 10 times its share beyond its p99.9.
    let s = case("tail: 1% of requests +500 ms, 100 rps");
    assert!(share(s.red) >= 0.95, "{}", s.row());
    assert!(s.median_red.unwrap() <= 45, "{}", s.row());
    assert!(share(s.green_before_red) <= 0.02, "{}", s.row());
    let s = case("latency ×10, 10 rps");
    assert!(share(s.red) >= 0.99, "{}", s.row());
    assert!(s.median_red.unwrap() <= 15, "{}", s.row());
}

#[test]
fn latency_is_compared_endpoint_by_endpoint() {
    // The canary serves 60% of its requests on an endpoint four times
    // slower (the baseline 20%): its pooled p95 is far above the
    // baseline's, yet every endpoint is as fast. Pooled, this was red in
    // every release within 4 s.
    let s = case("A/A, canary mix 60% on a 4× slower endpoint (20% on the baseline)");
    assert!(share(s.red) <= 0.01, "{}", s.row());
    assert!(share(s.green_within_60s) >= 0.95, "{}", s.row());
    // The same mix with the slow endpoint 1.5× slower on the canary: red,
    // and the reason names the endpoint.
    let s = case("slow endpoint ×1.5 under a different mix");
    assert!(share(s.red) >= 0.95, "{}", s.row());
    assert!(s.median_red.unwrap() <= 30, "{}", s.row());
    assert!(share(s.red_on_endpoint) >= 0.95, "{}", s.row());
}

#[test]
fn metrics_only_services_are_judged_from_their_buckets() {
    // Request-duration histograms with the SDKs' default bounds, exported
    // every 10 s. With each bucket's count at its midpoint, a ×1.5 median
    // was red in 56% of releases (whether the baseline's p50 fell in
    // (25, 50] or (50, 75] decided it) and half the healthy ones never
    // turned green.
    for name in ["metrics only: A/A, 10 rps", "metrics only: A/A, 100 rps"] {
        let s = case(name);
        assert!(share(s.red) <= 0.01, "{name}: {}", s.row());
        assert!(share(s.green_within_180s) >= 0.9, "{name}: {}", s.row());
    }
    let s = case("metrics only: latency ×1.5, 10 rps");
    assert!(share(s.red) >= 0.95, "{}", s.row());
    assert!(s.median_red.unwrap() <= 60, "{}", s.row());
    assert!(share(s.green_before_red) <= 0.02, "{}", s.row());
    // Durations recorded as whole milliseconds: a median moving from the
    // 0 ms bucket into (0, 5] is 0.2 ms slower, within the 1 ms tolerance,
    // and is not red for the rounding (it was in 99.5% of releases).
    let s = case("metrics only, whole ms: median 0.4 → 0.6 ms (within 1 ms)");
    assert!(share(s.red) <= 0.01, "{}", s.row());
}
