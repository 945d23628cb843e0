//! Daemon configuration: plain serde data read from TOML, with defaults and one
//! `validate()` that reports every problem at once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::model::SpanKindFilter;

mod checks;
mod notify;

pub use checks::{
    ChecksConfig, Direction, EndpointsCheck, ErrorRatioCheck, Guardrails, JudgeConfig,
    LatencyCheck, MetricCheck,
};
pub use notify::{NotifyConfig, SinkConfig, SinkKind};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen addresses, request limits and shutdown.
    pub server: ServerConfig,
    /// Which attribute keys say which release a signal belongs to.
    pub identity: IdentityConfig,
    /// Which spans and metrics feed the built-in signals.
    pub ingest: IngestConfig,
    /// Bounds on tracked releases and metric streams.
    pub limits: LimitsConfig,
    /// How a release's baseline is chosen when no role is declared.
    pub baseline: BaselineConfig,
    /// The release ledger: events, last verdicts, the judge's checkpoint.
    pub ledger: LedgerConfig,
    /// Bearer tokens by scope.
    pub auth: AuthConfig,
    /// Where the ledger's events are sent: Slack, webhooks, Grafana.
    pub notify: NotifyConfig,
    /// The daemon's own logs and traces.
    pub telemetry: TelemetryConfig,
    /// How often and how strictly releases are judged.
    pub judge: JudgeConfig,
    /// What is compared, and the tolerances.
    pub checks: ChecksConfig,
}

/// Listen addresses, request limits and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// OTLP/gRPC (and, later, the verdict gRPC service). Port 0 picks a free port.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP, the JSON API, health and metrics. Port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// Largest accepted request, measured after decompression, in bytes.
    pub max_request_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Export requests processed at once; beyond it, requests are refused
    /// with an answer OTLP clients retry (gRPC UNAVAILABLE, HTTP 503 with
    /// Retry-After), so memory stays bounded under overload.
    pub max_inflight_requests: usize,
    /// What clients are told to wait before retrying an overload refusal.
    #[serde(with = "humantime_serde")]
    pub overload_retry_after: Duration,
    /// OTLP/HTTP bodies are read in full before an in-flight place is
    /// taken; one that takes longer is refused (408), so slow senders cost
    /// a connection, never the places of others.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Bytes of OTLP/HTTP bodies held while they are read; past it a body
    /// is refused with an answer clients retry (503). At least
    /// `max_request_bytes`.
    pub max_buffered_bytes: usize,
    /// TLS on both ports (off while `cert_file` is empty).
    pub tls: TlsConfig,
}

/// TLS on both ports, with rustls. The files are PEM; they are read again
/// when they change (looked at every `reload_interval`) or on SIGHUP, so a
/// renewed certificate needs no restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, leaf first. Empty: plain TCP.
    pub cert_file: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CA certificates for mutual TLS: when set, every client must present a
    /// certificate signed by one of them.
    pub client_ca_file: String,
    /// How often the files are looked at for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// A TLS handshake not finished in this time costs its connection.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 4317)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 4318)),
            max_request_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            max_inflight_requests: 64,
            overload_retry_after: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(10),
            max_buffered_bytes: 256 * 1024 * 1024,
            tls: TlsConfig::default(),
        }
    }
}

/// Attribute keys, looked up on the span or data point first, then on its
/// resource. Where a list is given, the first key present wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The release id.
    pub release_keys: Vec<String>,
    /// The commit.
    pub commit_keys: Vec<String>,
    /// The service.
    pub service_keys: Vec<String>,
    /// The environment.
    pub environment_keys: Vec<String>,
    /// The optional cohort role: `canary`, `baseline` or `stable`.
    pub role_keys: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect();
        Self {
            release_keys: keys(&["deployment.id"]),
            commit_keys: keys(&["git.sha", "vcs.ref.head.revision"]),
            service_keys: keys(&["service.name"]),
            environment_keys: keys(&[
                "deployment.environment.name",
                "deployment.environment",
                "service.env",
            ]),
            role_keys: keys(&["deployment.role"]),
        }
    }
}

