//! Ledger events: the record, where it came from, the known types, and the
//! validation of events posted from outside. Pure data, no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{format_time, UnixNanos, NANOS_PER_SEC};

/// Longest id or string field accepted (`service`, `deployment_id`, ...).
pub const MAX_FIELD_BYTES: usize = 256;
/// Longest event type accepted.
pub const MAX_TYPE_BYTES: usize = 64;
/// Largest `metadata` object accepted, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Most events accepted in one post.
pub const MAX_EVENTS_PER_POST: usize = 1000;
/// The start of the ids of the daemon's once-per-release events
/// ([`Event::once_per_release`]); refused in posted events.
pub const DAEMON_ID_PREFIX: &str = "release-verdict:";
/// How far ahead of the daemon's clock a posted `ts` may be: room for a
/// sender's clock skew, not for events stamped in the far future (they
/// would sort after, and outlive, everything the ledger records).
pub const MAX_FUTURE_SECS: u64 = 300;

/// A red event's `exemplars` metadata holds at most this many requests
/// (messages link them).
pub const EVENT_EXEMPLARS: usize = 3;

/// Event types the daemon writes, infers or understands when posted. Any other
/// lowercase type may be posted too; DORA ignores the ones it does not use.
pub mod types {
    /// The daemon first saw a release (metadata: its baseline).
    pub const RELEASE_STARTED: &str = "release_started";
    /// A release's verdict changed color (metadata: from, to, reason, checks).
    pub const VERDICT_CHANGED: &str = "verdict_changed";
    /// A release turned green for the first time.
    pub const CANARY_PASSED: &str = "canary_passed";
    /// A release turned red.
    pub const CANARY_FAILED: &str = "canary_failed";
    /// The release replaced its baseline (inferred or posted).
    pub const PROMOTED: &str = "promoted";
    /// The release was withdrawn (inferred or posted).
    pub const ROLLED_BACK: &str = "rolled_back";
    /// A pull request was merged (posted).
    pub const PR_MERGED: &str = "pr_merged";
    /// A commit (posted; metadata `commit_time` may give its author time).
    pub const COMMIT: &str = "commit";
    /// A deployment began (posted).
    pub const DEPLOY_STARTED: &str = "deploy_started";
    /// An incident was opened (posted).
    pub const INCIDENT_STARTED: &str = "incident_started";
    /// An incident was closed (posted).
    pub const INCIDENT_RESOLVED: &str = "incident_resolved";
    /// The service meets its SLO again (posted).
    pub const SLO_RESTORED: &str = "slo_restored";
}

/// Who recorded an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The daemon, about its own verdicts.
    Daemon,
    /// Posted by CI, a controller or a person.
    Api,
    /// Inferred by the daemon from telemetry (who reports, who went quiet).
    Inferred,
}

impl Source {
    /// The name stored in the `source` column and served in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Daemon => "daemon",
            Source::Api => "api",
            Source::Inferred => "inferred",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source name that is none of `daemon`, `api`, `inferred`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event source {0:?}: expected daemon, api or inferred")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "daemon" => Ok(Source::Daemon),
            "api" => Ok(Source::Api),
            "inferred" => Ok(Source::Inferred),
            other => Err(UnknownSource(other.to_string())),
        }
    }
}

