//! `[ledger]`: where the release ledger (SQLite) lives, how often the
//! judge is checkpointed, how much history is kept, and the DORA window.

use std::time::Duration;

use serde::Deserialize;

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
    /// The database's size cap in bytes, held as each write commits: past
    /// it posted events go first, then the daemon's own, oldest received
    /// first.
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

impl LedgerConfig {
    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
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
}
