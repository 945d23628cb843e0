//! The engine's hot paths on realistic input: 512-span OTLP requests of an
//! instrumented HTTP fleet (~8 resource and 9 span attributes, 2% errors,
//! 4 releases a request). Prints spans/s and bytes per release to compare.
//!
//! cargo bench --bench engine

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use release_verdict::config::Config;
use release_verdict::encode_releases;
use release_verdict::loadgen;
use release_verdict::model::{Sample, NANOS_PER_SEC};
use release_verdict::otlp_kit::kv;
use release_verdict::sim::{otlp::fleet_request, Rng};
use release_verdict::Encoding;
use release_verdict::Judge;
use release_verdict::Mapper;
use release_verdict::Rolling;
use release_verdict::{list_verdicts, verdict_fleets, verdicts_of, Filter};
use release_verdict::{BaselineRule, Store};

const SPANS: usize = 512;
const START: u64 = 1_763_800_000 * NANOS_PER_SEC;

fn requests(n: usize) -> Vec<ExportTraceServiceRequest> {
    let mut rng = Rng::new(1);
    (0..n)
        .map(|i| fleet_request(&mut rng, SPANS, 4, START + i as u64 * NANOS_PER_SEC))
        .collect()
}

fn store(config: &Config) -> Store {
    Store::new(
        config.limits.max_releases,
        Judge::new(&config.judge, &config.checks),
        BaselineRule::from(&config.baseline),
    )
}

fn ingest(c: &mut Criterion) {
    let config = Config::default();
    let mapper = Mapper::new(&config);
    let reqs = requests(16);
    let encoded: Vec<Vec<u8>> = reqs.iter().map(|r| r.encode_to_vec()).collect();
    let json: Vec<Vec<u8>> = reqs
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect();
    let bytes_per_span = encoded[0].len() / SPANS;
    eprintln!(
        "fixture: {SPANS} spans, {} bytes protobuf ({bytes_per_span} B/span), {} bytes JSON",
        encoded[0].len(),
        json[0].len()
    );

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function("protobuf decode", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % encoded.len();
            black_box(ExportTraceServiceRequest::decode(&encoded[i][..]).unwrap())
        })
    });
    g.bench_function("protobuf decode + map", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % encoded.len();
            let req = ExportTraceServiceRequest::decode(&encoded[i][..]).unwrap();
            black_box(mapper.traces(&req).items)
        })
    });
    g.bench_function("protobuf walk + map", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % encoded.len();
            let bytes = &encoded[i][..];
            black_box(mapper.trace_bytes(bytes, Encoding::Protobuf, |batch| batch.items))
        })
    });
    g.bench_function("protobuf decode + identity + record", |b| {
        let mut s = store(&config);
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % encoded.len();
            let req = ExportTraceServiceRequest::decode(&encoded[i][..]).unwrap();
            let batch = mapper.traces(&req);
            black_box(s.apply(&batch, START + i as u64))
        })
    });
    g.bench_function("protobuf walk + identity + record", |b| {
        let mut s = store(&config);
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % encoded.len();
            let bytes = &encoded[i][..];
            let applied = mapper.trace_bytes(bytes, Encoding::Protobuf, |batch| {
                s.apply(&batch, START + i as u64)
            });
            black_box(applied)
        })
    });
    g.bench_function("identity + record (decoded)", |b| {
        let mut s = store(&config);
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % reqs.len();
            let batch = mapper.traces(&reqs[i]);
            black_box(s.apply(&batch, START + i as u64))
        })
    });
    g.bench_function("JSON decode", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % json.len();
            black_box(serde_json::from_slice::<ExportTraceServiceRequest>(&json[i]).unwrap())
        })
    });
    g.bench_function("JSON decode + map", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % json.len();
            let req = serde_json::from_slice::<ExportTraceServiceRequest>(&json[i]).unwrap();
            black_box(mapper.traces(&req).items)
        })
    });
    g.bench_function("JSON read + map", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % json.len();
            let bytes = &json[i][..];
            black_box(mapper.trace_bytes(bytes, Encoding::Json, |batch| batch.items))
        })
    });
    g.finish();
}

/// The request `benches/ingest_cpu.sh` has loadgen send (`--payload http
/// --services 8`), decoded bare by prost and walked into the store: the
/// figures to set beside the daemon's CPU per span of the same run.
fn loadgen_bytes(c: &mut Criterion) {
    use clap::{Args, FromArgMatches};
    let args = ["loadgen", "--payload", "http", "--services", "8"];
    let matches =
        loadgen::Options::augment_args(clap::Command::new("loadgen")).get_matches_from(args);
    let options = loadgen::Options::from_arg_matches(&matches).unwrap();
    let req = loadgen::sample_request(&options);
    let spans: usize = req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let bytes = req.encode_to_vec();
    eprintln!(
        "loadgen --payload http: {spans} spans, {} bytes protobuf ({} B/span)",
        bytes.len(),
        bytes.len() / spans
    );
    let config = Config::default();
    let mapper = Mapper::new(&config);
    let mut g = c.benchmark_group("loadgen http");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("protobuf decode", |b| {
        b.iter(|| black_box(ExportTraceServiceRequest::decode(&bytes[..]).unwrap()))
    });
    g.bench_function("protobuf walk + identity + record", |b| {
        let mut s = store(&config);
        let mut t = START;
        b.iter(|| {
            t += NANOS_PER_SEC / 100;
            let applied =
                mapper.trace_bytes(&bytes, Encoding::Protobuf, |batch| s.apply(&batch, t));
            black_box(applied)
        })
    });
    g.finish();
}