/// Which spans and metrics feed the built-in request, error and latency signals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Span kinds that count as requests: any of `server`, `consumer`,
    /// `client`, `producer`, `internal`.
    pub span_kinds: Vec<String>,
    /// Request-duration histograms read from metrics-only services, each
    /// with the unit assumed when the metric does not say its own. Both
    /// HTTP conventions by default: the stable one, and the older one the
    /// Python and Node instrumentations still export unless told
    /// `OTEL_SEMCONV_STABILITY_OPT_IN=http`; likewise for gRPC.
    pub duration_metrics: Vec<DurationMetric>,
    /// Attributes holding an HTTP status code: 5xx is a server error.
    pub http_status_keys: Vec<String>,
    /// Attributes holding a gRPC status code (number or name): UNKNOWN,
    /// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
    /// DATA_LOSS are server errors.
    pub grpc_status_keys: Vec<String>,
}

/// A request-duration histogram and its default unit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationMetric {
    pub name: String,
    /// `s`, `ms`, `us` or `ns`; the metric's own unit wins when it has one.
    pub unit: String,
}

impl DurationMetric {
    fn new(name: &str, unit: &str) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect();
        Self {
            span_kinds: vec!["server".into(), "consumer".into()],
            duration_metrics: vec![
                DurationMetric::new("http.server.request.duration", "s"),
                DurationMetric::new("http.server.duration", "ms"),
                DurationMetric::new("rpc.server.call.duration", "s"),
                DurationMetric::new("rpc.server.duration", "ms"),
            ],
            http_status_keys: keys(&["http.response.status_code", "http.status_code"]),
            grpc_status_keys: keys(&["rpc.grpc.status_code", "rpc.response.status_code"]),
        }
    }
}

impl IngestConfig {
    /// The span kinds as a filter; only valid after `Config::validate`.
    pub fn span_kind_filter(&self) -> SpanKindFilter {
        SpanKindFilter::parse(&self.span_kinds).unwrap_or_default()
    }

    /// Whether `metric` is one of the request-duration histograms.
    pub fn is_duration_metric(&self, metric: &str) -> bool {
        self.duration_metrics.iter().any(|d| d.name == metric)
    }
}

/// How the baseline of each service and environment is chosen when no
/// deployment declares its role (see docs/design.md, "The baseline").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// A service's traffic is watched this long before its baseline is
    /// chosen by traffic share, so who exported first does not matter. At
    /// least the exporters' interval (traces: 5s by default).
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// The deployment serving the most requests over the rolling window
    /// becomes the baseline if it serves at least this many times as many
    /// as the next; else the baseline is ambiguous until a role is set.
    pub lead: f64,
    /// A baseline that sends nothing for this long is given up (removed,
    /// or promoted away), and the baseline is chosen again.
    #[serde(with = "humantime_serde")]
    pub quiet: Duration,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(10),
            lead: 1.5,
            quiet: Duration::from_secs(120),
        }
    }
}

/// The release ledger (SQLite): every release's events, its last verdict,
/// and the judge's checkpoint, so a restart forgets nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The database file, created with its directory on start (relative to
    /// the working directory); `:memory:` keeps it in memory only; empty
    /// turns the ledger off.
    pub path: String,
    /// How often the judge's state is checkpointed: what a `kill -9` can
    /// lose at most (a SIGTERM loses nothing).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Events older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// The database's size cap in bytes; past it the oldest events go.
    pub max_bytes: u64,
    /// The trailing window of the `release_verdict_dora_*` gauges, and the
    /// default window of `/api/v1/dora`.
    #[serde(with = "humantime_serde")]
    pub dora_window: Duration,
    /// How often the DORA gauges are computed again.
    #[serde(with = "humantime_serde")]
    pub dora_refresh: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            path: "data/ledger.db".into(),
            checkpoint_interval: Duration::from_secs(5),
            retention: Duration::from_secs(400 * 86_400),
            max_bytes: 1 << 30,
            dora_window: Duration::from_secs(30 * 86_400),
            dora_refresh: Duration::from_secs(60),
        }
    }
}

/// Bearer tokens by scope, one per line in each file (`#` starts a
/// comment). A scope without a file is open to anyone who reaches the port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens that may send telemetry (OTLP over gRPC and HTTP).
    pub ingest_tokens_file: String,
    /// Tokens that may read verdicts, events, DORA and `/metrics`.
    pub read_tokens_file: String,
    /// Tokens that may post ledger events.
    pub write_tokens_file: String,
}

