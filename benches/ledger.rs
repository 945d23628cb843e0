//! The release ledger on both databases: a real SQLite file (WAL) in the
//! temp directory, and a real PostgreSQL started in a temporary directory
//! (Debian's `postgresql`, as the tests start it; loopback TCP, fsync off).
//! Daemon events written per second through the writer thread, posted
//! batches, and `/api/v1/dora`'s query on a ledger of one million events.
//!
//! cargo bench --bench ledger             both
//! cargo bench --bench ledger -- sqlite   one

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use release_verdict::dora::{Window, DAY};
use release_verdict::ledger::event::{Event, Source};
use release_verdict::ledger::{DoraQuery, Ledger, LedgerOptions};
use release_verdict::model::{UnixNanos, NANOS_PER_SEC};

/// 2026-11-24T00:00:00Z.
const NOW: UnixNanos = 1_795_478_400 * NANOS_PER_SEC;
const MINUTE: UnixNanos = 60 * NANOS_PER_SEC;

#[path = "../tests/common/postgres.rs"]
mod postgres;

const BACKENDS: [&str; 2] = ["sqlite", "postgres"];

/// A fresh ledger on `backend`, and the directory to remove after (none
/// for PostgreSQL: its server goes with this process).
fn temp_ledger(backend: &str, name: &str) -> (Ledger, Option<std::path::PathBuf>) {
    if backend == "postgres" {
        let url = postgres::database(name);
        return (Ledger::open(&url, LedgerOptions::default()).unwrap(), None);
    }
    let dir = std::env::temp_dir().join(format!("rv-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.db");
    let ledger = Ledger::open(path.to_str().unwrap(), LedgerOptions::default()).unwrap();
    (ledger, Some(dir))
}

fn remove(dir: Option<std::path::PathBuf>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A verdict change as the daemon records it, with its checks' numbers.
fn verdict_changed(i: u64) -> Event {
    Event::new("verdict_changed", NOW + i, Source::Daemon, "checkout")
        .for_release("prod", &format!("checkout-{:07x}", i / 4))
        .with_git_sha(Some("2b5d9af0c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6"))
        .with("from", "yellow")
        .with("to", "green")
        .with("reason", "all checks pass against checkout-1a2b3c4")
        .with(
            "checks",
            serde_json::json!([
                {"name": "error_ratio", "result": "pass", "canary": {"requests": 1200, "errors": 3}, "baseline": {"requests": 24000, "errors": 70}},
                {"name": "latency_p99", "result": "pass", "canary": {"p99_ms": 212.0}, "baseline": {"p99_ms": 205.0}}
            ]),
        )
}

fn writes(c: &mut Criterion) {
    for backend in BACKENDS {
        writes_on(c, backend);
    }
}

fn writes_on(c: &mut Criterion, backend: &str) {
    let (ledger, dir) = temp_ledger(backend, "writes");
    let mut g = c.benchmark_group(format!("ledger/{backend}"));
    const N: u64 = 10_000;
    g.throughput(Throughput::Elements(N));
    let mut next = 0;
    g.bench_function("record 10k daemon events (try_record + flush)", |b| {
        b.iter(|| {
            for _ in 0..N {
                ledger.try_record(verdict_changed(next)).unwrap();
                next += 1;
            }
            ledger.flush().unwrap();
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("post 1000 events (insert_posted)", |b| {
        b.iter(|| {
            let batch: Vec<Event> = (0..1000)
                .map(|_| {
                    next += 1;
                    verdict_changed(next)
                })
                .collect();
            black_box(ledger.insert_posted(batch).unwrap())
        })
    });
    g.finish();
    ledger.close();
    remove(dir);
}

/// Posts `n` events of releases spread evenly over `span` before NOW: each
/// release has a commit, a merge, its start, two verdict changes, its
/// first green and its promotion; one in five goes red and is rolled back.
fn fill(ledger: &Ledger, n: usize, span: UnixNanos) {
    let per_release = 8;
    let releases = n / per_release;
    let services = 40;
    let mut batch = Vec::with_capacity(1000);
    let mut written = 0;
    for r in 0..releases as u64 {
        let start = NOW - span + r * (span / releases as u64);
        let service = format!("svc-{}", r % services);
        let env = if r % 3 == 0 { "staging" } else { "prod" };
        let id = format!("{service}-{r:08x}");
        let sha = format!("{r:040x}");
        let ev = |kind: &str, t: UnixNanos, source: Source| {
            Event::new(kind, t, source, &service)
                .for_release(env, &id)
                .with_git_sha(Some(&sha))
        };
        batch.push(
            Event::new("commit", start - 90 * MINUTE, Source::Api, &service)
                .with_git_sha(Some(&sha)),
        );
        batch.push(
            Event::new("pr_merged", start - 20 * MINUTE, Source::Api, &service)
                .with_git_sha(Some(&sha)),
        );
        batch.push(ev("release_started", start, Source::Daemon).with("verdict", "yellow"));
        batch.push(ev("verdict_changed", start + MINUTE, Source::Daemon));
        if r % 5 == 0 {
            batch.push(ev("canary_failed", start + 2 * MINUTE, Source::Daemon));
            batch.push(ev("verdict_changed", start + 2 * MINUTE, Source::Daemon));
            batch.push(ev("rolled_back", start + 9 * MINUTE, Source::Inferred));
            batch.push(ev("deploy_started", start, Source::Api));
        } else {
            batch.push(ev("canary_passed", start + MINUTE, Source::Daemon));
            batch.push(ev("verdict_changed", start + 3 * MINUTE, Source::Daemon));
            batch.push(ev("promoted", start + 30 * MINUTE, Source::Inferred));
            batch.push(ev("deploy_started", start, Source::Api));
        }
        if batch.len() >= 1000 {
            written += batch.len();
            ledger.insert_posted(std::mem::take(&mut batch)).unwrap();
        }
    }
    written += batch.len();
    ledger.insert_posted(batch).unwrap();
    ledger.flush().unwrap();
    eprintln!("ledger: {written} events of {releases} releases");
}

fn dora(c: &mut Criterion) {
    for backend in BACKENDS {
        dora_on(c, backend);
    }
}

fn dora_on(c: &mut Criterion, backend: &str) {
    let mut g = c.benchmark_group(format!("dora/{backend}"));
    g.sample_size(10);
    let month = Window {
        since: NOW - 30 * DAY,
        until: NOW,
    };
    for (name, span) in [
        ("1M events over a year, 30-day window", 365 * DAY),
        ("1M events all in the 30-day window", 29 * DAY),
    ] {
        let (ledger, dir) = temp_ledger(backend, "dora");
        let started = Instant::now();
        fill(&ledger, 1_000_000, span);
        eprintln!("{backend}: filled in {:.1?}", started.elapsed());
        let all = DoraQuery {
            service: None,
            environment: None,
            window: month,
            bucket: None,
        };
        let reports = ledger.dora(&all).unwrap();
        eprintln!(
            "{name}: {} services×environments, {} releases started",
            reports.len(),
            reports
                .iter()
                .map(|r| r.measures.releases_started)
                .sum::<usize>()
        );
        g.bench_function(format!("{name}, every service"), |b| {
            b.iter(|| black_box(ledger.dora(&all).unwrap()))
        });
        let one = DoraQuery {
            service: Some("svc-7".into()),
            environment: Some("prod".into()),
            bucket: Some(release_verdict::dora::Bucket::Day),
            ..all.clone()
        };
        g.bench_function(format!("{name}, one service by day"), |b| {
            b.iter(|| black_box(ledger.dora(&one).unwrap()))
        });
        ledger.close();
        remove(dir);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = writes, dora
}
criterion_main!(benches);
