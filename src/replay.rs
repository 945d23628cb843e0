//! Replay: the daemon's engine driven by recorded OTLP/JSON lines (the OTel
//! Collector file exporter's format), on a clock read from the telemetry's
//! own timestamps. Prints a verdict object per line whenever a release's
//! verdict changes (or every tick, if asked).

use std::io::{BufRead, Write};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::app::{App, Sender};
use crate::config::Config;
use crate::ingest::decode::from_json;
use crate::model::UnixNanos;
use crate::self_metrics::Transport;
use crate::verdict::{self, Filter};

/// What a replay read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub skipped: u64,
    pub verdicts_printed: u64,
    /// The first problem met, with its line number.
    pub first_problem: Option<String>,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading input: {0}")]
    Read(std::io::Error),
    #[error("writing output: {0}")]
    Write(std::io::Error),
}

enum Line {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

/// Which request a line holds, by its first key.
fn parse(line: &str) -> Result<Line, String> {
    let head = &line[..line.len().min(64)];
    if head.contains("\"resourceSpans\"") {
        from_json(line.as_bytes())
            .map(Line::Traces)
            .map_err(|e| format!("invalid OTLP JSON traces: {e}"))
    } else if head.contains("\"resourceMetrics\"") {
        from_json(line.as_bytes())
            .map(Line::Metrics)
            .map_err(|e| format!("invalid OTLP JSON metrics: {e}"))
    } else {
        Err("neither an ExportTraceServiceRequest nor an ExportMetricsServiceRequest (logs are ignored)".into())
    }
}

/// The latest time a request's telemetry carries.
/// Item times at or past this (2100-01-01) are not taken as the replay's
/// clock: a forged or broken timestamp must not move time out of range.
const LATEST_TIME: UnixNanos = 4_102_444_800 * 1_000_000_000;

fn telemetry_time(line: &Line) -> UnixNanos {
    let sane = |t: &UnixNanos| *t < LATEST_TIME;
    match line {
        Line::Traces(r) => r
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.end_time_unix_nano)
            .filter(sane)
            .max()
            .unwrap_or(0),
        Line::Metrics(r) => {
            use opentelemetry_proto::tonic::metrics::v1::metric::Data;
            r.resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .filter_map(|m| match &m.data {
                    Some(Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| p.time_unix_nano)
                        .filter(sane)
                        .max(),
                    Some(Data::ExponentialHistogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| p.time_unix_nano)
                        .filter(sane)
                        .max(),
                    Some(Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .map(|p| p.time_unix_nano)
                        .filter(sane)
                        .max(),
                    Some(Data::Gauge(g)) => g
                        .data_points
                        .iter()
                        .map(|p| p.time_unix_nano)
                        .filter(sane)
                        .max(),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        }
    }
}

/// A line as read (numbered from 0) and as decoded: an I/O error, a blank
/// line (None), or a request or the reason it is not one.
type Numbered<T> = (usize, T);
type Decoded = Result<Option<Result<Line, String>>, ReplayError>;

/// Lines decoded this many at a time, in parallel, then applied in order.
const CHUNK: usize = 32;

/// The input's lines, numbered from 0 and decoded (None for blank lines).
/// Decoding JSON is nearly all of a replay's work, so each chunk of lines
/// is decoded on two threads; the results keep the input's order, so the
/// output stays deterministic.
fn decoded(input: impl BufRead) -> impl Iterator<Item = Numbered<Decoded>> {
    let mut lines = input.lines().enumerate();
    std::iter::from_fn(move || {
        let chunk: Vec<Numbered<std::io::Result<String>>> = lines.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            return None;
        }
        let decode = |part: &[Numbered<std::io::Result<String>>]| -> Vec<Numbered<Decoded>> {
            part.iter()
                .map(|(n, line)| {
                    let out = match line {
                        Err(e) => Err(ReplayError::Read(std::io::Error::new(
                            e.kind(),
                            e.to_string(),
                        ))),
                        Ok(l) if l.trim().is_empty() => Ok(None),
                        Ok(l) => Ok(Some(parse(l))),
                    };
                    (*n, out)
                })
                .collect()
        };
        let (first, second) = chunk.split_at(chunk.len() / 2);
        let mut out = std::thread::scope(|scope| {
            let other = scope.spawn(|| decode(first));
            let mine = decode(second);
            let mut all = other
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            all.extend(mine);
            all
        });
        out.reverse();
        Some(std::iter::from_fn(move || out.pop()))
    })
    .flatten()
}

/// Replays `input` into a fresh engine, writing verdict lines to `out`.
pub fn replay(
    config: Config,
    input: impl BufRead,
    mut out: impl Write,
    every_tick: bool,
) -> Result<Summary, ReplayError> {
    let tick = config.judge.tick.as_nanos() as u64;
    let mut app: Option<App> = None;
    let mut config = Some(config);
    let mut next_tick: UnixNanos = 0;
    let mut now: UnixNanos = 0;
    let mut summary = Summary::default();

    let emit = |app: &App,
                at: UnixNanos,
                out: &mut dyn Write,
                summary: &mut Summary|
     -> Result<(), ReplayError> {
        let changed = app.tick(at);
        app.expire(at);
        let lines: Vec<verdict::Verdict> = if every_tick {
            app.read(|store| verdict::list(store, &Filter::default(), at))
        } else {
            app.verdicts_of(&changed, at)
        };
        for v in lines {
            serde_json::to_writer(&mut *out, &v).map_err(|e| ReplayError::Write(e.into()))?;
            out.write_all(b"\n").map_err(ReplayError::Write)?;
            summary.verdicts_printed += 1;
        }
        Ok(())
    };

    for (n, parsed) in decoded(input) {
        let parsed = parsed?;
        let Some(parsed) = parsed else {
            continue;
        };
        summary.lines += 1;
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                summary.skipped += 1;
                summary
                    .first_problem
                    .get_or_insert_with(|| format!("line {}: {e}", n + 1));
                continue;
            }
        };
        let t = telemetry_time(&parsed).max(now);
        let app = app.get_or_insert_with(|| {
            next_tick = t + tick;
            App::new(config.take().unwrap_or_default(), t.saturating_sub(1))
        });
        while next_tick <= t {
            emit(app, next_tick, &mut out, &mut summary)?;
            next_tick += tick;
        }
        now = t;
        let outcome = match &parsed {
            Line::Traces(r) => app.ingest_traces(r, Transport::Replay, now),
            Line::Metrics(r) => {
                app.ingest_metrics(r, Transport::Replay, now, None, Sender::Unknown)
            }
        };
        if outcome.rejected > 0 {
            summary
                .first_problem
                .get_or_insert_with(|| format!("line {}: {}", n + 1, outcome.message));
        }
    }
    if let Some(app) = &app {
        emit(app, next_tick, &mut out, &mut summary)?;
    }
    out.flush().map_err(ReplayError::Write)?;
    Ok(summary)
}
