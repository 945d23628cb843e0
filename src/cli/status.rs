//! `release-verdict status [ID]`: the releases in flight, one line each, or
//! one release's story (verdict, reason, baseline, then its checks,
//! endpoints, new error kinds and exemplars as aligned tables), and who
//! sends what (`--senders`, or when nothing is in flight). For a person at
//! a terminal and for CI logs: colour on a TTY only, never in a pipe;
//! `--output json` prints the API's object as it came. The gate prints the
//! same story when it ends (`render_release`). Pure rendering over the
//! JSON API's objects, read leniently, inside one request or two.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::exit;

/// The verdict object, as much as the story tells.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Release {
    pub service: String,
    pub environment: String,
    pub deployment_id: String,
    pub git_sha: Option<String>,
    pub role: Option<String>,
    pub baseline: Option<Baseline>,
    pub verdict: String,
    pub reason: String,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub changed_at: String,
    pub canary: Totals,
    pub checks: Vec<Check>,
    pub endpoints: Vec<Endpoint>,
    pub new_errors: Vec<ErrorKind>,
    /// Each kind of failure tested against the baseline.
    pub error_kinds: Vec<KindTest>,
    pub decision_eta_seconds: Option<u64>,
    /// False when the daemon no longer tracks it (answered from the ledger).
    pub live: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Baseline {
    pub deployment_id: String,
    pub git_sha: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub chosen_by: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Check {
    pub name: String,
    pub result: String,
    pub critical: bool,
    pub canary: Cohort,
    pub baseline: Option<Cohort>,
    /// The evidence in words.
    pub evidence: String,
    pub detail: String,
    pub exemplars: Vec<Exemplar>,
}

/// A cohort's numbers: which are present depends on the check.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Cohort {
    pub requests: u64,
    pub errors: Option<u64>,
    pub error_ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub per_request: Option<f64>,
    pub median: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    pub name: String,
    pub result: String,
    pub canary: Cohort,
    pub baseline: Cohort,
    pub evidence: String,
    pub detail: String,
}

/// A kind of failure, tested against the baseline's rate of it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KindTest {
    pub kind: String,
    pub result: String,
    pub canary: Cohort,
    pub baseline: Cohort,
    pub evidence: String,
    pub first_trace: Option<Exemplar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorKind {
    pub kind: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Exemplar {
    pub trace_id: String,
    pub span_id: String,
    /// Latency, ms.
    pub value: f64,
    pub failed: bool,
    pub endpoint: Option<String>,
    pub url: Option<String>,
}

/// `GET /api/v1/releases`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Listing {
    pub releases: Vec<Release>,
}

/// `GET /api/v1/senders`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SendersBody {
    pub release_keys: Vec<String>,
    pub senders: Vec<Sender>,
    pub other_services: Option<Sender>,
    pub grpc_port_http1: WrongPort,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Sender {
    pub service: String,
    pub spans: Counts,
    pub points: Counts,
    pub missing: Option<String>,
    pub last_seen_at: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub attributed: u64,
    pub unattributed: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WrongPort {
    pub requests: u64,
    pub last_user_agent: Option<String>,
}

/// How text is painted: ANSI colours on a terminal, plain elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    pub color: bool,
}

