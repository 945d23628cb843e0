//! The release ledger against the real daemon: the events it writes for a
//! canary, events posted from outside, and a restart that forgets nothing.

mod common;

use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use release_verdict::config::Config;
use serde_json::{json, Value};

const STABLE: &str = "checkout-1a2b3c4";
const CANARY: &str = "checkout-2b5d9af";

fn config(ledger: &str) -> Config {
    let mut c = Config::default();
    c.ledger.path = ledger.into();
    c.baseline.settle = Duration::from_millis(300);
    c
}

/// Sends a second of traffic: a healthy stable version and a canary failing
/// a third of its requests, until `done` holds of the canary's verdict.
async fn until_canary(server: &TestServer, done: impl Fn(&Value) -> bool) -> Value {
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let stable = release_resource("checkout", "prod", STABLE, "1a2b3c4");
    let canary = release_resource("checkout", "prod", CANARY, "2b5d9af");
    let mut last = Value::Null;
    for _ in 0..100 {
        client
            .export(trace_request(stable.clone(), 200, 0))
            .await
            .unwrap();
        client
            .export(trace_request(canary.clone(), 30, 3))
            .await
            .unwrap();
        let (status, v) = server.get_json(&format!("/api/v1/releases/{CANARY}")).await;
        if status == 200 && done(&v) {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the canary never got there; last: {last}");
}

async fn post(server: &TestServer, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url("/api/v1/events"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn kinds(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_red_canary_leaves_its_story_in_the_ledger() {
    let server = TestServer::with_config(config(":memory:")).await;
    until_canary(&server, |v| v["verdict"] == "red").await;
    // Written off the judge's path: poll until committed.
    let (mut story, mut timeline) = (Vec::new(), Value::Null);
    for _ in 0..100 {
        (_, timeline) = server
            .get_json(&format!("/api/v1/releases/{CANARY}/timeline"))
            .await;
        story = kinds(&timeline);
        if story.contains(&"canary_failed".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        story.first().map(String::as_str),
        Some("release_started"),
        "{story:?}"
    );
    assert_eq!(
        story.last().map(String::as_str),
        Some("canary_failed"),
        "{story:?}"
    );
    // Unless its very first verdict was red, the turn to red is a change.
    if timeline["events"][0]["metadata"]["verdict"] != "red" {
        assert!(story.contains(&"verdict_changed".to_string()), "{story:?}");
    }
    let (status, failed) = server
        .get_json(&format!(
            "/api/v1/events?deployment_id={CANARY}&type=canary_failed"
        ))
        .await;
    assert_eq!(status, 200);
    let e = &failed["events"][0];
    assert_eq!(e["source"], "daemon");
    assert_eq!(e["git_sha"], "2b5d9af");
    assert_eq!(e["metadata"]["baseline_deployment_id"], STABLE);
    assert!(
        e["metadata"]["checks"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{e}"
    );
    server.stop().await;
}

#[tokio::test]
async fn posted_events_are_checked_and_idempotent() {
    let server = TestServer::with_config(config(":memory:")).await;
    let deploy = json!({"type": "deploy_started", "ts": "2026-11-22T10:00:00Z",
        "service": "checkout", "environment": "prod", "deployment_id": CANARY,
        "git_sha": "2b5d9af", "event_id": "ci-run-42", "metadata": {"pipeline": "42"}});
    let (status, first) = post(&server, deploy.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["results"][0]["status"], "inserted");
    let (status, again) = post(&server, json!({"events": [deploy]})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["results"][0]["status"], "duplicate");

    let (status, bad) = post(
        &server,
        json!({"events": [
        {"type": "commit", "service": "checkout"},
        {"type": "Deploy Started", "service": "checkout"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        bad["error"].as_str().unwrap().starts_with("events[1].type"),
        "{bad}"
    );
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"type": "commit", "service": "checkout"}))
        .collect();
    let (status, _) = post(&server, json!({ "events": many })).await;
    assert_eq!(status, 413);
    let (status, bad) = server.get_json("/api/v1/events?since=yesterday").await;
    assert_eq!(status, 400, "{bad}");

    let (_, listed) = server.get_json("/api/v1/events?type=deploy_started").await;
    assert_eq!(listed["events"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["events"][0]["source"], "api");
    assert_eq!(listed["events"][0]["ts"], "2026-11-22T10:00:00.000Z");
    server.stop().await;
}

#[tokio::test]
async fn a_restart_remembers_red_at_once() {
    let dir = std::env::temp_dir().join(format!("rv-ledger-restart-{}", std::process::id()));
    let path = dir.join("ledger.db").to_string_lossy().into_owned();
    let server = TestServer::with_config(config(&path)).await;
    let red = until_canary(&server, |v| v["verdict"] == "red").await;
    server.stop().await;

    let server = TestServer::with_config(config(&path)).await;
    let (status, v) = server.get_json(&format!("/api/v1/releases/{CANARY}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["verdict"], "red", "{v}");
    assert_eq!(v["red_since"], red["red_since"]);
    assert_eq!(v["baseline"]["deployment_id"], STABLE);
    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_expired_release_is_answered_from_the_ledger() {
    let mut c = config(":memory:");
    c.limits.release_idle_expiry = Duration::from_secs(1);
    let server = TestServer::with_config(c).await;
    let red = until_canary(&server, |v| v["verdict"] == "red").await;
    let mut last = Value::Null;
    for _ in 0..100 {
        let (_, v) = server.get_json(&format!("/api/v1/releases/{CANARY}")).await;
        if v["live"] == false {
            last = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["verdict"], "red", "{last}");
    assert_eq!(last["red_since"], red["red_since"]);
    let (_, listed) = server.get_json("/api/v1/releases").await;
    assert!(
        listed["releases"].as_array().unwrap().is_empty(),
        "expired from memory"
    );
    server.stop().await;
}

/// `release-verdict event` from a pipeline: recorded once however often a
/// step retries, refused with 64, unreachable with 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_command_posts_with_exit_codes() {
    let server = TestServer::with_config(config(":memory:")).await;
    let url = server.url("");
    let event = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_release-verdict"))
            .arg("event")
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let args = [
        "--server",
        &url,
        "--type",
        "promoted",
        "--service",
        "checkout",
        "--environment",
        "prod",
        "--deployment-id",
        CANARY,
        "--event-id",
        "argo-7",
        "--meta",
        "rollout=checkout",
    ];
    let (code, text) = tokio::task::block_in_place(|| event(&args));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("inserted"), "{text}");
    let (code, text) = tokio::task::block_in_place(|| event(&args));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("duplicate"), "{text}");
    let (code, text) = tokio::task::block_in_place(|| {
        event(&[
            "--server",
            &url,
            "--type",
            "Not A Type",
            "--service",
            "checkout",
        ])
    });
    assert_eq!(code, Some(64), "{text}");
    let (_, listed) = server.get_json("/api/v1/events?type=promoted").await;
    assert_eq!(listed["events"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["events"][0]["metadata"]["rollout"], "checkout");
    server.stop().await;
    let (code, _) = tokio::task::block_in_place(|| {
        event(&[
            "--server",
            &url,
            "--type",
            "commit",
            "--service",
            "checkout",
        ])
    });
    assert_eq!(code, Some(3));
}