/// One thing that happened to a release or a service. Its JSON is what
/// `POST /api/v1/events` takes and `GET /api/v1/events` answers (the
/// README's *Release ledger*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "rfc3339")]
    pub ts: UnixNanos,
    pub service: String,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub git_sha: Option<String>,
    pub source: Source,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Makes a post idempotent: a second event with the same id is not
    /// recorded again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl Event {
    /// An event about `service` with no release, commit or metadata yet.
    pub fn new(kind: &str, ts: UnixNanos, source: Source, service: &str) -> Event {
        Event {
            kind: kind.to_string(),
            ts,
            service: service.to_string(),
            environment: None,
            deployment_id: None,
            git_sha: None,
            source,
            metadata: Map::new(),
            event_id: None,
        }
    }

    /// The same event, about one release of `service` in `environment`.
    pub fn for_release(mut self, environment: &str, deployment_id: &str) -> Event {
        self.environment = Some(environment.to_string());
        self.deployment_id = Some(deployment_id.to_string());
        self
    }

    /// The same event with its commit.
    pub fn with_git_sha(mut self, git_sha: Option<&str>) -> Event {
        self.git_sha = git_sha.map(str::to_string);
        self
    }

    /// The same event with the id that makes it once per release: a
    /// release's start, first green, red, or inferred rollout end is the
    /// same event whichever replica (or restart) records it, so replicas
    /// fed the same telemetry write it once. Posted ids may not take this
    /// form ([`DAEMON_ID_PREFIX`]).
    pub fn once_per_release(mut self) -> Event {
        self.event_id = Some(self.release_id());
        self
    }

    /// The same event with the id that makes it the release's `nth` of its
    /// kind: a release's third change of color is the same event whichever
    /// replica records it (they count the same changes from the same
    /// telemetry, and a replica taking a service over carries the count on).
    pub fn nth_of_release(mut self, nth: u32) -> Event {
        self.event_id = Some(format!("{}:{nth}", self.release_id()));
        self
    }

    fn release_id(&self) -> String {
        format!(
            "{DAEMON_ID_PREFIX}{}:{}:{}:{}",
            self.kind,
            self.service,
            self.environment.as_deref().unwrap_or(""),
            self.deployment_id.as_deref().unwrap_or("")
        )
    }

    /// The same event with one metadata entry set.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.metadata.insert(key.to_string(), value.into());
        self
    }
}

/// `ts` as RFC 3339: written with milliseconds in UTC, read with any offset.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{format_time, parse_time, UnixNanos};

    pub fn serialize<S: Serializer>(t: &UnixNanos, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixNanos, D::Error> {
        let s = String::deserialize(d)?;
        parse_time(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses RFC 3339 with a `Z` or `±hh:mm` offset into nanoseconds since the
/// epoch; the error says what is wrong, for a message naming the field.
pub fn parse_time(s: &str) -> Result<UnixNanos, String> {
    let bytes = s.as_bytes();
    let n = bytes.len();
    let (utc, offset_secs): (String, i64) =
        if n > 6 && matches!(bytes[n - 6], b'+' | b'-') && bytes[n - 3] == b':' {
            let hours: i64 = s[n - 5..n - 3].parse().map_err(|_| bad_offset(s))?;
            let minutes: i64 = s[n - 2..].parse().map_err(|_| bad_offset(s))?;
            if hours > 23 || minutes > 59 {
                return Err(bad_offset(s));
            }
            let sign = if bytes[n - 6] == b'-' { -1 } else { 1 };
            (
                format!("{}Z", &s[..n - 6]),
                sign * (hours * 3600 + minutes * 60),
            )
        } else if s.ends_with(['Z', 'z']) {
            (format!("{}Z", &s[..n - 1]), 0)
        } else {
            return Err(format!(
                "{s:?} has no time zone: end it with Z or an offset such as +02:00"
            ));
        };
    let time =
        humantime::parse_rfc3339(&utc).map_err(|e| format!("{s:?} is not RFC 3339 ({e})"))?;
    let nanos = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_nanos() as i128
        - offset_secs as i128 * NANOS_PER_SEC as i128;
    UnixNanos::try_from(nanos).map_err(|_| format!("{s:?} is before 1970"))
}

fn bad_offset(s: &str) -> String {
    format!("{s:?} has an invalid offset: expected ±hh:mm")
}

/// Why a posted body was refused. `TooMany` is an oversized request (HTTP
/// 413); the others are bad requests (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body must be one event object or {{\"events\": [...]}}")]
    Shape,
    #[error("{count} events in one post; at most {MAX_EVENTS_PER_POST} are accepted")]
    TooMany { count: usize },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: Problem },
}

/// What is wrong with one field of a posted event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("is required")]
    Missing,
    #[error("must be a string")]
    NotAString,
    #[error("must be lowercase letters, digits and _ (at most {MAX_TYPE_BYTES})")]
    BadType,
    #[error("is {len} bytes long; at most {MAX_FIELD_BYTES} are accepted")]
    TooLong { len: usize },
    #[error("must be an RFC 3339 time such as 2026-11-22T10:00:00Z: {0}")]
    BadTime(String),
    #[error("{0:?} is more than {MAX_FUTURE_SECS} s ahead of the daemon's clock")]
    TooFarAhead(String),
    #[error("must be a JSON object")]
    NotAnObject,
    #[error("is {len} bytes of JSON; at most {MAX_METADATA_BYTES} are accepted")]
    MetadataTooLarge { len: usize },
    #[error("must be \"api\" (or absent) for posted events")]
    NotApi,
    #[error("may not start with {DAEMON_ID_PREFIX:?}: the daemon's own events use it")]
    Reserved,
    #[error("is not an event field (type, ts, service, environment, deployment_id, git_sha, source, metadata, event_id)")]
    Unknown,
}