impl Paint {
    /// Colour when `to_tty` and `NO_COLOR` is unset (no-color.org).
    pub fn for_terminal(to_tty: bool) -> Self {
        Paint {
            color: to_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn code(word: &str) -> Option<&'static str> {
        match word {
            "green" | "pass" => Some("32"),
            "yellow" | "marginal" => Some("33"),
            "red" | "fail" => Some("31"),
            "nodata" => Some("2"),
            _ => None,
        }
    }

    /// `text` padded to `width` characters, coloured by `word` (a verdict
    /// or a check result). The padding stays outside the colour, so the
    /// columns line up either way.
    fn word(self, word: &str, text: &str, width: usize) -> String {
        let pad = " ".repeat(width.saturating_sub(text.chars().count()));
        match Self::code(word).filter(|_| self.color) {
            Some(code) => format!("\x1b[{code}m{text}\x1b[0m{pad}"),
            None => format!("{text}{pad}"),
        }
    }

    fn bold(self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// A table cell: its text, and the word that colours it (if any).
struct Cell {
    text: String,
    word: Option<String>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, word: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::from(text.to_string())
    }
}

/// A cell coloured by its own word (a verdict or a result).
fn colored(word: &str) -> Cell {
    Cell {
        text: word.to_string(),
        word: Some(word.to_string()),
    }
}

/// Aligned columns, two spaces apart, indented by `indent`; the last
/// column is not padded (a long reason runs on).
fn table(out: &mut String, indent: &str, head: &[&str], rows: Vec<Vec<Cell>>, paint: Paint) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.text.chars().count());
        }
    }
    let last = head.len().saturating_sub(1);
    let line = |out: &mut String, cells: Vec<String>| {
        let joined = cells.join("  ");
        let _ = writeln!(out, "{indent}{}", joined.trim_end());
    };
    let header = head
        .iter()
        .enumerate()
        .map(|(i, h)| match i == last {
            true => h.to_string(),
            false => format!("{h:<w$}", w = widths[i]),
        })
        .collect();
    line(out, header);
    for row in rows {
        let cells = row
            .into_iter()
            .enumerate()
            .map(|(i, cell)| {
                let width = if i == last { 0 } else { widths[i] };
                match &cell.word {
                    Some(word) => paint.word(word, &cell.text, width),
                    None => format!("{:<width$}", cell.text),
                }
            })
            .collect();
        line(out, cells);
    }
}

/// A duration as people say it: 42s, 3m, 2h, 4d.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// How long before `now` an RFC 3339 time of the API was ("?" if unreadable).
fn ago(time: &str, now: SystemTime) -> String {
    humantime::parse_rfc3339_weak(time.trim_end_matches('Z'))
        .ok()
        .map(|t| age(now.duration_since(t).unwrap_or_default()))
        .unwrap_or_else(|| "?".into())
}

/// A short commit: 10 characters, as the page shows it.
fn short_sha(sha: Option<&str>) -> String {
    sha.map(|s| s.chars().take(10).collect())
        .unwrap_or_else(|| "-".into())
}

