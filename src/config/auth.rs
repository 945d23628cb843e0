//! `[auth]`: the files of bearer tokens for each scope (ingest, read,
//! write). Any path is accepted here; the server reads the files.

use std::time::Duration;

use serde::Deserialize;

/// Bearer tokens by scope, one per line in each file (`#` starts a
/// comment). A scope without a file is open to anyone who reaches the port.
/// The files are read again when they change (looked at every
/// `reload_interval`) or on SIGHUP, so a token is added or revoked without
/// a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens that may send telemetry (OTLP over gRPC and HTTP).
    pub ingest_tokens_file: String,
    /// Tokens that may read verdicts, events, DORA and `/metrics`.
    pub read_tokens_file: String,
    /// Tokens that may post ledger events.
    pub write_tokens_file: String,
    /// How often the files are looked at for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            ingest_tokens_file: String::new(),
            read_tokens_file: String::new(),
            write_tokens_file: String::new(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl AuthConfig {
    /// The configured files, empty paths included (scopes left open).
    pub fn files(&self) -> [&str; 3] {
        [
            &self.ingest_tokens_file,
            &self.read_tokens_file,
            &self.write_tokens_file,
        ]
    }

    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if self.reload_interval < Duration::from_millis(100) {
            problems.push("auth.reload_interval must be at least 100ms".to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn the_reload_interval_parses_and_has_a_floor() {
        let c = Config::from_toml("[auth]\nreload_interval = \"30s\"\n").unwrap();
        assert_eq!(c.auth.reload_interval, Duration::from_secs(30));
        assert_eq!(
            Config::default().auth.reload_interval,
            Duration::from_secs(10)
        );
        let e = Config::from_toml("[auth]\nreload_interval = \"1ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.reload_interval"), "{e}");
    }
}
