//! A release's state as its events tell it (kept per sink in the outbox's
//! sink state, so a Slack thread's opening message can show where the
//! release stands), and the words each event is said in. Pure.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ledger::event::{types, Event};
use crate::model::format_time;

/// Where links in messages point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// This daemon's base URL as people reach it; empty: no page links.
    pub page_url: String,
    /// A dashboard URL with `{service}`, `{environment}`, `{deployment_id}`.
    pub dashboard_url: String,
}

impl Links {
    /// The Release Health page of one release.
    pub fn page(&self, s: &ReleaseState) -> Option<String> {
        (!self.page_url.is_empty() && !s.deployment_id.is_empty()).then(|| {
            let (service, env) = (encode(&s.service), encode(&s.environment));
            let id = encode(&s.deployment_id);
            format!("{}/#/release/{service}/{env}/{id}", self.page_url)
        })
    }

    pub fn dashboard(&self, s: &ReleaseState) -> Option<String> {
        (!self.dashboard_url.is_empty()).then(|| {
            self.dashboard_url
                .replace("{service}", &encode(&s.service))
                .replace("{environment}", &encode(&s.environment))
                .replace("{deployment_id}", &encode(&s.deployment_id))
        })
    }
}

/// Percent-encodes all but the unreserved characters of a URL.
fn encode(s: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

/// What is known of a release from its events so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseState {
    pub service: String,
    pub environment: String,
    pub deployment_id: String,
    pub git_sha: Option<String>,
    pub baseline_deployment_id: Option<String>,
    pub baseline_git_sha: Option<String>,
    /// `green`, `yellow`, `red`; None before the daemon judged it.
    pub verdict: Option<String>,
    pub reason: Option<String>,
    /// `promoted` or `rolled_back` once the rollout ended.
    pub outcome: Option<String>,
    /// The incident open against it, if any.
    pub incident: bool,
    /// When its first event happened (RFC 3339).
    pub started_at: String,
    /// Where a red is: "endpoint POST /checkout", "error KeyError".
    #[serde(default)]
    pub red_where: Option<String>,
    /// Requests behind a red to look at (at most three).
    #[serde(default)]
    pub traces: Vec<Trace>,
}

/// A request behind a red, as messages link it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub trace_id: String,
    /// "failed, POST /checkout, 812 ms".
    pub label: String,
    /// The link, from `[judge] trace_url_template`; none without one.
    pub url: Option<String>,
}

/// Where a red event's evidence is: "endpoint POST /checkout · error
/// KeyError", "latency · endpoint GET /cart", "guardrail error ratio".
pub fn red_where(e: &Event) -> Option<String> {
    let r = e.metadata.get("red_evidence")?;
    let text = |k: &str| r.get(k).and_then(Value::as_str);
    let check = text("check")?;
    let mut parts = Vec::new();
    if check != "endpoint" && check != "error_kind" {
        parts.push(check.replace('_', " "));
    }
    if let Some(endpoint) = text("endpoint") {
        parts.push(format!("endpoint {endpoint}"));
    }
    if let Some(kind) = text("kind") {
        parts.push(format!("error {kind}"));
    }
    Some(parts.join(" · "))
}

/// The requests a red event links (see `recording`), at most three.
pub fn traces(e: &Event) -> Vec<Trace> {
    let Some(Value::Array(xs)) = e.metadata.get("exemplars") else {
        return Vec::new();
    };
    xs.iter()
        .take(crate::ledger::event::EVENT_EXEMPLARS)
        .filter_map(|x| {
            let trace_id = x.get("trace_id")?.as_str()?.to_string();
            let failed = x.get("failed").and_then(Value::as_bool).unwrap_or(false);
            let mut label = vec![if failed { "failed" } else { "slow" }.to_string()];
            if let Some(ep) = x.get("endpoint").and_then(Value::as_str) {
                label.push(ep.to_string());
            }
            if let Some(ms) = x.get("value").and_then(Value::as_f64) {
                label.push(format!("{ms:.0} ms"));
            }
            let url = x
                .get("url")
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                .map(str::to_string);
            Some(Trace {
                trace_id,
                label: label.join(", "),
                url,
            })
        })
        .collect()
}

