//! The judge's tick at scale: 1,000 releases (500 services, each a canary
//! and its baseline) serving 20 endpoints, every release with a second of
//! new traffic before each tick, so every check, and every endpoint's,
//! is fed and judged. Issue 13's target: ≤ 50 ms a tick.

use criterion::{criterion_group, criterion_main, Criterion};
use release_verdict::config::Config;
use release_verdict::model::{Batch, Sample, SpanFacts, NANOS_PER_SEC};
use release_verdict::sim::{group, Rng};
use release_verdict::{BaselineRule, Judge, Store};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SERVICES: usize = 500;
const ENDPOINTS: usize = 20;
/// Requests a second: the baseline's and the canary's (10% of the traffic).
const RPS: [f64; 2] = [90.0, 10.0];
const START: u64 = 1_700_000_000 * NANOS_PER_SEC;

/// One second of a cohort's traffic over the endpoints, 0.5% errors.
fn second(rng: &mut Rng, rps: f64, names: &[String]) -> Sample {
    let mut sample = Sample::default();
    for _ in 0..rng.poisson(rps) {
        let failed = rng.bernoulli(0.005);
        let trace = rng.next_u64().to_be_bytes().repeat(2);
        let span = (rng.next_u64() | 1).to_be_bytes();
        sample.add_span(SpanFacts {
            latency_us: (rng.lognormal(50.0, 0.5) * 1000.0) as u64,
            failed,
            endpoint: Some(&names[rng.below(ENDPOINTS as u64) as usize]),
            error_kind: failed.then_some("HTTP 503"),
            trace_id: &trace,
            span_id: &span,
            end_time: 0,
        });
    }
    sample
}

/// Applies one second of traffic to every release.
fn traffic(store: &mut Store, rng: &mut Rng, services: &[String], names: &[String], now: u64) {
    let mut batch = Batch::default();
    for service in services {
        for (id, rps) in ["baseline", "canary"].into_iter().zip(RPS) {
            batch
                .groups
                .push(group(service, id, second(rng, rps, names)));
        }
    }
    store.apply(&batch, now);
}

fn tick(c: &mut Criterion) {
    let config = Config::default();
    let judge = Judge::new(&config.judge, &config.checks);
    let mut store = Store::new(2 * SERVICES, judge, BaselineRule::from(&config.baseline));
    let services: Vec<String> = (0..SERVICES).map(|i| format!("svc-{i}")).collect();
    let names: Vec<String> = (0..ENDPOINTS)
        .map(|i| format!("GET /api/v1/r{i}"))
        .collect();
    let mut rng = Rng::new(11);
    // The baselines serve alone for the settle time, then canaries join,
    // and a minute passes so every test holds a minute of state.
    let mut now = START;
    for s in 0..90 {
        now = START + s * NANOS_PER_SEC;
        traffic(&mut store, &mut rng, &services, &names, now);
        store.tick(now + NANOS_PER_SEC / 2);
    }
    let judged = store
        .fleets()
        .flat_map(|(_, _, f)| f.releases.values())
        .filter(|r| !r.judgement().endpoints.is_empty())
        .count();
    assert!(judged >= SERVICES, "canaries judged per endpoint: {judged}");
    let mut g = c.benchmark_group("judge");
    g.sample_size(20);
    g.bench_function("tick, 1000 releases × 20 endpoints, fresh traffic", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                now += NANOS_PER_SEC;
                traffic(&mut store, &mut rng, &services, &names, now);
                let t = Instant::now();
                black_box(store.tick(now + NANOS_PER_SEC / 2));
                spent += t.elapsed();
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
