//! The daemon judging live traffic: a healthy canary turns green, then
//! turns red when it starts failing.

use std::time::{Duration, Instant};

use crate::common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use release_verdict::config::Config;
use release_verdict::otlp_kit::{kv, release_resource, server_span, spans_request, trace_request};

async fn until(
    server: &TestServer,
    client: &mut TraceServiceClient<tonic::transport::Channel>,
    canary_error_every: u64,
    want: &str,
) -> serde_json::Value {
    let stable = release_resource("checkout", "prod", "checkout-1a2b3c4", "1a2b3c4");
    let canary = release_resource("checkout", "prod", "checkout-2b5d9af", "2b5d9af");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client
            .export(trace_request(stable.clone(), 180, 0))
            .await
            .unwrap();
        client
            .export(trace_request(canary.clone(), 60, canary_error_every))
            .await
            .unwrap();
        let (_, v) = server.get_json("/api/v1/releases/checkout-2b5d9af").await;
        if v["verdict"] == want {
            return v;
        }
        assert!(Instant::now() < deadline, "never {want}; last: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn healthy_canary_goes_green_then_red_when_it_fails() {
    let mut config = Config::default();
    config.judge.tick = Duration::from_millis(100);
    config.judge.epoch = Duration::from_secs(1);
    config.judge.min_duration = Duration::from_secs(1);
    config.judge.min_requests = 300;
    let server = TestServer::with_config(config).await;
    let mut client = server.trace_client().await;
    // the stable deployment serves first
    client
        .export(trace_request(
            release_resource("checkout", "prod", "checkout-1a2b3c4", "1a2b3c4"),
            100,
            0,
        ))
        .await
        .unwrap();
    server
        .wait_for_release("checkout-1a2b3c4", |v| v["canary"]["requests"] == 100)
        .await;

    let green = until(&server, &mut client, 0, "green").await;
    assert_eq!(green["baseline"]["deployment_id"], "checkout-1a2b3c4");
    assert!(
        green["reason"].as_str().unwrap().contains("promote"),
        "{green}"
    );
    let checks = green["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["result"] == "pass"), "{green}");

    let red = until(&server, &mut client, 3, "red").await;
    assert!(
        red["reason"].as_str().unwrap().contains("error ratio"),
        "{red}"
    );
    assert!(red["red_since"].is_string(), "{red}");
    let error_check = checks_named(&red, "error_ratio");
    assert_eq!(error_check["result"], "fail");
    assert!(
        error_check["canary"]["error_ratio"].as_f64().unwrap() > 0.01,
        "{red}"
    );
    assert_eq!(error_check["baseline"]["error_ratio"], 0.0);
    server.stop().await;
}

fn checks_named<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn a_new_kind_of_error_is_red_and_named_with_its_counts() {
    let mut config = Config::default();
    config.judge.tick = Duration::from_millis(100);
    config.judge.epoch = Duration::from_secs(1);
    let server = TestServer::with_config(config).await;
    let mut client = server.trace_client().await;
    let stable = release_resource("cart", "prod", "cart-1", "1111111");
    let canary = release_resource("cart", "prod", "cart-2", "2222222");
    client
        .export(trace_request(stable.clone(), 100, 0))
        .await
        .unwrap();
    server
        .wait_for_release("cart-1", |v| v["canary"]["requests"] == 100)
        .await;
    // The canary fails one request in 60 with a KeyError; the baseline
    // never does, and fails in proportion with its usual error otherwise.
    let (mut sent, mut key_errors) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    let red = loop {
        client
            .export(trace_request(stable.clone(), 180, 0))
            .await
            .unwrap();
        let spans = (0..60)
            .map(|i| {
                let mut s = server_span(sent + i, 10 + i % 50, i == 0);
                if i == 0 {
                    s.attributes.push(kv("error.type", "KeyError"));
                }
                s
            })
            .collect();
        client
            .export(spans_request(canary.clone(), spans))
            .await
            .unwrap();
        sent += 60;
        key_errors += 1;
        let (_, v) = server.get_json("/api/v1/releases/cart-2").await;
        if v["verdict"] == "red" {
            break v;
        }
        assert!(Instant::now() < deadline, "never red; last: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The lists are the judge's, as of its last tick: read them once a
    // tick has seen everything sent.
    let last = red["evaluated_at"].clone();
    let red = server
        .wait_for_release("cart-2", |v| v["evaluated_at"] != last)
        .await;
    let reason = red["reason"].as_str().unwrap();
    assert!(reason.contains("KeyError"), "{red}");
    assert_eq!(red["canary"]["requests"], sent, "{red}");
    assert_eq!(red["canary"]["errors"], key_errors, "{red}");
    assert_eq!(red["new_errors"][0]["kind"], "KeyError", "{red}");
    assert_eq!(red["new_errors"][0]["count"], key_errors, "{red}");
    let kind = &red["error_kinds"][0];
    assert_eq!(kind["kind"], "KeyError", "{red}");
    assert_eq!(kind["baseline"]["errors"], 0, "{red}");
    // Counted from the kind's first failure on (the test's start).
    let counted = kind["canary"]["errors"].as_u64().unwrap();
    assert!(counted >= 1 && counted <= key_errors, "{red}");
    assert!(
        kind["canary"]["requests"].as_u64().unwrap() <= sent,
        "{red}"
    );
    server.stop().await;
}
