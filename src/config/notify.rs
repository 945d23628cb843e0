//! `[notify]`: where the ledger's events are sent (Slack, webhooks,
//! Grafana annotations), how hard to try, and where secrets come from.

use std::time::Duration;

use serde::Deserialize;

/// The largest `max_pending_per_sink` allowed: an outbox row holds the
/// event's JSON (about a KiB), so a sink's backlog stays under a GiB.
const MAX_PENDING_PER_SINK: u64 = 1_000_000;

/// The notifiers and their retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Each `[[notify.sinks]]`: a destination and the events it takes.
    pub sinks: Vec<SinkConfig>,
    /// Tries per delivery before it is dead-lettered.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles each time, with jitter.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// The longest wait between tries.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// One request's deadline, from connecting to the answer's last byte
    /// read (answers are read up to 64 KiB; the rest is dropped).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most deliveries waiting in the outbox for one sink; past it the
    /// sink's oldest are dead-lettered, counted and warned about.
    pub max_pending_per_sink: u64,
    /// This daemon's address as people reach it (e.g.
    /// `https://release-verdict.example.com`), for links to the Release
    /// Health page in messages. Empty: no such links.
    pub page_url: String,
    /// A Grafana dashboard for links in messages, with `{service}`,
    /// `{environment}` and `{deployment_id}` replaced. Empty: no link.
    pub dashboard_url: String,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            max_attempts: 12,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            max_pending_per_sink: 10_000,
            page_url: String::new(),
            dashboard_url: String::new(),
        }
    }
}

/// What a sink talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// The event as JSON, signed with HMAC-SHA256.
    Webhook,
    /// Slack's Web API with a bot token: a thread per release.
    Slack,
    /// A Slack incoming webhook: one message per event, no threads.
    SlackWebhook,
    /// Grafana's annotations API: a region per release.
    Grafana,
}

/// One destination. Secrets (`token`, `secret`, and a `url` that is one,
/// as Slack's incoming webhooks are) come from a file or an environment
/// variable named here, never from this file, and are never logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Names the sink in metrics, logs and the outbox; unique.
    pub name: String,
    pub kind: SinkKind,
    /// Webhook: where to post. Slack: the Web API base (default
    /// `https://slack.com/api`). Grafana: its base URL.
    #[serde(default)]
    pub url: String,
    /// Or the URL read from this file (a Slack incoming webhook's URL is a secret).
    #[serde(default)]
    pub url_file: String,
    /// Or from this environment variable.
    #[serde(default)]
    pub url_env: String,
    /// Slack's bot token or Grafana's service-account token, from a file…
    #[serde(default)]
    pub token_file: String,
    /// …or an environment variable.
    #[serde(default)]
    pub token_env: String,
    /// Webhook: the HMAC-SHA256 key, from a file…
    #[serde(default)]
    pub secret_file: String,
    /// …or an environment variable.
    #[serde(default)]
    pub secret_env: String,
    /// Slack: the channel (`#releases` or its id).
    #[serde(default)]
    pub channel: String,
    /// Grafana: the dashboard the annotations belong to; empty for
    /// organisation-wide annotations, shown on every dashboard that
    /// queries them by tag.
    #[serde(default)]
    pub dashboard_uid: String,
    /// Event types sent; empty: the kind's default (see README).
    #[serde(default)]
    pub events: Vec<String>,
    /// Services sent; empty: all.
    #[serde(default)]
    pub services: Vec<String>,
    /// Environments sent; empty: all.
    #[serde(default)]
    pub environments: Vec<String>,
}

impl NotifyConfig {
    /// Adds every problem to `problems`.
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if self.max_attempts == 0 {
            problems.push("notify.max_attempts must be at least 1".into());
        }
        if self.backoff_initial < Duration::from_millis(10)
            || self.backoff_max < self.backoff_initial
        {
            problems.push(
                "notify.backoff_initial must be at least 10ms and at most notify.backoff_max"
                    .into(),
            );
        }
        if self.timeout < Duration::from_millis(100) {
            problems.push("notify.timeout must be at least 100ms".into());
        }
        if !(1..=MAX_PENDING_PER_SINK).contains(&self.max_pending_per_sink) {
            problems.push(format!(
                "notify.max_pending_per_sink must be between 1 and {MAX_PENDING_PER_SINK}"
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sinks.iter().enumerate() {
            let at = format!("notify.sinks[{i}]");
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                problems.push(format!(
                    "{at}.name must be letters, digits, '-', '_' or '.'"
                ));
            } else if !names.insert(&s.name) {
                problems.push(format!("{at}.name {:?} is used twice", s.name));
            }
            let urls = [&s.url, &s.url_file, &s.url_env]
                .iter()
                .filter(|v| !v.is_empty())
                .count();
            let tokens = [&s.token_file, &s.token_env]
                .iter()
                .filter(|v| !v.is_empty())
                .count();
            let secrets = [&s.secret_file, &s.secret_env]
                .iter()
                .filter(|v| !v.is_empty())
                .count();
            if urls > 1 {
                problems.push(format!("{at}: give one of url, url_file, url_env"));
            }
            if tokens > 1 || secrets > 1 {
                problems.push(format!(
                    "{at}: give one of token_file, token_env (and of secret_file, secret_env)"
                ));
            }
            match s.kind {
                SinkKind::Webhook | SinkKind::SlackWebhook | SinkKind::Grafana if urls == 0 => {
                    problems.push(format!(
                        "{at} ({:?}) needs url, url_file or url_env",
                        s.kind
                    ));
                }
                _ => {}
            }
            match s.kind {
                SinkKind::Slack | SinkKind::Grafana if tokens == 0 => {
                    problems.push(format!("{at} ({:?}) needs token_file or token_env", s.kind));
                }
                _ => {}
            }
            if s.kind == SinkKind::Slack && s.channel.is_empty() {
                problems.push(format!("{at} (slack) needs a channel"));
            }
            if s.kind == SinkKind::Webhook && secrets == 0 {
                problems.push(format!(
                    "{at} (webhook) needs secret_file or secret_env: receivers verify the signature"
                ));
            }
            for t in &s.events {
                if t.is_empty()
                    || !t
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    problems.push(format!("{at}.events: {t:?} is not an event type"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_per_sink_outbox_cap_has_a_default_and_is_validated() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.notify.max_pending_per_sink, 10_000);
        let c = Config::from_toml("[notify]\nmax_pending_per_sink = 50\n").unwrap();
        assert_eq!(c.notify.max_pending_per_sink, 50);
        for bad in ["0", "1000001"] {
            let e = Config::from_toml(&format!("[notify]\nmax_pending_per_sink = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("notify.max_pending_per_sink"), "{e}");
        }
    }
}