impl ReleaseState {
    /// The state after `e`.
    pub fn after(mut self, e: &Event) -> ReleaseState {
        if self.started_at.is_empty() {
            self.started_at = format_time(e.ts);
        }
        self.service = e.service.clone();
        self.environment = e.environment.clone().unwrap_or_default();
        if let Some(d) = &e.deployment_id {
            self.deployment_id = d.clone();
        }
        if e.git_sha.is_some() {
            self.git_sha = e.git_sha.clone();
        }
        let text = |k: &str| {
            e.metadata
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let Some(b) = text("baseline_deployment_id") {
            self.baseline_deployment_id = Some(b);
            self.baseline_git_sha = text("baseline_git_sha");
        }
        if let Some(v) = text("verdict") {
            self.verdict = Some(v);
        }
        if let Some(r) = text("reason") {
            self.reason = Some(r);
        }
        if let Some(place) = red_where(e) {
            self.red_where = Some(place);
            self.traces = traces(e);
        }
        match e.kind.as_str() {
            types::PROMOTED | types::ROLLED_BACK => self.outcome = Some(e.kind.clone()),
            types::INCIDENT_STARTED => self.incident = true,
            types::INCIDENT_RESOLVED | types::SLO_RESTORED => self.incident = false,
            _ => {}
        }
        self
    }

    /// Where the release stands, in one word a person reads first.
    pub fn status(&self) -> Status {
        match (self.outcome.as_deref(), self.verdict.as_deref()) {
            (Some(types::ROLLED_BACK), _) => Status::RolledBack,
            (Some(_), _) => Status::Promoted,
            (None, Some("red")) => Status::Red,
            (None, Some("green")) => Status::Green,
            (None, Some(_)) => Status::Yellow,
            (None, None) => Status::Deploying,
        }
    }

    /// `2b5d9af` from a long sha.
    pub fn short_sha(&self) -> &str {
        short(self.git_sha.as_deref().unwrap_or(""))
    }
}

/// The first 12 characters of a sha (or all of a shorter one).
pub fn short(sha: &str) -> &str {
    match sha.char_indices().nth(12) {
        Some((i, _)) => &sha[..i],
        None => sha,
    }
}

/// A release's standing, for colors and words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Deploying,
    Yellow,
    Green,
    Red,
    Promoted,
    RolledBack,
}

impl Status {
    /// The word, never the color alone.
    pub fn word(self) -> &'static str {
        match self {
            Status::Deploying => "DEPLOYING",
            Status::Yellow => "YELLOW",
            Status::Green => "GREEN",
            Status::Red => "RED",
            Status::Promoted => "PROMOTED",
            Status::RolledBack => "ROLLED BACK",
        }
    }

    /// An emoji shortcode Slack shows beside the word.
    pub fn emoji(self) -> &'static str {
        match self {
            Status::Deploying => ":rocket:",
            Status::Yellow => ":large_yellow_circle:",
            Status::Green => ":large_green_circle:",
            Status::Red => ":red_circle:",
            Status::Promoted => ":white_check_mark:",
            Status::RolledBack => ":leftwards_arrow_with_hook:",
        }
    }

    /// What a person should do now.
    pub fn action(self) -> &'static str {
        match self {
            Status::Deploying => "wait for the first verdict",
            Status::Yellow => "wait: not enough evidence either way yet",
            Status::Green => "safe to promote",
            Status::Red => "roll back",
            Status::Promoted => "done",
            Status::RolledBack => "done: the previous version serves",
        }
    }
}

/// One line saying what happened, for a thread reply or a webhook log.
pub fn headline(e: &Event) -> String {
    let text = |k: &str| e.metadata.get(k).and_then(Value::as_str);
    let sha = short(e.git_sha.as_deref().unwrap_or(""));
    let release = e.deployment_id.as_deref().unwrap_or("");
    match e.kind.as_str() {
        types::DEPLOY_STARTED => format!("Deploy of {release} ({sha}) started"),
        types::RELEASE_STARTED => match text("baseline_deployment_id") {
            Some(b) => format!("Release {release} is serving: compared with {b}"),
            None => format!("Release {release} is serving"),
        },
        types::VERDICT_CHANGED => format!(
            "Verdict {} → {}: {}",
            text("from").unwrap_or("?").to_uppercase(),
            text("to").unwrap_or("?").to_uppercase(),
            text("reason").unwrap_or("")
        ),
        types::CANARY_PASSED => format!("Canary passed: {}", text("reason").unwrap_or("")),
        types::CANARY_FAILED => format!("Canary failed: {}", text("reason").unwrap_or("")),
        types::PROMOTED => format!("Promoted {release} ({})", source_word(e)),
        types::ROLLED_BACK => match text("baseline_deployment_id") {
            Some(b) => format!("Rolled back {release} to {b} ({})", source_word(e)),
            None => format!("Rolled back {release} ({})", source_word(e)),
        },
        types::INCIDENT_STARTED => format!(
            "Incident opened{}",
            text("title").map(|t| format!(": {t}")).unwrap_or_default()
        ),
        types::INCIDENT_RESOLVED => "Incident resolved".to_string(),
        types::SLO_RESTORED => "SLO restored".to_string(),
        other => other.replace('_', " "),
    }
}

