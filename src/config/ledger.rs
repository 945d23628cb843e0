//! `[ledger]`: where the release ledger lives (an embedded SQLite file, or
//! a PostgreSQL database shared by several daemons), how often the judge is
//! checkpointed, how much history is kept, and the DORA window.

use std::path::PathBuf;
use std::time::Duration;

/// The environment variable that holds the PostgreSQL password when
/// `ledger.password_file` is not set.
pub const PASSWORD_ENV: &str = "RELEASE_VERDICT_LEDGER_PASSWORD";

use serde::Deserialize;

/// The release ledger (SQLite, or PostgreSQL with `url`): every release's
/// events, its last verdict, and the judge's checkpoint, so a restart
/// forgets nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The database file, created with its directory on start (relative to
    /// the working directory); `:memory:` keeps it in memory only; empty
    /// turns the ledger off.
    pub path: String,
    /// A PostgreSQL database instead of the file:
    /// `postgres://user@host:5432/db?sslmode=require`. Several daemons may
    /// share it. The password is never in this file: `password_file`, or
    /// the `RELEASE_VERDICT_LEDGER_PASSWORD` environment variable.
    pub url: String,
    /// This daemon's name among replicas sharing the ledger, stable across
    /// its restarts (a StatefulSet pod's name): its checkpoint is kept
    /// under it. Empty: the host name.
    pub replica: String,
    /// Where the other replicas sharing the ledger reach this one's HTTP
    /// API, to forward reads of the releases it judges
    /// (`http://release-verdict-0.release-verdict:8080`). Empty: the
    /// HTTP listener's address, or the host name when it listens on all
    /// addresses, with `https` when `[server.tls]` is on.
    pub advertise_url: String,
    /// A file holding the PostgreSQL password (a mounted Secret).
    pub password_file: Option<PathBuf>,
    /// Certificates (PEM) trusted for PostgreSQL's TLS beside the public
    /// roots, for a private CA.
    pub ca_file: Option<PathBuf>,
    /// How often the judge's state is checkpointed: what a `kill -9` can
    /// lose at most (a SIGTERM loses nothing).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Events older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// The database's size cap in bytes, held as each write commits: past
    /// it posted events go first, then the daemon's own, oldest received
    /// first. SQLite only: PostgreSQL's storage is its operator's.
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
            url: String::new(),
            replica: String::new(),
            advertise_url: String::new(),
            password_file: None,
            ca_file: None,
            checkpoint_interval: Duration::from_secs(5),
            retention: Duration::from_secs(400 * 86_400),
            max_bytes: 1 << 30,
            dora_window: Duration::from_secs(30 * 86_400),
            dora_refresh: Duration::from_secs(60),
        }
    }
}

impl LedgerConfig {
    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if !self.url.is_empty() {
            if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
                problems.push(format!(
                    "ledger.url must be a PostgreSQL URL (postgres://user@host:5432/db), not {:?}",
                    self.url
                ));
            } else if let Err(e) = self.url.parse::<postgres::Config>() {
                problems.push(format!("ledger.url does not parse: {e}"));
            } else if self
                .url
                .parse::<postgres::Config>()
                .is_ok_and(|c| c.get_password().is_some())
            {
                problems.push(format!(
                    "ledger.url holds a password: put it in ledger.password_file or {PASSWORD_ENV}, never in the configuration"
                ));
            }
        }
        let url = &self.advertise_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            problems.push(format!(
                "ledger.advertise_url must be an http:// or https:// URL, not {:?}",
                self.advertise_url
            ));
        }
        if self.checkpoint_interval < Duration::from_millis(100) {
            problems.push("ledger.checkpoint_interval must be at least 100ms".to_string());
        }
        if self.max_bytes < 1 << 20 {
            problems.push("ledger.max_bytes must be at least 1 MiB".to_string());
        }
        if self.dora_window < Duration::from_secs(3600) {
            problems.push("ledger.dora_window must be at least 1h".to_string());
        }
        if self.dora_refresh < Duration::from_secs(1) {
            problems.push("ledger.dora_refresh must be at least 1s".to_string());
        }
    }

    /// Where the ledger is: the PostgreSQL URL when set, else the file.
    pub fn location(&self) -> &str {
        if self.url.is_empty() {
            &self.path
        } else {
            &self.url
        }
    }

    /// The PostgreSQL password: `password_file`'s first line, else the
    /// environment's `RELEASE_VERDICT_LEDGER_PASSWORD`, else none.
    pub fn password(&self) -> Result<Option<String>, String> {
        match &self.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("ledger.password_file {}: {e}", path.display()))?;
                Ok(Some(text.lines().next().unwrap_or_default().to_string()))
            }
            None => Ok(std::env::var(PASSWORD_ENV).ok()),
        }
    }
}
