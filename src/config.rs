//! Daemon configuration: plain serde data read from TOML, with defaults and one
//! `validate()` that reports every problem at once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::model::SpanKindFilter;

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
    /// The daemon's own logs and traces.
    pub telemetry: TelemetryConfig,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 4317)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 4318)),
            max_request_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
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
    /// The request-duration histogram metric (semantic conventions name).
    pub duration_metric: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            span_kinds: vec!["server".into(), "consumer".into()],
            duration_metric: "http.server.request.duration".into(),
        }
    }
}

impl IngestConfig {
    /// The span kinds as a filter; only valid after `Config::validate`.
    pub fn span_kind_filter(&self) -> SpanKindFilter {
        SpanKindFilter::parse(&self.span_kinds).unwrap_or_default()
    }
}

/// Bounds that keep memory finite whatever the input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most releases tracked at once; telemetry of further new releases is
    /// refused (OTLP partial success) and counted.
    pub max_releases: usize,
    /// A release not seen for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub release_idle_expiry: Duration,
    /// Most cumulative metric streams remembered for delta conversion.
    pub max_metric_streams: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_releases: 10_000,
            release_idle_expiry: Duration::from_secs(15 * 60),
            max_metric_streams: 100_000,
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
        if self.ingest.duration_metric.is_empty() {
            problems.push("ingest.duration_metric must not be empty".to_string());
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
        assert_eq!(c.identity.release_keys, vec!["deployment.id"]);
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../config.toml");
        Config::from_toml(text).unwrap();
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
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[server]\ngrpc_listn = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(err.to_string().contains("grpc_listn"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::from_toml(
            "[limits]\nmax_releases = 0\n[ingest]\nspan_kinds = [\"server\", \"sever\"]\n[telemetry]\nlog_format = \"xml\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("max_releases"), "{text}");
        assert!(text.contains("sever"), "{text}");
        assert!(text.contains("log_format"), "{text}");
    }
}
