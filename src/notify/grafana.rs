//! Grafana's annotations HTTP API: a release marker at the release's first
//! event (`POST /api/annotations`), made a region ending at its final
//! verdict (`PATCH /api/annotations/{id}` with `timeEnd`), tagged so every
//! panel that queries annotations by tag shows it. Pure.

use serde_json::{json, Value};

use super::release::{ReleaseState, Status};
use super::Failure;
use crate::ledger::event::{types, Event};

/// Whether an event ends (or moves the end of) the release's region.
pub fn ends_region(e: &Event) -> bool {
    matches!(
        e.kind.as_str(),
        types::CANARY_PASSED | types::CANARY_FAILED | types::PROMOTED | types::ROLLED_BACK
    )
}

/// The annotation's tags: service, environment, deployment id, sha, verdict.
pub fn tags(s: &ReleaseState) -> Vec<String> {
    let verdict = match s.status() {
        Status::Deploying => "deploying",
        Status::Yellow => "yellow",
        Status::Green => "green",
        Status::Red => "red",
        Status::Promoted => "promoted",
        Status::RolledBack => "rolled_back",
    };
    let mut tags = vec!["deploy".to_string(), s.service.clone()];
    if !s.environment.is_empty() {
        tags.push(s.environment.clone());
    }
    if !s.deployment_id.is_empty() {
        tags.push(s.deployment_id.clone());
    }
    if let Some(sha) = &s.git_sha {
        tags.push(sha.clone());
    }
    tags.push(format!("verdict:{verdict}"));
    tags
}

fn text(s: &ReleaseState) -> String {
    let mut t = format!(
        "{}: release {} ({}) of {} to {}",
        s.status().word(),
        s.deployment_id,
        s.short_sha(),
        s.service,
        s.environment
    );
    if let Some(r) = &s.reason {
        t.push_str(" — ");
        t.push_str(r);
    }
    t
}

/// `POST /api/annotations`: a marker at `time_ms`, or a region when
/// `time_end_ms` is given.
pub fn create(
    s: &ReleaseState,
    time_ms: u64,
    time_end_ms: Option<u64>,
    dashboard_uid: &str,
) -> Value {
    let mut body = json!({"time": time_ms, "tags": tags(s), "text": text(s)});
    if let Some(end) = time_end_ms {
        body["timeEnd"] = json!(end.max(time_ms));
    }
    if !dashboard_uid.is_empty() {
        body["dashboardUID"] = json!(dashboard_uid);
    }
    body
}

/// `PATCH /api/annotations/{id}`: the region now ends at `time_end_ms`,
/// with the release's standing in its tags and text.
pub fn extend(s: &ReleaseState, time_ms: u64, time_end_ms: u64) -> Value {
    json!({"time": time_ms, "timeEnd": time_end_ms.max(time_ms), "tags": tags(s), "text": text(s)})
}

/// Reads the answer to a create: `{"id": 1, "message": "Annotation added"}`.
pub fn read_created(
    status: u16,
    retry_after: Option<std::time::Duration>,
    body: &str,
) -> Result<u64, Failure> {
    if !(200..300).contains(&status) {
        return Err(Failure::from_status(status, retry_after, body));
    }
    let v: Value = serde_json::from_str(body)
        .map_err(|e| Failure::transient(format!("Grafana answered with no JSON: {e}")))?;
    v["id"]
        .as_u64()
        .ok_or_else(|| Failure::transient("Grafana's answer has no annotation id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_a_tagged_region() {
        let s = ReleaseState {
            service: "checkout".into(),
            environment: "prod".into(),
            deployment_id: "checkout-2b5d9af".into(),
            git_sha: Some("2b5d9af".into()),
            verdict: Some("red".into()),
            ..Default::default()
        };
        let c = create(&s, 1_000, None, "abc");
        assert_eq!(c["time"], 1_000);
        assert!(c.get("timeEnd").is_none());
        assert_eq!(c["dashboardUID"], "abc");
        assert_eq!(
            c["tags"],
            json!([
                "deploy",
                "checkout",
                "prod",
                "checkout-2b5d9af",
                "2b5d9af",
                "verdict:red"
            ])
        );
        let p = extend(&s, 1_000, 5_000);
        assert_eq!(p["timeEnd"], 5_000);
        assert!(p["text"]
            .as_str()
            .unwrap()
            .starts_with("RED: release checkout-2b5d9af"));
        assert_eq!(
            read_created(200, None, r#"{"id":7,"message":"Annotation added"}"#),
            Ok(7)
        );
        assert!(read_created(401, None, "").unwrap_err().permanent);
    }
}