const FIELDS: [&str; 9] = [
    "type",
    "ts",
    "service",
    "environment",
    "deployment_id",
    "git_sha",
    "source",
    "metadata",
    "event_id",
];

/// Parses a `POST /api/v1/events` body: one event object, or `{"events":
/// [...]}` with at most [`MAX_EVENTS_PER_POST`]. Every event is checked and
/// the first problem is reported with its path (`events[3].type: ...`). An
/// event without `ts` happened at `now`, one more than [`MAX_FUTURE_SECS`]
/// after `now` is refused; posted events have source `api`.
pub fn parse_posted(body: &[u8], now: UnixNanos) -> Result<Vec<Event>, PostError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PostError::NotJson(e.to_string()))?;
    let Value::Object(mut top) = value else {
        return Err(PostError::Shape);
    };
    if !top.contains_key("events") {
        return Ok(vec![posted_event(&top, "", now)?]);
    }
    if top.len() != 1 {
        return Err(PostError::Shape);
    }
    let Some(Value::Array(items)) = top.remove("events") else {
        return Err(PostError::Shape);
    };
    if items.len() > MAX_EVENTS_PER_POST {
        return Err(PostError::TooMany { count: items.len() });
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let prefix = format!("events[{i}].");
            match item {
                Value::Object(fields) => posted_event(fields, &prefix, now),
                _ => Err(PostError::Invalid {
                    field: format!("events[{i}]"),
                    problem: Problem::NotAnObject,
                }),
            }
        })
        .collect()
}

/// One posted event object, its fields checked in their documented order.
fn posted_event(
    fields: &Map<String, Value>,
    prefix: &str,
    now: UnixNanos,
) -> Result<Event, PostError> {
    let invalid = |field: &str, problem| PostError::Invalid {
        field: format!("{prefix}{field}"),
        problem,
    };
    let kind = string(fields, "type")
        .map_err(|p| invalid("type", p))?
        .ok_or_else(|| invalid("type", Problem::Missing))?;
    let valid_type = kind.len() <= MAX_TYPE_BYTES
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid_type {
        return Err(invalid("type", Problem::BadType));
    }
    let ts = match fields.get("ts") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => {
            let ts = parse_time(s).map_err(|e| invalid("ts", Problem::BadTime(e)))?;
            if ts > now.saturating_add(MAX_FUTURE_SECS * NANOS_PER_SEC) {
                return Err(invalid("ts", Problem::TooFarAhead(s.clone())));
            }
            ts
        }
        Some(_) => return Err(invalid("ts", Problem::NotAString)),
    };
    let service = string(fields, "service")
        .map_err(|p| invalid("service", p))?
        .ok_or_else(|| invalid("service", Problem::Missing))?;
    let environment = string(fields, "environment").map_err(|p| invalid("environment", p))?;
    let deployment_id = string(fields, "deployment_id").map_err(|p| invalid("deployment_id", p))?;
    let git_sha = string(fields, "git_sha").map_err(|p| invalid("git_sha", p))?;
    match string(fields, "source").map_err(|p| invalid("source", p))? {
        None => {}
        Some(s) if s == Source::Api.as_str() => {}
        Some(_) => return Err(invalid("source", Problem::NotApi)),
    }
    let metadata = match fields.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            let len = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
            if len > MAX_METADATA_BYTES {
                return Err(invalid("metadata", Problem::MetadataTooLarge { len }));
            }
            m.clone()
        }
        Some(_) => return Err(invalid("metadata", Problem::NotAnObject)),
    };
    // DORA reads a commit's own time from here.
    match metadata.get("commit_time") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) => {
            parse_time(t).map_err(|e| invalid("metadata.commit_time", Problem::BadTime(e)))?;
        }
        Some(_) => return Err(invalid("metadata.commit_time", Problem::NotAString)),
    }
    let event_id = string(fields, "event_id").map_err(|p| invalid("event_id", p))?;
    if event_id
        .as_deref()
        .is_some_and(|id| id.starts_with(DAEMON_ID_PREFIX))
    {
        return Err(invalid("event_id", Problem::Reserved));
    }
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(unknown, Problem::Unknown));
    }
    Ok(Event {
        kind,
        ts,
        service,
        environment,
        deployment_id,
        git_sha,
        source: Source::Api,
        metadata,
        event_id,
    })
}

