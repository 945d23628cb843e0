//! Telling people: the ledger's events sent to Slack (a thread per
//! release), signed webhooks and Grafana annotations, through the ledger's
//! outbox (`ledger/outbox.rs`), so every delivery survives a crash and is
//! retried with backoff until it is delivered or dead-lettered.
//!
//! - `mod.rs`: the configured sinks with their secrets, their routes, the
//!   retry policy (pure).
//! - `release.rs`: a release's state as the events tell it, and the words
//!   for each event (pure).
//! - `slack.rs`, `grafana.rs`, `webhook.rs`: each API's requests and how
//!   its answers are read (pure).
//! - `dispatch.rs`: the loop that takes due deliveries from the outbox and
//!   sends them (the shell: tokio, reqwest, the clock).

mod dispatch;
pub mod grafana;
pub mod release;
pub mod slack;
pub mod webhook;

use std::fmt;
use std::time::Duration;

pub use dispatch::{run, Metrics};

use crate::config::{NotifyConfig, SinkConfig, SinkKind};
use crate::ledger::event::types;
use crate::ledger::outbox::Route;

/// A secret read from a file or the environment; its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why the sinks could not be set up (at start: the daemon does not run).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify.sinks {sink}: {what} {path}: {source}")]
    Unreadable {
        sink: String,
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("notify.sinks {sink}: the environment variable {var} ({what}) is not set")]
    Unset {
        sink: String,
        what: &'static str,
        var: String,
    },
    #[error("notify.sinks {sink}: {what} is empty")]
    Empty { sink: String, what: &'static str },
    #[error("notify.sinks {sink}: url {url:?} is not an http(s) URL")]
    BadUrl { sink: String, url: String },
}

/// A destination ready to use.
#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    pub kind: SinkKind,
    /// The API's base (Slack, Grafana) or the URL posted to.
    pub url: String,
    pub token: Option<Secret>,
    pub secret: Option<Secret>,
    pub channel: String,
    pub dashboard_uid: String,
    pub route: Route,
}

/// Every sink, the retry policy and the links messages carry.
#[derive(Debug, Clone)]
pub struct Sinks {
    pub sinks: Vec<Sink>,
    pub policy: Policy,
    pub links: release::Links,
}

impl Sinks {
    /// Reads each sink's secrets. A missing file or variable is an error.
    pub fn load(c: &NotifyConfig) -> Result<Sinks, NotifyError> {
        let sinks = c
            .sinks
            .iter()
            .map(|s| sink(s, c.max_pending_per_sink))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Sinks {
            sinks,
            policy: Policy {
                max_attempts: c.max_attempts,
                initial: c.backoff_initial,
                max: c.backoff_max,
                timeout: c.timeout,
            },
            links: release::Links {
                page_url: c.page_url.trim_end_matches('/').to_string(),
                dashboard_url: c.dashboard_url.clone(),
            },
        })
    }

    pub fn routes(&self) -> Vec<Route> {
        self.sinks.iter().map(|s| s.route.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Sink> {
        self.sinks.iter().find(|s| s.name == name)
    }
}

/// The event types a kind takes when its `events` list is empty. Slack
/// and Grafana get the story's turning points (`verdict_changed` carries
/// green and red), not every event twice; a webhook gets everything.
/// (A Slack thread opens only for a release compared with a baseline, or
/// at an event posted from outside: see `slack::opens_thread`.)
pub fn default_events(kind: SinkKind) -> Vec<String> {
    let list: &[&str] = match kind {
        SinkKind::Webhook => &[],
        SinkKind::Slack | SinkKind::SlackWebhook => &[
            types::DEPLOY_STARTED,
            types::RELEASE_STARTED,
            types::VERDICT_CHANGED,
            types::PROMOTED,
            types::ROLLED_BACK,
            types::INCIDENT_STARTED,
            types::INCIDENT_RESOLVED,
            types::SLO_RESTORED,
        ],
        SinkKind::Grafana => &[
            types::DEPLOY_STARTED,
            types::RELEASE_STARTED,
            types::CANARY_PASSED,
            types::CANARY_FAILED,
            types::PROMOTED,
            types::ROLLED_BACK,
        ],
    };
    list.iter().map(|s| s.to_string()).collect()
}

fn sink(c: &SinkConfig, max_pending: u64) -> Result<Sink, NotifyError> {
    let read = |what: &'static str, file: &str, env: &str| -> Result<Option<Secret>, NotifyError> {
        let value = if !file.is_empty() {
            std::fs::read_to_string(file).map_err(|source| NotifyError::Unreadable {
                sink: c.name.clone(),
                what,
                path: file.to_string(),
                source,
            })?
        } else if !env.is_empty() {
            std::env::var(env).map_err(|_| NotifyError::Unset {
                sink: c.name.clone(),
                what,
                var: env.to_string(),
            })?
        } else {
            return Ok(None);
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(NotifyError::Empty {
                sink: c.name.clone(),
                what,
            });
        }
        Ok(Some(Secret(value)))
    };
    let url = match read("url", &c.url_file, &c.url_env)? {
        Some(secret) => secret.0,
        None if c.url.is_empty() && c.kind == SinkKind::Slack => slack::API.to_string(),
        None => c.url.clone(),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(NotifyError::BadUrl {
            sink: c.name.clone(),
            // A URL from a file or the environment may be a secret.
            url: if c.url.is_empty() { "…".into() } else { url },
        });
    }
    let events = if c.events.is_empty() {
        default_events(c.kind)
    } else {
        c.events.clone()
    };
    Ok(Sink {
        name: c.name.clone(),
        kind: c.kind,
        url: url.trim_end_matches('/').to_string(),
        token: read("token", &c.token_file, &c.token_env)?,
        secret: read("secret", &c.secret_file, &c.secret_env)?,
        channel: c.channel.clone(),
        dashboard_uid: c.dashboard_uid.clone(),
        route: Route {
            sink: c.name.clone(),
            types: events,
            services: c.services.clone(),
            environments: c.environments.clone(),
            max_pending: Some(max_pending),
        },
    })
}

