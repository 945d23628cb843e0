//! `[notify]`: where the ledger's events are sent (Slack, webhooks,
//! Grafana annotations), how hard to try, and where secrets come from.

use std::time::Duration;

use serde::Deserialize;

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
    /// One request's deadline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
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