fn percent(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

/// A cohort's numbers in one cell, by what the check measured.
fn cohort(c: &Cohort) -> String {
    if let (Some(errors), Some(ratio)) = (c.errors, c.error_ratio) {
        let failed = format!("{errors} of {} failed ({})", c.requests, percent(ratio));
        return match c.p95_ms {
            Some(p95) => format!("{failed}, p95 {p95:.1} ms"),
            None => failed,
        };
    }
    if c.p50_ms.is_some() || c.p95_ms.is_some() {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        return format!(
            "p50 {} / p95 {} / p99 {} ms of {}",
            ms(c.p50_ms),
            ms(c.p95_ms),
            ms(c.p99_ms),
            c.requests
        );
    }
    if let Some(m) = c.median {
        return format!("median {m} of {}", c.requests);
    }
    if let Some(p) = c.per_request {
        return format!("{p} per request of {}", c.requests);
    }
    format!("{} requests", c.requests)
}

/// One line per release in flight.
pub fn render_list(releases: &[Release], now: SystemTime, paint: Paint) -> String {
    let mut out = String::new();
    if releases.is_empty() {
        out.push_str("No release in flight.\n");
        return out;
    }
    let rows = releases
        .iter()
        .map(|r| {
            vec![
                colored(&r.verdict),
                r.service.as_str().into(),
                r.environment.as_str().into(),
                r.deployment_id.as_str().into(),
                short_sha(r.git_sha.as_deref()).into(),
                ago(&r.first_seen_at, now).into(),
                r.reason.as_str().into(),
            ]
        })
        .collect();
    table(
        &mut out,
        "",
        &[
            "VERDICT",
            "SERVICE",
            "ENVIRONMENT",
            "DEPLOYMENT",
            "SHA",
            "AGE",
            "REASON",
        ],
        rows,
        paint,
    );
    out
}

/// One release's story: the verdict and its reason, the baseline, then
/// the checks, endpoints, new error kinds and exemplars, as tables.
pub fn render_release(r: &Release, now: SystemTime, paint: Paint) -> String {
    let mut out = String::new();
    let env = if r.environment.is_empty() {
        String::new()
    } else {
        format!(" in {}", r.environment)
    };
    let _ = writeln!(
        out,
        "{} {} of {}{env} (git {}){}",
        paint.word(&r.verdict, &r.verdict.to_uppercase(), 0),
        paint.bold(&r.deployment_id),
        r.service,
        short_sha(r.git_sha.as_deref()),
        match r.live {
            Some(false) => ", no longer tracked: its last verdict",
            _ => "",
        }
    );
    let _ = writeln!(out, "  {}", r.reason);
    if let (Some(eta), "yellow") = (r.decision_eta_seconds, r.verdict.as_str()) {
        let _ = writeln!(
            out,
            "  a decision in about {} at the current traffic",
            age(Duration::from_secs(eta))
        );
    }
    let _ = writeln!(
        out,
        "  canary:   {} requests, {} failed; first seen {} ago, last {} ago",
        r.canary.requests,
        r.canary.errors,
        ago(&r.first_seen_at, now),
        ago(&r.last_seen_at, now)
    );
    match &r.baseline {
        Some(b) => {
            let _ = writeln!(
                out,
                "  baseline: {} (git {}), {} requests, {} failed; chosen by {}",
                b.deployment_id,
                short_sha(b.git_sha.as_deref()),
                b.requests,
                b.errors,
                b.chosen_by
            );
        }
        None => out.push_str("  baseline: none yet\n"),
    }
    if !r.checks.is_empty() {
        out.push_str("\nChecks\n");
        let rows = r
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.as_str().into(),
                    colored(&c.result),
                    cohort(&c.canary).into(),
                    c.baseline.as_ref().map_or("-".into(), cohort).into(),
                    c.evidence.as_str().into(),
                ]
            })
            .collect();
        let head = ["CHECK", "RESULT", "CANARY", "BASELINE", "EVIDENCE"];
        table(&mut out, "  ", &head, rows, paint);
    }
    if !r.endpoints.is_empty() {
        out.push_str("\nEndpoints, worst first\n");
        let rows = r
            .endpoints
            .iter()
            .map(|e| {
                vec![
                    e.name.as_str().into(),
                    colored(&e.result),
                    cohort(&e.canary).into(),
                    cohort(&e.baseline).into(),
                    e.evidence.as_str().into(),
                ]
            })
            .collect();
        let head = ["ENDPOINT", "RESULT", "CANARY", "BASELINE", "EVIDENCE"];
        table(&mut out, "  ", &head, rows, paint);
    }
    if !r.error_kinds.is_empty() {
        out.push_str("\nError kinds, worst first\n");
        let rows = r
            .error_kinds
            .iter()
            .map(|k| {
                let new = k.baseline.errors == Some(0);
                vec![
                    if new {
                        format!("{} (new)", k.kind)
                    } else {
                        k.kind.clone()
                    }
                    .into(),
                    colored(&k.result),
                    cohort(&k.canary).into(),
                    cohort(&k.baseline).into(),
                    k.evidence.as_str().into(),
                    k.first_trace
                        .as_ref()
                        .map_or("-", |t| t.url.as_deref().unwrap_or(&t.trace_id))
                        .into(),
                ]
            })
            .collect();
        let head = [
            "KIND",
            "RESULT",
            "CANARY",
            "BASELINE",
            "EVIDENCE",
            "FIRST TRACE",
        ];
        table(&mut out, "  ", &head, rows, paint);
    } else if !r.new_errors.is_empty() {
        out.push_str("\nNew error kinds (the baseline has not shown them)\n");
        let rows = r
            .new_errors
            .iter()
            .map(|k| vec![k.count.to_string().into(), k.kind.as_str().into()])
            .collect();
        table(&mut out, "  ", &["COUNT", "KIND"], rows, paint);
    }
    let exemplars: Vec<_> = r
        .checks
        .iter()
        .flat_map(|c| c.exemplars.iter().map(move |e| (c, e)))
        .collect();
    if !exemplars.is_empty() {
        out.push_str("\nExemplars\n");
        let rows = exemplars
            .into_iter()
            .map(|(c, e)| {
                vec![
                    c.name.as_str().into(),
                    e.trace_id.as_str().into(),
                    e.span_id.as_str().into(),
                    format!("{:.1}", e.value).into(),
                    if e.failed { "failed" } else { "ok" }.into(),
                    e.endpoint.as_deref().unwrap_or("-").into(),
                    e.url.as_deref().unwrap_or("").into(),
                ]
            })
            .collect();
        let head = [
            "CHECK", "TRACE", "SPAN", "MS", "OUTCOME", "ENDPOINT", "LINK",
        ];
        table(&mut out, "  ", &head, rows, paint);
    }
    out
}