/// How hard deliveries are tried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    pub timeout: Duration,
}

impl Policy {
    /// The wait after try number `attempts` (1 for the first) failed:
    /// exponential from `initial`, capped at `max`, with jitter (`unit`
    /// uniform in [0, 1): the wait is between half and all of it), or what
    /// the server asked for with Retry-After.
    pub fn backoff(&self, attempts: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let doubled = self
            .initial
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let base = doubled.min(self.max);
        let jittered = base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0));
        retry_after.unwrap_or(jittered)
    }
}

/// Why a try failed, and whether another may succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    /// No retry will help (a bad token, an unknown channel, a 4xx).
    pub permanent: bool,
    /// What the server asked us to wait.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            permanent: false,
            retry_after: None,
        }
    }

    /// From an HTTP status that is not success: 408, 429 and 5xx are
    /// worth retrying, the other 4xx are not.
    pub fn from_status(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
        let mut body: String = body.chars().take(200).collect();
        if body.is_empty() {
            body = "(no body)".into();
        }
        Failure {
            message: format!("HTTP {status}: {body}"),
            permanent: !(status == 408 || status == 429 || status >= 500),
            retry_after,
        }
    }
}

/// Reads a Retry-After header given in seconds (the form Slack, Grafana
/// and most proxies use).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: f64 = value?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let p = policy();
        assert_eq!(p.backoff(1, 1.0, None), Duration::from_secs(1));
        assert_eq!(p.backoff(1, 0.0, None), Duration::from_millis(500));
        assert_eq!(p.backoff(4, 1.0, None), Duration::from_secs(8));
        assert_eq!(p.backoff(30, 1.0, None), Duration::from_secs(60));
        assert_eq!(p.backoff(30, 0.0, None), Duration::from_secs(30));
    }

    #[test]
    fn retry_after_is_honoured() {
        let p = policy();
        let asked = Some(Duration::from_secs(7));
        assert_eq!(p.backoff(1, 0.3, asked), Duration::from_secs(7));
        // Never sooner than asked, even past the cap.
        let long = Some(Duration::from_secs(120));
        assert_eq!(p.backoff(1, 0.3, long), Duration::from_secs(120));
        assert_eq!(retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(Some("soon")), None);
        assert_eq!(retry_after(Some("-1")), None);
    }

    #[test]
    fn statuses_are_retried_or_not() {
        assert!(!Failure::from_status(503, None, "").permanent);
        assert!(!Failure::from_status(429, None, "").permanent);
        assert!(!Failure::from_status(408, None, "").permanent);
        assert!(Failure::from_status(404, None, "").permanent);
        assert!(Failure::from_status(401, None, "bad token")
            .message
            .contains("bad token"));
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Secret("xoxb-very-secret".into());
        assert!(!format!("{s:?}").contains("secret"));
    }
}
