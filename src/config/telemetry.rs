//! `[telemetry]`: the daemon's own logs (text or JSON) and traces (OTLP).

use serde::Deserialize;

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

impl TelemetryConfig {
    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if !matches!(self.log_format.as_str(), "text" | "json") {
            problems.push(format!(
                "telemetry.log_format must be \"text\" or \"json\", not {:?}",
                self.log_format
            ));
        }
    }
}