/// An optional string field: absent, null and "" are none.
fn string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, Problem> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_FIELD_BYTES => {
            Err(Problem::TooLong { len: s.len() })
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Problem::NotAString),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixNanos = 1_763_800_000 * NANOS_PER_SEC;

    fn error(body: &str) -> String {
        parse_posted(body.as_bytes(), NOW).unwrap_err().to_string()
    }

    #[test]
    fn one_event_or_a_batch() {
        let one = parse_posted(
            br#"{"type":"promoted","ts":"2025-11-22T08:26:40.5Z","service":"checkout",
                "environment":"prod","deployment_id":"checkout-2","git_sha":"2b5d",
                "metadata":{"by":"argo"},"event_id":"argo-1"}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        let e = &one[0];
        assert_eq!(e.ts, 1_763_800_000 * NANOS_PER_SEC + 500_000_000);
        assert_eq!(e.source, Source::Api);
        assert_eq!(e.deployment_id.as_deref(), Some("checkout-2"));
        assert_eq!(e.metadata["by"], "argo");
        assert_eq!(e.event_id.as_deref(), Some("argo-1"));

        let batch = parse_posted(
            br#"{"events":[{"type":"commit","service":"a","environment":""},
                           {"type":"x_1","service":"b","source":"api"}]}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].ts, NOW, "no ts means now");
        assert_eq!(batch[0].environment, None, "empty means absent");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            error(
                r#"{"events":[{"type":"a","service":"s"},{"type":"a","service":"s"},{"type":"a","service":"s"},{"type":"Promoted","service":"s"}]}"#
            ),
            "events[3].type: must be lowercase letters, digits and _ (at most 64)"
        );
        assert_eq!(error(r#"{"type":"a"}"#), "service: is required");
        assert_eq!(
            error(r#"{"type":"a","service":"s","ts":"2025-11-22 08:00"}"#),
            "ts: must be an RFC 3339 time such as 2026-11-22T10:00:00Z: \"2025-11-22 08:00\" has no time zone: end it with Z or an offset such as +02:00"
        );
        assert_eq!(
            error(r#"{"type":"a","service":"s","metadata":[1]}"#),
            "metadata: must be a JSON object"
        );
        assert_eq!(
            error(r#"{"type":"a","service":"s","source":"daemon"}"#),
            "source: must be \"api\" (or absent) for posted events"
        );
        assert!(error(r#"{"type":"a","service":"s","release_id":"r"}"#)
            .starts_with("release_id: is not an event field"));
        assert_eq!(
            error(r#"{"type":"a","service":7}"#),
            "service: must be a string"
        );
        assert_eq!(error("[1]"), PostError::Shape.to_string());
        assert_eq!(
            error(r#"{"events":[1]}"#),
            "events[0]: must be a JSON object"
        );
        assert!(
            error(r#"{"type":"commit","service":"s","metadata":{"commit_time":"yesterday"}}"#)
                .starts_with("metadata.commit_time: must be an RFC 3339 time")
        );
        assert!(error("{").starts_with("the body is not JSON"));
        assert_eq!(
            error(&format!(r#"{{"type":"{}","service":"s"}}"#, "a".repeat(65))),
            "type: must be lowercase letters, digits and _ (at most 64)"
        );
    }

    /// A sender's clock may run a little ahead; an event stamped far in the
    /// future (junk that would outlive the real history) is refused.
    #[test]
    fn a_ts_far_ahead_of_the_clock_is_refused() {
        let ahead = |secs: u64| format_time(NOW + secs * NANOS_PER_SEC);
        let ok = format!(
            r#"{{"type":"a","service":"s","ts":"{}"}}"#,
            ahead(MAX_FUTURE_SECS)
        );
        assert_eq!(
            parse_posted(ok.as_bytes(), NOW).unwrap()[0].ts,
            NOW + 300 * NANOS_PER_SEC
        );
        let late = ahead(MAX_FUTURE_SECS + 1);
        assert_eq!(
            error(&format!(
                r#"{{"events":[{{"type":"a","service":"s"}},{{"type":"a","service":"s","ts":"{late}"}}]}}"#
            )),
            format!("events[1].ts: \"{late}\" is more than 300 s ahead of the daemon's clock")
        );
        assert_eq!(
            error(r#"{"type":"a","service":"s","ts":"2200-01-01T00:00:00Z"}"#),
            "ts: \"2200-01-01T00:00:00Z\" is more than 300 s ahead of the daemon's clock"
        );
    }

    #[test]
    fn sizes_are_bounded() {
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        assert_eq!(
            error(&format!(
                r#"{{"type":"a","service":"s","deployment_id":"{long}"}}"#
            )),
            "deployment_id: is 257 bytes long; at most 256 are accepted"
        );
        let big = "y".repeat(MAX_METADATA_BYTES);
        assert!(error(&format!(
            r#"{{"type":"a","service":"s","metadata":{{"k":"{big}"}}}}"#
        ))
        .starts_with("metadata: is 16392 bytes of JSON"));
        let many = vec![r#"{"type":"a","service":"s"}"#; MAX_EVENTS_PER_POST + 1].join(",");
        assert_eq!(
            parse_posted(format!(r#"{{"events":[{many}]}}"#).as_bytes(), NOW),
            Err(PostError::TooMany { count: 1001 })
        );
    }

    #[test]
    fn times_with_offsets() {
        let utc = parse_time("2025-11-22T08:26:40Z").unwrap();
        assert_eq!(utc, 1_763_800_000 * NANOS_PER_SEC);
        assert_eq!(parse_time("2025-11-22T10:26:40+02:00").unwrap(), utc);
        assert_eq!(
            parse_time("2025-11-22T03:26:40.25-05:00").unwrap(),
            utc + 250_000_000
        );
        assert!(parse_time("2025-11-22T08:26:40+25:00").is_err());
        assert!(parse_time("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn json_shape_round_trips() {
        let e = Event::new(types::CANARY_FAILED, NOW, Source::Daemon, "checkout")
            .for_release("prod", "checkout-2")
            .with_git_sha(Some("2b5d"))
            .with("reason", "error ratio 4.9%");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "canary_failed", "ts": "2025-11-22T08:26:40.000Z",
                "service": "checkout", "environment": "prod", "deployment_id": "checkout-2",
                "git_sha": "2b5d", "source": "daemon", "metadata": {"reason": "error ratio 4.9%"}})
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
        assert_eq!("inferred".parse::<Source>(), Ok(Source::Inferred));
        assert_eq!(Source::Api.to_string(), "api");
        assert!("API".parse::<Source>().is_err());
    }
}