/// Who sends what, and why items are not judged.
pub fn render_senders(s: &SendersBody, now: SystemTime, paint: Paint) -> String {
    let mut out = String::new();
    let keys = if s.release_keys.is_empty() {
        "deployment.id".to_string()
    } else {
        s.release_keys.join(" or ")
    };
    let w = &s.grpc_port_http1;
    if s.senders.is_empty() && s.other_services.is_none() {
        out.push_str("Senders: nothing has arrived since the daemon started.\n");
    } else {
        out.push_str("Senders since the daemon started (items with a release id are judged)\n");
        let rows = s
            .senders
            .iter()
            .chain(&s.other_services)
            .map(|x| {
                vec![
                    x.service.as_str().into(),
                    x.spans.attributed.to_string().into(),
                    x.spans.unattributed.to_string().into(),
                    x.points.attributed.to_string().into(),
                    x.points.unattributed.to_string().into(),
                    format!("{} ago", ago(&x.last_seen_at, now)).into(),
                    match &x.missing {
                        Some(m) => format!("no {m}"),
                        None => String::new(),
                    }
                    .into(),
                ]
            })
            .collect();
        let head = [
            "SERVICE",
            "SPANS WITH ID",
            "WITHOUT",
            "POINTS WITH ID",
            "WITHOUT",
            "LAST SEEN",
            "NOT JUDGED BECAUSE",
        ];
        table(&mut out, "  ", &head, rows, paint);
    }
    let unattributed: Vec<&str> = s
        .senders
        .iter()
        .filter(|x| x.missing.is_some())
        .map(|x| x.service.as_str())
        .collect();
    if !unattributed.is_empty() {
        let _ = writeln!(
            out,
            "\n{} sent telemetry without {keys}: it is counted and ignored. Set it on the resource, e.g.\n  OTEL_RESOURCE_ATTRIBUTES=\"{}=<release>,deployment.environment.name=<env>\"",
            unattributed.join(", "),
            s.release_keys.first().map_or("deployment.id", String::as_str),
        );
    }
    if w.requests > 0 {
        let _ = writeln!(
            out,
            "\n{} HTTP/1.1 request(s) reached the OTLP/gRPC port{} and were refused: an OTLP/HTTP exporter\n\
             is pointed at the gRPC port. Send it to the HTTP port (4318 by default), or set\n  OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
            w.requests,
            w.last_user_agent
                .as_deref()
                .map(|ua| format!(" (last from {ua})"))
                .unwrap_or_default(),
        );
    }
    if s.senders.is_empty() && s.other_services.is_none() && w.requests == 0 {
        out.push_str(
            "\nPoint the SDK at the daemon, by protocol:\n  \
             OTEL_EXPORTER_OTLP_PROTOCOL=grpc           OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:4317\n  \
             OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf  OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:4318\n\
             Metrics arrive every OTEL_METRIC_EXPORT_INTERVAL (60000 ms by default): set 5000 to see them sooner.\n",
        );
    }
    out
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned tables for a person or a CI log.
    Text,
    /// The API's JSON object, as it came.
    Json,
}

/// The command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One release (its `deployment.id`): its checks, endpoints, error
    /// kinds and exemplars. Without it, every release in flight.
    id: Option<String>,
    /// The daemon's HTTP address (the OTLP/HTTP port).
    #[arg(
        long,
        env = "RELEASE_VERDICT_SERVER",
        default_value = "http://localhost:4318"
    )]
    server: String,
    /// Only this service's releases.
    #[arg(long)]
    service: Option<String>,
    /// Only this environment's releases.
    #[arg(long)]
    environment: Option<String>,
    /// Who has sent what, attributed to a release or not, and why not
    /// (shown anyway when no release is in flight).
    #[arg(long)]
    senders: bool,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// A read token, when the daemon asks for one ([auth] read_tokens_file).
    #[arg(long, env = "RELEASE_VERDICT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificates (PEM) to trust for an https:// server with a private CA.
    #[arg(long, env = "RELEASE_VERDICT_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
}