fn window(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let sample = Sample {
        requests: SPANS as u64,
        errors: 10,
        latencies_us: (0..SPANS)
            .map(|_| ((rng.lognormal(50.0, 0.5) * 1000.0) as u64, 1))
            .collect(),
        ..Default::default()
    };
    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function("record 512 latencies", |b| {
        let mut w = Rolling::new(Duration::from_secs(60), 6, START);
        let mut t = START;
        b.iter(|| {
            t += NANOS_PER_SEC / 10;
            w.add_sample(black_box(&sample), t)
        })
    });
    g.finish();
    c.bench_function("window/rotate one sub-window", |b| {
        b.iter_batched(
            || {
                let mut w = Rolling::new(Duration::from_secs(60), 6, START);
                for s in 0..60 {
                    w.add_sample(&sample, START + s * NANOS_PER_SEC);
                }
                w
            },
            |mut w| {
                w.advance(START + 70 * NANOS_PER_SEC);
                w
            },
            BatchSize::SmallInput,
        )
    });
}

/// A store with `pairs` canary/baseline fleets, warmed with a minute of traffic.
fn warm_store(config: &Config, pairs: usize) -> (Store, u64) {
    let mapper = Mapper::new(config);
    let mut s = store(config);
    let mut rng = Rng::new(3);
    let mut t = START;
    for sec in 0..60 {
        t = START + sec * NANOS_PER_SEC;
        for p in 0..pairs {
            let mut req = fleet_request(&mut rng, 40, 2, t);
            for rs in &mut req.resource_spans {
                let attrs = &mut rs.resource.as_mut().unwrap().attributes;
                attrs[0] = kv("service.name", &format!("svc-{p}"));
            }
            s.apply(&mapper.traces(&req), t);
        }
        s.tick(t + NANOS_PER_SEC / 2);
    }
    (s, t)
}

fn evaluate(c: &mut Criterion) {
    let config = Config::default();
    let (mut one, t1) = warm_store(&config, 1);
    let (mut many, tm) = warm_store(&config, 500);
    let per_release: usize = many
        .fleets()
        .flat_map(|(_, _, f)| f.releases.values())
        .map(|r| r.heap_bytes())
        .sum::<usize>()
        / many.len();
    eprintln!(
        "memory: {} releases, {per_release} histogram heap bytes per active release",
        many.len()
    );
    {
        // The same releases after a window with no traffic: their slots
        // give their histograms back; only the totals since first seen stay.
        let (mut idle, t) = warm_store(&config, 500);
        let window = config.judge.window.as_nanos() as u64;
        let mut now = t;
        while now < t + 2 * window {
            now += NANOS_PER_SEC;
            idle.tick(now);
        }
        let per_idle: usize = idle
            .fleets()
            .flat_map(|(_, _, f)| f.releases.values())
            .map(|r| r.heap_bytes())
            .sum::<usize>()
            / idle.len();
        eprintln!(
            "memory: {} releases, {per_idle} histogram heap bytes per idle release",
            idle.len()
        );
    }
    let mut g = c.benchmark_group("evaluate");
    g.bench_function("tick, 1 canary + baseline", |b| {
        let mut t = t1;
        b.iter(|| {
            t += NANOS_PER_SEC;
            black_box(one.tick(t))
        })
    });
    g.throughput(Throughput::Elements(many.len() as u64));
    g.sample_size(20);
    g.bench_function("tick, 1000 releases", |b| {
        let mut t = tm;
        b.iter(|| {
            t += NANOS_PER_SEC;
            black_box(many.tick(t))
        })
    });
    g.finish();
    c.bench_function("prometheus/encode 1000 releases", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(1 << 20);
            encode_releases(&mut out, &many, 60 * NANOS_PER_SEC, tm);
            black_box(out)
        })
    });
    let bytes = many.checkpoint();
    eprintln!(
        "checkpoint: {} releases in {} bytes ({} per release)",
        many.len(),
        bytes.len(),
        bytes.len() / many.len()
    );
    c.bench_function("checkpoint/write 1000 releases", |b| {
        b.iter(|| black_box(many.checkpoint()))
    });
    c.bench_function("checkpoint/restore 1000 releases", |b| {
        b.iter_batched(
            || store(&config),
            |mut s| black_box(s.restore(&bytes).unwrap()),
            BatchSize::LargeInput,
        )
    });
}

/// How long a listing of 10,000 releases holds the store lock: whole, as
/// before, and each hold when built as `App::list_verdicts` does: the
/// fleets' names, then about 64 releases' verdicts at a time.
fn listing(c: &mut Criterion) {
    let config = Config::default();
    let (s, t) = warm_store(&config, 5_000);
    let filter = Filter::default();
    let names = verdict_fleets(&s, &filter);
    let per_fleet = s.len() / names.len().max(1);
    let chunk = &names[..(64 / per_fleet.max(1)).max(1)];
    let mut g = c.benchmark_group("listing");
    g.sample_size(10);
    g.bench_function(format!("{} releases, one lock", s.len()), |b| {
        b.iter(|| black_box(list_verdicts(&s, &filter, t)))
    });
    g.bench_function(
        format!("the {} fleets' names (first lock)", names.len()),
        |b| b.iter(|| black_box(verdict_fleets(&s, &filter))),
    );
    g.bench_function(
        format!(
            "{} fleets, {} releases (each later lock)",
            chunk.len(),
            chunk.len() * per_fleet
        ),
        |b| b.iter(|| black_box(verdicts_of(&s, chunk, t))),
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = ingest, loadgen_bytes, window, evaluate, listing
}
criterion_main!(benches);
