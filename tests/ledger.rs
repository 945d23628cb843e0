//! The release ledger against the real daemon: the events it writes for a
//! canary, events posted from outside, and a restart that forgets nothing;
//! each on both databases (SQLite, and a real PostgreSQL) where both must
//! do it.

use std::time::Duration;

use crate::common::*;
use release_verdict::config::Config;
use release_verdict::otlp_kit::{release_resource, trace_request};
use serde_json::{json, Value};

const STABLE: &str = "checkout-1a2b3c4";
const CANARY: &str = "checkout-2b5d9af";

fn config(ledger: &str) -> Config {
    let mut c = Config::default();
    if release_verdict::ledger::is_postgres(ledger) {
        c.ledger.url = ledger.into();
    } else {
        c.ledger.path = ledger.into();
    }
    c.baseline.settle = Duration::from_millis(300);
    c
}

/// Sends a second of traffic: a healthy stable version and a canary failing
/// a third of its requests, until `done` holds of the canary's verdict.
async fn until_canary(server: &TestServer, done: impl Fn(&Value) -> bool) -> Value {
    let mut client = server.trace_client().await;
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
    let json = [("content-type", "application/json")];
    let r = server.post("/api/v1/events", &json, body.to_string()).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The ledgers a test runs on: SQLite's `sqlite` and a fresh PostgreSQL
/// database.
fn ledgers(sqlite: &str, name: &str) -> [String; 2] {
    [sqlite.to_string(), postgres::database(name)]
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
    for ledger in ledgers(":memory:", "story") {
        let server = TestServer::with_config(config(&ledger)).await;
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
}

#[tokio::test]
async fn posted_events_are_checked_and_idempotent() {
    for ledger in ledgers(":memory:", "posted") {
        let server = TestServer::with_config(config(&ledger)).await;
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
}

#[tokio::test]
async fn a_restart_remembers_red_at_once() {
    let dir = std::env::temp_dir().join(format!("rv-ledger-restart-{}", std::process::id()));
    let path = dir.join("ledger.db").to_string_lossy().into_owned();
    for ledger in ledgers(&path, "restart") {
        let server = TestServer::with_config(config(&ledger)).await;
        let red = until_canary(&server, |v| v["verdict"] == "red").await;
        server.stop().await;

        let server = TestServer::with_config(config(&ledger)).await;
        let (status, v) = server.get_json(&format!("/api/v1/releases/{CANARY}")).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["verdict"], "red", "{ledger}: {v}");
        assert_eq!(v["red_since"], red["red_since"]);
        assert_eq!(v["baseline"]["deployment_id"], STABLE);
        server.stop().await;
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The security review's cold start: the daemon restarts mid-rollout with
/// no checkpoint to restore (lost, or made under other settings), the
/// canary now serves most of the traffic and its exporter flushes first.
/// Traffic alone would make the canary the baseline; the ledger's record
/// of who was compared with whom keeps it on the stable version.
#[tokio::test]
async fn a_restart_without_the_checkpoint_keeps_the_baseline_by_the_ledger() {
    let dir = std::env::temp_dir().join(format!("rv-ledger-cold-{}", std::process::id()));
    let path = dir.join("ledger.db").to_string_lossy().into_owned();
    let server = TestServer::with_config(config(&path)).await;
    let mut judged = Value::Null;
    for _ in 0..100 {
        traffic(&server, &[(STABLE, 200, 0), (CANARY, 30, 0)], 1).await;
        let (_, v) = server.get_json(&format!("/api/v1/releases/{CANARY}")).await;
        if v["baseline"]["deployment_id"] == STABLE {
            judged = v;
            break;
        }
    }
    assert_eq!(judged["baseline"]["chosen_by"], "traffic", "{judged}");
    server.stop().await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM checkpoints", [])
        .unwrap();

    let server = TestServer::with_config(config(&path)).await;
    // The canary alone for longer than the settle time, then both, the
    // canary at 80%.
    traffic(&server, &[(CANARY, 160, 0)], 6).await;
    let mut last = Value::Null;
    for _ in 0..100 {
        traffic(&server, &[(CANARY, 160, 0), (STABLE, 40, 0)], 1).await;
        let (_, v) = server.get_json(&format!("/api/v1/releases/{CANARY}")).await;
        if v["baseline"]["chosen_by"] == "ledger" {
            last = v;
            break;
        }
        last = v;
    }
    assert_eq!(last["baseline"]["deployment_id"], STABLE, "{last}");
    assert_eq!(last["baseline"]["chosen_by"], "ledger", "{last}");
    let (_, stable) = server.get_json(&format!("/api/v1/releases/{STABLE}")).await;
    assert!(stable["baseline"].is_null(), "{stable}");
    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_expired_release_is_answered_from_the_ledger() {
    for ledger in ledgers(":memory:", "expired") {
        let mut c = config(&ledger);
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

/// Waits until an event of `kind` about `deployment_id` is recorded.
async fn until_event(server: &TestServer, kind: &str, deployment_id: &str) -> Value {
    let path = format!("/api/v1/events?type={kind}&deployment_id={deployment_id}");
    for _ in 0..200 {
        let (_, page) = server.get_json(&path).await;
        if let Some(e) = page["events"].as_array().and_then(|a| a.first()) {
            return e.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {kind} event for {deployment_id}");
}

/// Sends `rounds` of traffic from each of `releases` (resource, requests,
/// errors), 100 ms apart.
async fn traffic(server: &TestServer, releases: &[(&str, u64, u64)], rounds: usize) {
    let mut client = server.trace_client().await;
    for _ in 0..rounds {
        for &(id, requests, errors) in releases {
            let sha = id.rsplit('-').next().unwrap();
            let resource = release_resource("checkout", "prod", id, sha);
            client
                .export(trace_request(resource, requests, errors))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn quiet_after(quiet: Duration) -> Config {
    let mut c = config(":memory:");
    c.baseline.quiet = quiet;
    c
}

#[tokio::test]
async fn a_canary_that_goes_quiet_was_rolled_back() {
    let server = TestServer::with_config(quiet_after(Duration::from_secs(1))).await;
    until_canary(&server, |v| v["verdict"] == "red").await;
    // The controller aborts: only the stable version goes on reporting.
    let (stop, waiting) = (
        tokio_util::sync::CancellationToken::new(),
        until_event(&server, "rolled_back", CANARY),
    );
    let sending = async {
        while !stop.is_cancelled() {
            traffic(&server, &[(STABLE, 200, 0)], 1).await;
        }
    };
    let event = tokio::select! {
        e = waiting => { stop.cancel(); e }
        _ = sending => unreachable!(),
    };
    assert_eq!(event["source"], "inferred", "{event}");
    assert_eq!(event["metadata"]["baseline_deployment_id"], STABLE);
    let (_, promoted) = server.get_json("/api/v1/events?type=promoted").await;
    assert_eq!(promoted["events"], json!([]), "nothing was promoted");
    server.stop().await;
}

#[tokio::test]
async fn a_canary_whose_baseline_goes_quiet_was_promoted() {
    let server = TestServer::with_config(quiet_after(Duration::from_secs(1))).await;
    // Both report until the canary is judged against the stable version.
    let mut judged = false;
    for _ in 0..100 {
        traffic(&server, &[(STABLE, 200, 0), (CANARY, 30, 0)], 1).await;
        let (_, v) = server.get_json(&format!("/api/v1/releases/{CANARY}")).await;
        if v["baseline"]["deployment_id"] == STABLE {
            judged = true;
            break;
        }
    }
    assert!(judged, "the canary never got its baseline");
    // Fully rolled out: only the canary reports.
    let stop = tokio_util::sync::CancellationToken::new();
    let sending = async {
        while !stop.is_cancelled() {
            traffic(&server, &[(CANARY, 200, 0)], 1).await;
        }
    };
    let event = tokio::select! {
        e = until_event(&server, "promoted", CANARY) => { stop.cancel(); e }
        _ = sending => unreachable!(),
    };
    assert_eq!(event["source"], "inferred", "{event}");
    assert_eq!(event["git_sha"], "2b5d9af");
    assert_eq!(event["metadata"]["baseline_deployment_id"], STABLE);
    let (_, back) = server.get_json("/api/v1/events?type=rolled_back").await;
    assert_eq!(back["events"], json!([]), "nothing was rolled back");
    server.stop().await;
}

const HOUR: u64 = 3600;
const MINUTE: u64 = 60;

/// A day of checkout's releases with known DORA answers (see
/// `dora_answers_the_fixture`), starting at `d0` (Unix seconds, midnight).
fn dora_fixture(d0: u64) -> Vec<Value> {
    let at = |s: u64| {
        humantime::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(s)).to_string()
    };
    let mut events = Vec::new();
    let mut post = |kind: &str, ts: u64, fields: Value| {
        let mut e = json!({"type": kind, "ts": at(ts), "service": "checkout"});
        e.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        events.push(e);
    };
    for i in 1..=10u64 {
        let start = d0 + i * HOUR;
        let (id, sha) = (format!("checkout-r{i}"), format!("sha{i}"));
        let release = json!({"environment": "prod", "deployment_id": id, "git_sha": sha});
        post("deploy_started", start, release.clone());
        // The commit names only its sha and carries its own time: lead
        // times 30 + 10 i minutes.
        post(
            "commit",
            start - MINUTE,
            json!({"git_sha": sha, "metadata": {"commit_time": at(start - 10 * i * MINUTE)}}),
        );
        if i % 2 == 0 {
            // Later than the commit: does not change the lead time.
            post(
                "pr_merged",
                start - 5 * MINUTE,
                json!({"deployment_id": id}),
            );
        }
        match i {
            // Red, rolled back 7 minutes later.
            3 => {
                post("canary_failed", start + 5 * MINUTE, release.clone());
                post("rolled_back", start + 12 * MINUTE, release.clone());
            }
            // Promoted, then an incident naming no release (so, the last
            // one started), resolved 25 minutes later.
            6 => {
                post("promoted", start + 30 * MINUTE, release.clone());
                post(
                    "incident_started",
                    start + 40 * MINUTE,
                    json!({"environment": "prod"}),
                );
                post("incident_resolved", start + 65 * MINUTE, json!({}));
            }
            // Red, never rolled back: restored when r10 is promoted,
            // 87 minutes later.
            9 => post("canary_failed", start + 3 * MINUTE, release.clone()),
            _ => post("promoted", start + 30 * MINUTE, release.clone()),
        }
        post("verdict_changed", start + MINUTE, release);
    }
    events.push(
        json!({"type": "deploy_started", "ts": at(d0 + HOUR), "service": "search",
        "environment": "prod", "deployment_id": "search-1"}),
    );
    events
}

/// Midnight (UTC) three days ago, in Unix seconds.
fn three_days_ago() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    now - now % 86_400 - 3 * 86_400
}

#[tokio::test]
async fn dora_answers_the_fixture() {
    for ledger in ledgers(":memory:", "dora") {
        let mut c = config(&ledger);
        c.ledger.dora_refresh = Duration::from_secs(1);
        let server = TestServer::with_config(c).await;
        let d0 = three_days_ago();
        let (status, answer) = post(&server, json!({ "events": dora_fixture(d0) })).await;
        assert_eq!(status, 200, "{answer}");
        let at = |s: u64| {
            humantime::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(s)).to_string()
        };
        let (status, dora) = server
            .get_json(&format!(
                "/api/v1/dora?since={}&until={}",
                at(d0),
                at(d0 + 86_400)
            ))
            .await;
        assert_eq!(status, 200, "{dora}");
        let all = dora["dora"].as_array().unwrap();
        let services: Vec<&str> = all.iter().map(|r| r["service"].as_str().unwrap()).collect();
        assert_eq!(services, ["checkout", "search"]);
        let m = &all[0];
        assert_eq!(m["environment"], "prod");
        assert_eq!(m["releases_started"], 10);
        assert_eq!(m["failed_releases"], 3);
        assert_eq!(m["change_failure_rate"], 0.3);
        assert_eq!(m["deployments"], 8);
        assert_eq!(m["deploy_days"], 1);
        assert_eq!(m["deployments_per_day"], 8.0);
        // Lead times 40, 50, 70, 80, 90, 100, 110, 130 minutes.
        assert_eq!(
            m["lead_time_seconds"],
            json!({"count": 8, "median": 5100.0, "p90": 6960.0})
        );
        // Restores after 7, 25 and 87 minutes.
        assert_eq!(
            m["time_to_restore_seconds"],
            json!({"count": 3, "open": 0, "median": 1500.0, "p95": 4848.0})
        );

        // Narrowed, and cut by day: the second day is empty.
        let (_, by_day) = server
            .get_json(&format!(
                "/api/v1/dora?service=checkout&environment=prod&since={}&until={}&bucket=day",
                at(d0),
                at(d0 + 2 * 86_400)
            ))
            .await;
        let only = by_day["dora"].as_array().unwrap();
        assert_eq!(only.len(), 1, "{by_day}");
        let days: Vec<(u64, u64)> = only[0]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["releases_started"].as_u64().unwrap(),
                    b["deployments"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(days, [(10, 8), (0, 0)]);

        for bad in [
            "/api/v1/dora?since=monday",
            "/api/v1/dora?bucket=month",
            "/api/v1/dora?since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z",
            "/api/v1/dora?since=1970-01-01T00:00:00Z&bucket=day",
            "/api/v1/dora?team=payments",
        ] {
            let (status, e) = server.get_json(bad).await;
            assert_eq!(status, 400, "{bad}: {e}");
            assert!(e["error"].is_string(), "{e}");
        }

        // The gauges cover the trailing 30 days, which hold the fixture.
        let mut metrics = String::new();
        for _ in 0..100 {
            metrics = server.metrics().await;
            if metrics.contains("release_verdict_dora_deployments{") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let labels = r#"{service="checkout",environment="prod"}"#;
        for line in [
            format!("release_verdict_dora_deployments{labels} 8"),
            format!("release_verdict_dora_change_failure_rate{labels} 0.3"),
            format!("release_verdict_dora_releases_started{labels} 10"),
            r#"release_verdict_dora_lead_time_seconds{service="checkout",environment="prod",percentile="p50"} 5100"#.to_string(),
            r#"release_verdict_dora_time_to_restore_seconds{service="checkout",environment="prod",percentile="p95"} 4848"#.to_string(),
            "release_verdict_dora_window_seconds 2592000".to_string(),
        ] {
            assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
        }
        server.stop().await;
    }
}

/// Pages of the database file as another process sees them now.
fn file_bytes(path: &str) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let pragma = |name: &str| -> u64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    };
    pragma("page_count") * pragma("page_size")
}

/// The hostile round's write-token holder: junk stamped in 2200 is refused,
/// and a flood of posts keeps the file under its 1 MiB cap as each post
/// returns (not at the next upkeep, 10 minutes later), evicting the junk and
/// keeping the daemon's own story of a red canary. Fails before the change:
/// the far-future post is accepted, a post bigger than the cap too, and the
/// file grows to several MiB.
#[tokio::test]
async fn posted_junk_cannot_outgrow_the_cap_or_push_out_the_daemons_history() {
    let dir = std::env::temp_dir().join(format!("rv-ledger-cap-{}", std::process::id()));
    let path = dir.join("ledger.db").to_string_lossy().into_owned();
    let mut c = config(&path);
    let cap = 1 << 20;
    c.ledger.max_bytes = cap;
    let server = TestServer::with_config(c).await;

    let (status, bad) = post(
        &server,
        json!({"events": [
        {"type": "commit", "service": "checkout"},
        {"type": "commit", "service": "checkout", "ts": "2200-01-01T00:00:00Z"}]}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    let error = bad["error"].as_str().unwrap();
    assert!(
        error.starts_with("events[1].ts: ") && error.contains("ahead of the daemon's clock"),
        "{bad}"
    );

    until_canary(&server, |v| v["verdict"] == "red").await;
    let failed = format!("/api/v1/events?deployment_id={CANARY}&type=canary_failed");
    for _ in 0..100 {
        if server.get_json(&failed).await.1["events"][0].is_object() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pad = "j".repeat(15_000);
    let junk = |n: usize| -> Value {
        let events: Vec<Value> = (0..n)
            .map(|_| json!({"type": "commit", "service": "junk", "metadata": {"pad": pad}}))
            .collect();
        json!({ "events": events })
    };
    // A post bigger than the whole cap is refused, not paid for with the
    // daemon's history.
    let (status, full) = post(&server, junk(66)).await;
    assert_eq!(status, 507, "{full}");
    for round in 0..12 {
        let (status, answer) = post(&server, junk(30)).await;
        assert_eq!(status, 200, "round {round}: {answer}");
        let size = file_bytes(&path);
        assert!(
            size <= cap,
            "round {round}: {size} bytes past a {cap}-byte cap"
        );
    }
    let (_, kept) = server.get_json(&failed).await;
    assert_eq!(kept["events"][0]["source"], "daemon", "{kept}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("release_verdict_ledger_events_evicted{source=\"api\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("release_verdict_ledger_events_evicted{source=\"daemon\"} 0"),
        "the daemon's history is not evicted"
    );
    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