/// One request's outcome: the body of a 200, or what to print and exit with.
type Fetched = Result<bytes::Bytes, (String, u8)>;

/// A request to the JSON API.
async fn get(client: &reqwest::Client, url: Url) -> Fetched {
    let unavailable = |m: String| (m, exit::UNAVAILABLE);
    let response = client
        .get(url.clone())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| unavailable(release_verdict::client::describe(&e, &url)))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| unavailable(release_verdict::client::describe(&e, &url)))?;
    if status == StatusCode::OK {
        return Ok(body);
    }
    let error = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{url}: the server answered {status}"));
    Err(match status {
        StatusCode::CONFLICT => (error, exit::AMBIGUOUS),
        _ => unavailable(error),
    })
}

/// The `status` command.
pub fn main(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("release-verdict status: cannot start: {e}");
            return ExitCode::from(exit::UNAVAILABLE);
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err((message, code)) => {
            eprintln!("release-verdict status: {message}");
            ExitCode::from(code)
        }
    }
}

/// What to print, or why not and the exit code.
async fn run(args: &Args) -> Result<String, (String, u8)> {
    let usage = |e: String| (e, exit::USAGE);
    let client = release_verdict::client::http(args.token.as_deref(), args.ca_file.as_deref())
        .map_err(usage)?
        .build()
        .map_err(|e| usage(e.to_string()))?;
    let mut query = Vec::new();
    if let Some(s) = &args.service {
        query.push(("service", s.as_str()));
    }
    if let Some(e) = &args.environment {
        query.push(("environment", e.as_str()));
    }
    let url = |segments: &[&str], query: &[(&str, &str)]| {
        release_verdict::client::api_url(&args.server, segments, query)
            .map_err(|e| usage(e.to_string()))
    };
    let senders_url = url(&["api", "v1", "senders"], &[])?;
    let json = args.output == Output::Json;
    let now = SystemTime::now();
    let paint = Paint::for_terminal(!json && std::io::stdout().is_terminal());
    let mut out = String::new();
    if let Some(id) = &args.id {
        let body = get(&client, url(&["api", "v1", "releases", id], &query)?).await?;
        if json {
            return Ok(json_line(&body));
        }
        let release: Release = parse(&body)?;
        out.push_str(&render_release(&release, now, paint));
    } else if json && args.senders {
        return Ok(json_line(&get(&client, senders_url).await?));
    } else {
        let body = get(&client, url(&["api", "v1", "releases"], &query)?).await?;
        if json {
            return Ok(json_line(&body));
        }
        let listing: Listing = parse(&body)?;
        out.push_str(&render_list(&listing.releases, now, paint));
        if listing.releases.is_empty() && !args.senders {
            out.push('\n');
            let senders: SendersBody = parse(&get(&client, senders_url.clone()).await?)?;
            out.push_str(&render_senders(&senders, now, paint));
        }
    }
    if args.senders && !json {
        out.push('\n');
        let senders: SendersBody = parse(&get(&client, senders_url).await?)?;
        out.push_str(&render_senders(&senders, now, paint));
    }
    Ok(out)
}

