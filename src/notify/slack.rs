//! Slack's Web API (`chat.postMessage`, `chat.update`, with a bot token)
//! and incoming webhooks: the messages of a release's thread and how
//! Slack's answers are read. Pure: the dispatcher sends what this builds.
//!
//! A release's first event opens its thread with a message that shows
//! where the release stands; every later event is a reply in that thread
//! (`thread_ts`), and each change of standing also rewrites the opening
//! message (`chat.update`), so the channel shows every release's state at
//! a glance.

use serde_json::{json, Value};

use super::release::{check_lines, headline, red_where, short, traces, Links, ReleaseState, Trace};
use super::Failure;
use crate::ledger::event::{types, Event};

/// The Web API's base URL.
pub const API: &str = "https://slack.com/api";

/// Longest text Slack takes in a section block.
const SECTION_MAX: usize = 2900;
/// Longest text in a header block.
const HEADER_MAX: usize = 150;
/// Longest text of one of a section's fields (Slack's limit is 2,000).
const FIELD_MAX: usize = 1900;

/// Whether an event may open a release's thread (or Grafana region): one
/// posted from outside (CI's `deploy_started`, an incident), or one of the
/// daemon's that names the baseline the release is compared with. A stable
/// deployment (nobody's canary, or a baseline) gets no thread of its own.
pub fn opens_thread(e: &Event) -> bool {
    e.source == crate::ledger::event::Source::Api
        || e.metadata.contains_key("baseline_deployment_id")
}

/// Whether an event changes the opening message's standing.
pub fn changes_standing(e: &Event) -> bool {
    matches!(
        e.kind.as_str(),
        types::VERDICT_CHANGED
            | types::CANARY_PASSED
            | types::CANARY_FAILED
            | types::PROMOTED
            | types::ROLLED_BACK
            | types::INCIDENT_STARTED
            | types::INCIDENT_RESOLVED
            | types::SLO_RESTORED
    )
}

/// Escapes text for Slack's mrkdwn.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// "Traces: <url|failed, POST /checkout, 812 ms> · …": the requests
/// behind a red, linked only where a trace URL was configured (telemetry
/// text is never made a link).
fn traces_block(traces: &[Trace]) -> Option<Value> {
    let shown: Vec<String> = traces
        .iter()
        .map(|t| {
            let label = escape(&cut(&t.label, 120));
            match &t.url {
                Some(url) if !url.contains(['|', '>', '<']) => format!("<{url}|{label}>"),
                _ => format!("{label} `{}`", escape(&cut(&t.trace_id, 64))),
            }
        })
        .collect();
    (!shown.is_empty()).then(|| {
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&format!("*Traces:* {}", shown.join("  ·  ")), SECTION_MAX)}]})
    })
}

/// A section field: `*Title*\nvalue`, within Slack's limit.
fn field(title: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": cut(&format!("*{title}*\n{value}"), FIELD_MAX)})
}

fn links_block(s: &ReleaseState, links: &Links) -> Option<Value> {
    let mut parts = Vec::new();
    if let Some(url) = links.page(s) {
        parts.push(format!("<{url}|Release Health>"));
    }
    if let Some(url) = links.dashboard(s) {
        parts.push(format!("<{url}|Grafana>"));
    }
    (!parts.is_empty()).then(|| {
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": parts.join("  ·  ")}]})
    })
}

/// The opening message of a release's thread: its standing, reason, the
/// action, and who it is compared with. `{text, blocks}`.
pub fn opening(s: &ReleaseState, links: &Links) -> Value {
    let status = s.status();
    let title = format!(
        "{} {} — {} {} ({})",
        status.emoji(),
        status.word(),
        s.service,
        s.short_sha(),
        s.environment
    );
    let reason = s.reason.as_deref().unwrap_or("no verdict yet");
    let baseline = match (&s.baseline_deployment_id, &s.baseline_git_sha) {
        (Some(b), Some(sha)) => format!("{} ({})", escape(b), short(sha)),
        (Some(b), None) => escape(b),
        _ => "none yet".into(),
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "emoji": true, "text": cut(&title, HEADER_MAX)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!(
            "*{}*: {}\n*Do:* {}", status.word(), escape(reason), status.action()
        ), SECTION_MAX)}}),
        json!({"type": "section", "fields": fields(s, &baseline)}),
    ];
    if status == super::release::Status::Red {
        blocks.extend(traces_block(&s.traces));
    }
    if s.incident {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": ":rotating_light: *An incident is open against this release.*"}}));
    }
    blocks.extend(links_block(s, links));
    json!({
        "text": cut(&format!("{}: {} {} ({}) — {}", status.word(), s.service, s.deployment_id, s.environment, reason), SECTION_MAX),
        "blocks": blocks,
    })
}

