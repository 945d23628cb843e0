//! Daemon configuration: plain serde data read from TOML, with defaults and one
//! `validate()` that reports every problem at once. One file per section,
//! each with the struct, its defaults and its own `validate`; here the
//! whole file, which calls each, and the rule that joins two sections.

use std::path::Path;

use serde::Deserialize;

mod auth;
mod baseline;
mod checks;
mod identity;
mod ingest;
mod judge;
mod ledger;
mod limits;
mod notify;
mod server;
mod telemetry;

pub use auth::AuthConfig;
pub use baseline::BaselineConfig;
pub use checks::{
    ChecksConfig, Direction, EndpointsCheck, ErrorRatioCheck, Guardrails, LatencyCheck, MetricCheck,
};
pub use identity::IdentityConfig;
pub use ingest::{DurationMetric, IngestConfig};
pub use judge::JudgeConfig;
pub use ledger::LedgerConfig;
pub use limits::LimitsConfig;
pub use notify::{NotifyConfig, SinkConfig, SinkKind};
pub use server::{ServerConfig, TlsConfig};
pub use telemetry::TelemetryConfig;

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
        self.server.validate(&mut problems);
        self.notify.validate(&mut problems);
        if !self.notify.sinks.is_empty() && self.ledger.location().is_empty() {
            problems.push(
                "notify.sinks need the ledger (its outbox): set ledger.path, or \":memory:\""
                    .to_string(),
            );
        }
        self.identity.validate(&mut problems);
        self.ingest.validate(&mut problems);
        self.limits.validate(&mut problems);
        self.ledger.validate(&mut problems);
        self.baseline.validate(&mut problems);
        self.judge.validate(&mut problems);
        self.checks.validate(&self.ingest, &mut problems);
        self.telemetry.validate(&mut problems);
        self.auth.validate(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_postgres_ledger_keeps_its_password_out_of_the_file() {
        let ok =
            Config::from_toml("[ledger]\nurl = \"postgres://rv@db:5432/ledger?sslmode=require\"\n")
                .unwrap();
        assert_eq!(
            ok.ledger.location(),
            "postgres://rv@db:5432/ledger?sslmode=require"
        );
        for (url, says) in [
            ("postgres://rv:hunter2@db/ledger", "password_file"),
            ("mysql://db/ledger", "PostgreSQL URL"),
            ("postgres://db/ledger?sslmode=sometimes", "does not parse"),
        ] {
            let err = Config::from_toml(&format!("[ledger]\nurl = \"{url}\"\n"))
                .expect_err(url)
                .to_string();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

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
    fn the_new_kind_pass_bound_is_a_share() {
        let c =
            Config::from_toml("[checks.error_ratio]\nnew_kind_pass_bound_abs = 0.002\n").unwrap();
        assert_eq!(c.checks.error_ratio.new_kind_pass_bound_abs, 0.002);
        assert_eq!(
            Config::default().checks.error_ratio.new_kind_pass_bound_abs,
            0.0045
        );
        for bad in ["0.0", "1.0", "-0.01"] {
            let e = Config::from_toml(&format!(
                "[checks.error_ratio]\nnew_kind_pass_bound_abs = {bad}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("new_kind_pass_bound_abs must be in (0, 1)"),
                "{bad}: {e}"
            );
        }
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
    fn stream_limits_parse_and_are_checked() {
        let c = Config::from_toml("[server]\nmax_streams = 20\nstream_snapshot_timeout = \"2s\"\n")
            .unwrap();
        assert_eq!(c.server.max_streams, 20);
        assert_eq!(c.server.stream_snapshot_timeout, Duration::from_secs(2));
        let e = Config::from_toml("[server]\nmax_streams = 0\nstream_snapshot_timeout = \"1ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.max_streams"), "{e}");
        assert!(e.contains("server.stream_snapshot_timeout"), "{e}");
        assert_eq!(Config::default().server.max_stream_snapshot_bytes, 64 << 20);
        let e = Config::from_toml("[server]\nmax_stream_snapshot_bytes = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.max_stream_snapshot_bytes"), "{e}");
        assert_eq!(Config::default().server.max_decoding_bytes, 256 << 20);
        let e = Config::from_toml("[server]\nmax_decoding_bytes = 1048576\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.max_decoding_bytes"), "{e}");
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