fn json_line(body: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(body).into_owned();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn parse<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, (String, u8)> {
    serde_json::from_slice(body)
        .map_err(|e| (format!("not the API's JSON: {e}"), exit::UNAVAILABLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Paint = Paint { color: false };

    fn release() -> Release {
        serde_json::from_str(
            r#"{"service":"checkout","environment":"prod","deployment_id":"checkout-2b5d9af",
            "git_sha":"2b5d9af0c1d2e3f","verdict":"red","reason":"errors up; roll back",
            "baseline":{"deployment_id":"checkout-1a2b3c4","git_sha":null,"requests":900,"errors":1,"chosen_by":"traffic"},
            "first_seen_at":"2026-01-01T00:00:00.000Z","last_seen_at":"2026-01-01T00:02:00.000Z",
            "canary":{"requests":100,"errors":20},
            "checks":[{"name":"error_ratio","result":"fail","critical":true,
              "canary":{"requests":100,"errors":20,"error_ratio":0.2},
              "baseline":{"requests":900,"errors":1,"error_ratio":0.0011},
              "detail":"the canary fails more often",
              "exemplars":[{"trace_id":"ab","span_id":"cd","value":12.5,"failed":true,"endpoint":"GET /"}]},
              {"name":"latency","result":"pass","canary":{"requests":100,"p50_ms":5.0,"p95_ms":9.0,"p99_ms":12.0},
               "detail":"fine","exemplars":[]}],
            "endpoints":[],"new_errors":[{"kind":"TimeoutError","count":7}],"some_new_field":1}"#,
        )
        .unwrap()
    }

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn one_release_tells_its_story_in_aligned_tables() {
        let text = render_release(&release(), at("2026-01-01T00:03:00Z"), PLAIN);
        assert!(
            text.starts_with("RED checkout-2b5d9af of checkout in prod (git 2b5d9af0c1)\n"),
            "{text}"
        );
        assert!(text.contains("first seen 3m ago, last 1m ago"), "{text}");
        assert!(text.contains("  CHECK        RESULT  CANARY"), "{text}");
        assert!(
            text.contains("  error_ratio  fail    20 of 100 failed (20.00%)"),
            "{text}"
        );
        assert!(
            text.contains("  latency      pass    p50 5.0 / p95 9.0 / p99 12.0 ms of 100"),
            "{text}"
        );
        assert!(text.contains("  7      TimeoutError"), "{text}");
        assert!(
            text.contains("  error_ratio  ab     cd    12.5  failed   GET /"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "no colour off a terminal");
        assert!(!text.contains("Endpoints"), "empty tables are left out");
    }

    #[test]
    fn colour_wraps_the_word_not_the_padding() {
        let paint = Paint { color: true };
        let text = render_list(&[release()], at("2026-01-01T00:03:00Z"), paint);
        let row = text.lines().nth(1).unwrap();
        assert!(
            row.starts_with("\x1b[31mred\x1b[0m      checkout"),
            "{row:?}"
        );
    }

    #[test]
    fn the_list_is_one_line_a_release() {
        let mut yellow = release();
        yellow.verdict = "yellow".into();
        yellow.deployment_id = "web-1".into();
        yellow.service = "web".into();
        let text = render_list(&[release(), yellow], at("2026-01-01T00:00:42Z"), PLAIN);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "VERDICT  SERVICE   ENVIRONMENT  DEPLOYMENT        SHA         AGE  REASON"
        );
        assert!(
            lines[2].starts_with(
                "yellow   web       prod         web-1             2b5d9af0c1  42s  errors up"
            ),
            "{text}"
        );
        assert_eq!(
            render_list(&[], SystemTime::now(), PLAIN),
            "No release in flight.\n"
        );
    }

    #[test]
    fn senders_say_what_is_missing_and_the_wrong_port() {
        let body: SendersBody = serde_json::from_str(
            r#"{"release_keys":["deployment.id"],"senders":[
              {"service":"web","spans":{"attributed":0,"unattributed":5},"points":{"attributed":0,"unattributed":0},
               "missing":"deployment.id","last_seen_at":"2026-01-01T00:00:00.000Z"}],
              "other_services":null,"grpc_port_http1":{"requests":2,"last_user_agent":"OTel-OTLP-Exporter-JavaScript/0.200.0"}}"#,
        )
        .unwrap();
        let text = render_senders(&body, at("2026-01-01T00:00:05Z"), PLAIN);
        assert!(text.contains("  web      0              5        0               0        5s ago     no deployment.id"), "{text}");
        assert!(
            text.contains("web sent telemetry without deployment.id"),
            "{text}"
        );
        assert!(text.contains("2 HTTP/1.1 request(s) reached the OTLP/gRPC port (last from OTel-OTLP-Exporter-JavaScript/0.200.0)"), "{text}");
        let empty = render_senders(&SendersBody::default(), SystemTime::now(), PLAIN);
        assert!(empty.contains("nothing has arrived"), "{empty}");
        assert!(empty.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf  OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:4318"), "{empty}");
    }
}