/// The opening message's fields: the release, its baseline, commit, start
/// and, for a red, where it is.
fn fields(s: &ReleaseState, baseline: &str) -> Vec<Value> {
    let mut out = vec![
        field("Release", &escape(&s.deployment_id)),
        field("Baseline", baseline),
        field("Commit", &format!("`{}`", escape(s.short_sha()))),
        field("Started", &escape(&s.started_at)),
    ];
    if s.status() == super::release::Status::Red {
        if let Some(place) = &s.red_where {
            out.push(field("Where", &escape(place)));
        }
    }
    out
}

/// A reply in the thread: what happened, with the checks' numbers when
/// the event carries them. `{text, blocks}`.
pub fn reply(e: &Event, s: &ReleaseState, links: &Links) -> Value {
    let line = headline(e);
    let mut body = format!("*{}*", escape(&line));
    let checks = check_lines(e);
    if !checks.is_empty() {
        body.push_str("\n```");
        body.push_str(&escape(&checks.join("\n")));
        body.push_str("```");
    }
    if let Some(place) = red_where(e) {
        body = format!("{body}\n*Where:* {}", escape(&place));
    }
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&body, SECTION_MAX)}}),
    ];
    blocks.extend(traces_block(&traces(e)));
    blocks.extend(links_block(s, links));
    json!({"text": cut(&line, SECTION_MAX), "blocks": blocks})
}

/// A `chat.postMessage` body: `message` ({text, blocks}) in `channel`,
/// in the thread `thread_ts` if given. The delivery's idempotency key
/// rides in the message's metadata.
pub fn post_message(channel: &str, thread_ts: Option<&str>, message: &Value, key: &str) -> Value {
    let mut body = json!({
        "channel": channel,
        "text": message["text"],
        "blocks": message["blocks"],
        "unfurl_links": false,
        "metadata": {"event_type": "release_verdict_delivery", "event_payload": {"delivery_key": key}},
    });
    if let Some(ts) = thread_ts {
        body["thread_ts"] = json!(ts);
    }
    body
}

/// A `chat.update` body: the message `ts` in `channel` (the id Slack
/// answered with) becomes `message`.
pub fn update(channel: &str, ts: &str, message: &Value) -> Value {
    json!({"channel": channel, "ts": ts, "text": message["text"], "blocks": message["blocks"]})
}

/// The message a Web API call posted or updated: its channel id and ts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