/// Bounds that keep memory finite whatever the input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most releases tracked at once; telemetry of further new releases is
    /// refused (OTLP partial success) and counted.
    pub max_releases: usize,
    /// Most releases tracked at once for one service (all environments),
    /// so junk ids under one service cannot lock the others out.
    pub max_releases_per_service: usize,
    /// A release not seen for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub release_idle_expiry: Duration,
    /// Most cumulative metric streams remembered for delta conversion.
    pub max_metric_streams: usize,
    /// Most of them for one resource (its attributes, as sent), so one
    /// sender's flood of streams cannot lock the others out.
    pub max_metric_streams_per_resource: usize,
    /// A span lasting longer is refused (partial success naming it): a
    /// request that long is a broken clock or a forged span, not a latency.
    /// At most 1h, the latency histograms' range.
    #[serde(with = "humantime_serde")]
    pub max_span_duration: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_releases: 10_000,
            max_releases_per_service: 100,
            release_idle_expiry: Duration::from_secs(15 * 60),
            max_metric_streams: 100_000,
            max_metric_streams_per_resource: 1000,
            max_span_duration: Duration::from_secs(3600),
        }
    }
}

/// The daemon's own observability.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` or `json` log lines on stderr. Levels come from `RUST_LOG`.
    pub log_format: String,
    /// OTLP/gRPC endpoint for the daemon's own traces, e.g.
    /// `http://127.0.0.1:4317` of a collector. Empty: off.
    pub otlp_endpoint: String,
    /// `service.name` of the daemon's own traces.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "text".into(),
            otlp_endpoint: String::new(),
            service_name: "release-verdict".into(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Every problem at once, so a user fixes the file in one go.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.server.max_buffered_bytes < self.server.max_request_bytes
            || self.server.max_buffered_bytes > u32::MAX as usize
        {
            problems.push(format!(
                "server.max_buffered_bytes must be between server.max_request_bytes ({}) and 4 GiB",
                self.server.max_request_bytes
            ));
        }
        self.notify.validate(&mut problems);
        if !self.notify.sinks.is_empty() && self.ledger.path.is_empty() {
            problems.push(
                "notify.sinks need the ledger (its outbox): set ledger.path, or \":memory:\""
                    .to_string(),
            );
        }
        let tls = &self.server.tls;
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            problems.push("server.tls: cert_file and key_file go together".to_string());
        }
        if !tls.client_ca_file.is_empty() && !tls.enabled() {
            problems.push("server.tls.client_ca_file needs cert_file and key_file".to_string());
        }
        if tls.reload_interval < Duration::from_millis(100) {
            problems.push("server.tls.reload_interval must be at least 100ms".to_string());
        }
        if tls.handshake_timeout < Duration::from_millis(100) {
            problems.push("server.tls.handshake_timeout must be at least 100ms".to_string());
        }
        if self.server.body_read_timeout < Duration::from_millis(100) {
            problems.push("server.body_read_timeout must be at least 100ms".to_string());
        }
        if self.server.max_inflight_requests == 0 {
            problems.push("server.max_inflight_requests must be at least 1".to_string());
        }
        if self.server.max_request_bytes < 1024 {
            problems.push("server.max_request_bytes must be at least 1024".to_string());
        }
        let id = &self.identity;
        for (name, keys) in [
            ("identity.release_keys", &id.release_keys),
            ("identity.service_keys", &id.service_keys),
        ] {
            if keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
                problems.push(format!("{name} must list at least one non-empty key"));
            }
        }
        for (name, keys) in [
            ("identity.commit_keys", &id.commit_keys),
            ("identity.environment_keys", &id.environment_keys),
            ("identity.role_keys", &id.role_keys),
        ] {
            if keys.iter().any(|k| k.is_empty()) {
                problems.push(format!("{name} must not contain an empty key"));
            }
        }
        if let Err(bad) = SpanKindFilter::parse(&self.ingest.span_kinds) {
            problems.push(format!(
                "ingest.span_kinds: unknown kind {bad:?} (expected server, consumer, client, producer or internal)"
            ));
        }
        for (i, d) in self.ingest.duration_metrics.iter().enumerate() {
            if d.name.is_empty() {
                problems.push(format!(
                    "ingest.duration_metrics[{i}].name must not be empty"
                ));
            }
            if !matches!(d.unit.as_str(), "s" | "ms" | "us" | "µs" | "ns") {
                problems.push(format!(
                    "ingest.duration_metrics[{i}] ({:?}): unit must be s, ms, us or ns, not {:?}",
                    d.name, d.unit
                ));
            }
        }
        for (name, keys) in [
            ("ingest.http_status_keys", &self.ingest.http_status_keys),
            ("ingest.grpc_status_keys", &self.ingest.grpc_status_keys),
        ] {
            if keys.iter().any(|k| k.is_empty()) {
                problems.push(format!("{name} must not contain an empty key"));
            }
        }
        let span = self.limits.max_span_duration;
        if span < Duration::from_secs(1) || span > Duration::from_secs(3600) {
            problems.push(format!(
                "limits.max_span_duration must be between 1s and 1h, not {}",
                humantime::format_duration(span)
            ));
        }
        if self.limits.max_releases_per_service == 0 {
            problems.push("limits.max_releases_per_service must be at least 1".to_string());
        }
        if self.ledger.checkpoint_interval < Duration::from_millis(100) {
            problems.push("ledger.checkpoint_interval must be at least 100ms".to_string());
        }
        if self.ledger.max_bytes < 1 << 20 {
            problems.push("ledger.max_bytes must be at least 1 MiB".to_string());
        }
        if self.ledger.dora_window < Duration::from_secs(3600) {
            problems.push("ledger.dora_window must be at least 1h".to_string());
        }
        if self.ledger.dora_refresh < Duration::from_secs(1) {
            problems.push("ledger.dora_refresh must be at least 1s".to_string());
        }
        let b = &self.baseline;
        if !(b.lead.is_finite() && b.lead >= 1.0) {
            problems.push(format!("baseline.lead must be at least 1, not {}", b.lead));
        }
        if b.quiet < Duration::from_secs(1) {
            problems.push("baseline.quiet must be at least 1s".to_string());
        }
        if self.limits.max_releases == 0 {
            problems.push("limits.max_releases must be at least 1".to_string());
        }
        if self.limits.release_idle_expiry < Duration::from_secs(1) {
            problems.push("limits.release_idle_expiry must be at least 1s".to_string());
        }
        if self.limits.max_metric_streams == 0 {
            problems.push("limits.max_metric_streams must be at least 1".to_string());
        }
        if self.limits.max_metric_streams_per_resource == 0 {
            problems.push("limits.max_metric_streams_per_resource must be at least 1".to_string());
        }
        let j = &self.judge;
        if j.tick < Duration::from_millis(10) {
            problems.push("judge.tick must be at least 10ms".to_string());
        }
        if j.window < j.tick || j.window_slots == 0 || j.window_slots > 600 {
            problems.push(
                "judge.window must be at least one tick, with 1 to 600 window_slots".to_string(),
            );
        }
        for (name, c) in [
            ("judge.confidence", j.confidence),
            ("judge.green_confidence", j.green_confidence),
        ] {
            if !(0.5..1.0).contains(&c) {
                problems.push(format!("{name} must be in [0.5, 1), not {c}"));
            }
        }
        if j.epoch < j.tick {
            problems.push("judge.epoch must be at least one tick".to_string());
        }
        let e = &self.checks.error_ratio;
        let l = &self.checks.latency;
        for (name, v) in [
            ("checks.error_ratio.tolerance", e.tolerance),
            ("checks.error_ratio.tolerance_abs", e.tolerance_abs),
            ("checks.error_ratio.pass_bound", e.pass_bound),
            ("checks.error_ratio.pass_bound_abs", e.pass_bound_abs),
            ("checks.error_ratio.weight", e.weight),
            ("checks.latency.tolerance", l.tolerance),
            ("checks.latency.pass_bound", l.pass_bound),
            ("checks.latency.weight", l.weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{name} must be a non-negative number, not {v}"));
            }
        }
        if e.pass_bound < e.tolerance {
            problems
                .push("checks.error_ratio.pass_bound must be at least its tolerance".to_string());
        }
        if l.pass_bound < l.tolerance {
            problems.push("checks.latency.pass_bound must be at least its tolerance".to_string());
        }
        if !(l.pass_tail > 0.0 && l.pass_tail <= 1.0) {
            problems.push(format!(
                "checks.latency.pass_tail must be in (0, 1] (1 turns it off), not {}",
                l.pass_tail
            ));
        }
        if l.quantiles.is_empty() || l.quantiles.iter().any(|q| !(*q > 0.0 && *q < 1.0)) {
            problems.push(
                "checks.latency.quantiles must list quantiles strictly between 0 and 1".to_string(),
            );
        }
        let ep = &self.checks.endpoints;
        if ep.enabled && !(1..=100).contains(&ep.top) {
            problems.push(format!(
                "checks.endpoints.top must be between 1 and 100, not {}",
                ep.top
            ));
        }
        if ep
            .keys
            .iter()
            .any(|k| k.is_empty() || k.split('/').any(str::is_empty))
        {
            problems.push(
                "checks.endpoints.keys must be attribute names, or two joined by one '/'"
                    .to_string(),
            );
        }
        if let Some(t) = &self.judge.trace_url_template {
            if !t.contains("{trace_id}") {
                problems.push(format!(
                    "judge.trace_url_template must contain {{trace_id}}, not {t:?}"
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.checks.metric.iter().enumerate() {
            let at = format!("checks.metric[{i}] ({:?})", m.name);
            if m.name.is_empty() || m.metric.is_empty() {
                problems.push(format!("{at}: name and metric must not be empty"));
            }
            if !names.insert(m.name.as_str())
                || matches!(m.name.as_str(), "error_ratio" | "latency")
            {
                problems.push(format!("{at}: the name is already taken"));
            }
            if self.ingest.is_duration_metric(&m.metric) {
                problems.push(format!(
                    "{at}: {} already feeds the built-in checks",
                    m.metric
                ));
            }
            for (what, v) in [
                ("tolerance", m.tolerance),
                ("tolerance_abs", m.tolerance_abs),
                ("pass_bound", m.pass_bound),
                ("pass_bound_abs", m.pass_bound_abs),
                ("weight", m.weight),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    problems.push(format!(
                        "{at}: {what} must be a non-negative number, not {v}"
                    ));
                }
            }
            if m.direction != Direction::Increase && m.tolerance >= 1.0 {
                problems.push(format!("{at}: a decrease tolerance must be below 1"));
            }
            if m.quantiles.is_empty() || m.quantiles.iter().any(|q| !(*q > 0.0 && *q < 1.0)) {
                problems.push(format!("{at}: quantiles must be strictly between 0 and 1"));
            }
        }
        if self.checks.metric.len() > 64 {
            problems.push("at most 64 [[checks.metric]] are supported".to_string());
        }
        if let Some(r) = self.checks.guardrails.max_error_ratio {
            if !(r > 0.0 && r < 1.0) {
                problems.push(format!(
                    "checks.guardrails.max_error_ratio must be in (0, 1), not {r}"
                ));
            }
        }
        if !matches!(self.telemetry.log_format.as_str(), "text" | "json") {
            problems.push(format!(
                "telemetry.log_format must be \"text\" or \"json\", not {:?}",
                self.telemetry.log_format
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.server.grpc_listen.port(), 4317);
        assert_eq!(c.server.http_listen.port(), 4318);
        assert_eq!(c.limits.max_releases, 10_000);
        assert_eq!(c.limits.release_idle_expiry, Duration::from_secs(900));
        assert_eq!(c.limits.max_metric_streams_per_resource, 1000);
        assert_eq!(c.identity.release_keys, vec!["deployment.id"]);
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../../config.toml");
        Config::from_toml(text).unwrap();
    }

    #[test]
    fn tls_files_parse_and_go_together() {
        let c = Config::from_toml(
            "[server.tls]\ncert_file = \"/etc/rv/cert.pem\"\nkey_file = \"/etc/rv/key.pem\"\nreload_interval = \"30s\"\n",
        )
        .unwrap();
        assert!(c.server.tls.enabled());
        assert_eq!(c.server.tls.reload_interval, Duration::from_secs(30));
        let e = Config::from_toml(
            "[server.tls]\ncert_file = \"/etc/rv/cert.pem\"\nclient_ca_file = \"/etc/rv/ca.pem\"\nhandshake_timeout = \"1ms\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cert_file and key_file go together"), "{e}");
        assert!(e.contains("handshake_timeout"), "{e}");
        let e = Config::from_toml("[server.tls]\nclient_ca_file = \"/etc/rv/ca.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_ca_file needs cert_file"), "{e}");
    }

    #[test]
    fn durations_and_overrides_parse() {
        let c = Config::from_toml(
            "[limits]\nrelease_idle_expiry = \"90s\"\nmax_releases = 5\n[identity]\nrelease_keys = [\"release\"]\n",
        )
        .unwrap();
        assert_eq!(c.limits.release_idle_expiry, Duration::from_secs(90));
        assert_eq!(c.limits.max_releases, 5);
        assert_eq!(c.identity.release_keys, vec!["release"]);
    }

    #[test]
    fn endpoints_and_trace_links_are_validated() {
        let c = Config::from_toml(
            "[checks.endpoints]\nkeys = [\"http.route\", \"rpc.service/rpc.method\"]\ntop = 5\n[judge]\ntrace_url_template = \"https://tempo/trace/{trace_id}\"\n",
        )
        .unwrap();
        assert_eq!(c.checks.endpoints.top, 5);
        let err = Config::from_toml(
            "[checks.endpoints]\nkeys = [\"a//b\"]\ntop = 0\n[judge]\ntrace_url_template = \"https://tempo/\"\n",
        )
        .unwrap_err()
        .to_string();
        for part in [
            "checks.endpoints.top",
            "checks.endpoints.keys",
            "trace_url_template",
        ] {
            assert!(err.contains(part), "{part} in {err}");
        }
    }

    #[test]
    fn checks_and_guardrails_parse() {
        let c = Config::from_toml(
            "[checks.error_ratio]\ntolerance = 0.2\ncritical = false\n[checks.guardrails]\nmax_error_ratio = 0.02\nmax_p95 = \"500ms\"\n[judge]\nconfidence = 0.999\n",
        )
        .unwrap();
        assert_eq!(c.checks.error_ratio.tolerance, 0.2);
        assert!(!c.checks.error_ratio.critical);
        assert_eq!(
            c.checks.guardrails.latency(),
            vec![(0.95, Duration::from_millis(500))]
        );
        assert_eq!(c.judge.confidence, 0.999);
        let err =
            Config::from_toml("[checks.latency]\nquantiles = [1.5]\n[judge]\nconfidence = 2.0\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("quantiles") && text.contains("confidence"),
            "{text}"
        );
    }

    #[test]
    fn metric_checks_parse_and_validate() {
        let c = Config::from_toml(
            "[[checks.metric]]\nname = \"queue\"\nmetric = \"app.queue.depth\"\ndirection = \"increase\"\ncritical = true\n[[checks.metric]]\nname = \"orders\"\nmetric = \"orders.placed\"\ndirection = \"decrease\"\n",
        )
        .unwrap();
        assert_eq!(c.checks.metric.len(), 2);
        assert_eq!(c.checks.metric[1].direction, Direction::Decrease);
        assert_eq!(c.checks.metric[0].quantiles, vec![0.5]);
        let err = Config::from_toml(
            "[[checks.metric]]\nname = \"latency\"\nmetric = \"x\"\ndirection = \"up\"\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("direction") || err.to_string().contains("up"),
            "{err}"
        );
    }

    #[test]
    fn a_tail_share_outside_its_range_is_rejected() {
        for bad in ["0.0", "1.5", "-0.5"] {
            let err =
                Config::from_toml(&format!("[checks.latency]\npass_tail = {bad}\n")).unwrap_err();
            assert!(
                err.to_string().contains("checks.latency.pass_tail"),
                "{err}"
            );
        }
        let off = Config::from_toml("[checks.latency]\npass_tail = 1.0\n").unwrap();
        assert_eq!(off.checks.latency.pass_tail, 1.0);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[server]\ngrpc_listn = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(err.to_string().contains("grpc_listn"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::from_toml(
            "[limits]\nmax_releases = 0\nmax_metric_streams_per_resource = 0\n[ingest]\nspan_kinds = [\"server\", \"sever\"]\n[telemetry]\nlog_format = \"xml\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("max_releases"), "{text}");
        assert!(text.contains("max_metric_streams_per_resource"), "{text}");
        assert!(text.contains("sever"), "{text}");
        assert!(text.contains("log_format"), "{text}");
    }
}