fn source_word(e: &Event) -> &'static str {
    match e.source {
        crate::ledger::event::Source::Inferred => "seen in the telemetry",
        crate::ledger::event::Source::Api => "reported",
        crate::ledger::event::Source::Daemon => "by release-verdict",
    }
}

/// The check lines of a `verdict_changed` or `canary_failed` event:
/// `name: result, canary … vs baseline …`.
pub fn check_lines(e: &Event) -> Vec<String> {
    let Some(Value::Array(checks)) = e.metadata.get("checks") else {
        return Vec::new();
    };
    checks
        .iter()
        .filter_map(|c| {
            let name = c.get("name")?.as_str()?;
            let result = c.get("result")?.as_str()?;
            let numbers = |v: Option<&Value>| -> String {
                match v {
                    Some(Value::Object(m)) => m
                        .iter()
                        .filter(|(_, v)| v.is_number())
                        .take(4)
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => "–".into(),
                }
            };
            Some(format!(
                "{name}: {result} — canary {} | baseline {}",
                numbers(c.get("canary")),
                numbers(c.get("baseline"))
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::event::Source;

    fn event(kind: &str) -> Event {
        Event::new(kind, 1_763_800_000_000_000_000, Source::Daemon, "checkout")
            .for_release("prod", "checkout-2b5d9af")
    }

    #[test]
    fn the_state_follows_the_story() {
        let s = ReleaseState::default().after(
            &event(types::RELEASE_STARTED)
                .with_git_sha(Some("2b5d9af0c0ffee1234"))
                .with("verdict", "yellow")
                .with("baseline_deployment_id", "checkout-1a2b3c4"),
        );
        assert_eq!(s.status(), Status::Yellow);
        assert_eq!(s.short_sha(), "2b5d9af0c0ff");
        let s = s.after(
            &event(types::VERDICT_CHANGED)
                .with("verdict", "red")
                .with("reason", "errors"),
        );
        assert_eq!(s.status(), Status::Red);
        assert_eq!(s.reason.as_deref(), Some("errors"));
        assert_eq!(
            s.baseline_deployment_id.as_deref(),
            Some("checkout-1a2b3c4")
        );
        let s = s.after(&event(types::ROLLED_BACK));
        assert_eq!(s.status(), Status::RolledBack);
        assert_eq!(s.status().word(), "ROLLED BACK");
    }

    #[test]
    fn headlines_say_what_happened() {
        let e = event(types::VERDICT_CHANGED)
            .with("from", "yellow")
            .with("to", "red")
            .with("reason", "error ratio 5% vs 0.5%");
        assert_eq!(headline(&e), "Verdict YELLOW → RED: error ratio 5% vs 0.5%");
        let e = event(types::ROLLED_BACK).with("baseline_deployment_id", "checkout-1a2b3c4");
        assert!(headline(&e).starts_with("Rolled back checkout-2b5d9af to checkout-1a2b3c4"));
    }

    #[test]
    fn links_are_encoded() {
        let links = Links {
            page_url: "https://rv.example.com".into(),
            dashboard_url:
                "https://grafana.example.com/d/x?var-service={service}&var-release={deployment_id}"
                    .into(),
        };
        let s = ReleaseState {
            service: "check out".into(),
            deployment_id: "a/b".into(),
            ..Default::default()
        };
        assert_eq!(
            links.page(&s).unwrap(),
            "https://rv.example.com/#/release/check%20out//a%2Fb"
        );
        assert!(links
            .dashboard(&s)
            .unwrap()
            .contains("var-service=check%20out&var-release=a%2Fb"));
        assert_eq!(Links::default().page(&s), None);
    }
}