/// Reads a Web API answer: HTTP 200 with `{"ok": true, "channel", "ts"}`
/// is success; `ok: false` names the error, and only rate limits and
/// Slack's own faults are worth retrying.
pub fn read_answer(
    status: u16,
    retry_after: Option<std::time::Duration>,
    body: &str,
) -> Result<Posted, Failure> {
    if status != 200 {
        return Err(Failure::from_status(status, retry_after, body));
    }
    let v: Value = serde_json::from_str(body)
        .map_err(|e| Failure::transient(format!("Slack answered with no JSON: {e}")))?;
    if v["ok"] == true {
        return match (v["channel"].as_str(), v["ts"].as_str()) {
            (Some(channel), Some(ts)) => Ok(Posted {
                channel: channel.into(),
                ts: ts.into(),
            }),
            _ => Err(Failure::transient("Slack's answer has no channel or ts")),
        };
    }
    let error = v["error"].as_str().unwrap_or("unknown_error");
    let retryable = matches!(
        error,
        "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
    );
    Err(Failure {
        message: format!("Slack: {error}"),
        permanent: !retryable,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::event::Source;

    fn red() -> ReleaseState {
        ReleaseState {
            service: "checkout".into(),
            environment: "prod".into(),
            deployment_id: "checkout-2b5d9af".into(),
            git_sha: Some("2b5d9af".into()),
            baseline_deployment_id: Some("checkout-1a2b3c4".into()),
            baseline_git_sha: Some("1a2b3c4".into()),
            verdict: Some("red".into()),
            reason: Some("error ratio 4.9% vs <0.5%>".into()),
            started_at: "2026-11-22T10:00:00.000Z".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_opening_message_says_the_standing_in_words() {
        let links = Links {
            page_url: "https://rv.example.com".into(),
            dashboard_url: String::new(),
        };
        let m = opening(&red(), &links);
        let text = m["text"].as_str().unwrap();
        assert!(
            text.starts_with("RED: checkout checkout-2b5d9af (prod)"),
            "{text}"
        );
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert!(blocks[0]["text"]["text"].as_str().unwrap().contains("RED"));
        let body = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(body.contains("&lt;0.5%&gt;"), "mrkdwn is escaped: {body}");
        assert!(body.contains("roll back"));
        assert!(m
            .to_string()
            .contains("https://rv.example.com/#/release/checkout/prod/checkout-2b5d9af"));
    }

    #[test]
    fn replies_go_in_the_thread_with_the_key() {
        let e = Event::new(types::VERDICT_CHANGED, 1, Source::Daemon, "checkout")
            .for_release("prod", "checkout-2b5d9af")
            .with("from", "yellow")
            .with("to", "red");
        let m = reply(&e, &red(), &Links::default());
        let body = post_message("C024BE91L", Some("1503435956.000247"), &m, "42-slack");
        assert_eq!(body["thread_ts"], "1503435956.000247");
        assert_eq!(body["channel"], "C024BE91L");
        assert_eq!(
            body["metadata"]["event_payload"]["delivery_key"],
            "42-slack"
        );
        assert!(body["text"].as_str().unwrap().contains("YELLOW → RED"));
    }

    #[test]
    fn a_red_names_where_and_links_its_traces_within_slacks_limits() {
        let long = "x".repeat(5000);
        let e = Event::new(types::CANARY_FAILED, 1, Source::Daemon, &long)
            .for_release("prod", &long)
            .with("verdict", "red")
            .with("reason", long.as_str())
            .with(
                "red_evidence",
                serde_json::json!({"check": "endpoint", "subject": "POST /checkout", "endpoint": "POST /checkout"}),
            )
            .with(
                "exemplars",
                serde_json::json!([
                    {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "value": 812.0, "failed": true,
                     "endpoint": "POST /checkout", "url": "https://traces.example.com/t/4bf92f35"},
                    {"trace_id": "00f067aa0ba902b7aaaaaaaaaaaaaaaa", "value": 9.0, "failed": true,
                     "endpoint": "<https://evil.example|click>"},
                    {"trace_id": "a", "failed": true}, {"trace_id": "b", "failed": true},
                ]),
            );
        let s = ReleaseState::default().after(&e);
        assert_eq!(s.red_where.as_deref(), Some("endpoint POST /checkout"));
        assert_eq!(s.traces.len(), 3, "at most three");
        for m in [
            opening(&s, &Links::default()),
            reply(&e, &s, &Links::default()),
        ] {
            let text = m.to_string();
            assert!(text.contains("POST /checkout"), "{text}");
            assert!(
                text.contains(
                    "<https://traces.example.com/t/4bf92f35|failed, POST /checkout, 812 ms>"
                ),
                "{text}"
            );
            // Telemetry text is never made a link.
            assert!(!text.contains("<https://evil.example"), "{text}");
            for block in m["blocks"].as_array().unwrap() {
                if let Some(fields) = block["fields"].as_array() {
                    assert!(fields.len() <= 10);
                    for f in fields {
                        assert!(f["text"].as_str().unwrap().chars().count() <= 2000);
                    }
                }
                let t = &block["text"]["text"];
                if let Some(t) = t.as_str() {
                    let max = if block["type"] == "header" { 150 } else { 3000 };
                    assert!(t.chars().count() <= max, "{}", block["type"]);
                }
                for el in block["elements"].as_array().into_iter().flatten() {
                    assert!(el["text"].as_str().unwrap().chars().count() <= 3000);
                }
            }
        }
    }

    #[test]
    fn answers_are_read_as_slack_documents_them() {
        let ok = read_answer(200, None, r#"{"ok":true,"channel":"C1","ts":"1.2"}"#).unwrap();
        assert_eq!(ok.ts, "1.2");
        let e = read_answer(200, None, r#"{"ok":false,"error":"channel_not_found"}"#).unwrap_err();
        assert!(e.permanent);
        let e = read_answer(200, None, r#"{"ok":false,"error":"ratelimited"}"#).unwrap_err();
        assert!(!e.permanent);
        let e = read_answer(429, Some(std::time::Duration::from_secs(3)), "").unwrap_err();
        assert!(!e.permanent);
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(3)));
    }
}
