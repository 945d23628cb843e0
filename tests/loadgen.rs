//! The load generator against a real daemon: every span it sends is
//! accounted for, and the regression it injects turns its canaries red.

use std::time::Duration;

use crate::common::TestServer;
use release_verdict::config::Config;
use release_verdict::loadgen::{run, Options, Payload};

fn options(target: String) -> Options {
    Options {
        target,
        rate: 20_000,
        duration: Duration::from_secs(3),
        services: 2,
        canary_weight: 0.2,
        baseline_error: 0.005,
        canary_error: 0.2,
        canary_slowdown: 1.0,
        service_prefix: "loadgen".into(),
        spans_per_request: 400,
        payload: Payload::Http,
        concurrency: 2,
        seed: 1,
        token: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_is_accounted_for_and_bad_canaries_turn_red() {
    // Both cohorts start together, so the baseline is chosen by traffic
    // after the settling time: keep it short beside a 3 s load.
    let mut config = Config::default();
    config.baseline.settle = Duration::from_millis(500);
    let server = TestServer::with_config(config).await;
    for target in [
        format!("grpc://{}", server.grpc),
        format!("http://{}", server.http),
    ] {
        let before = server.counted_requests("").await;
        let report = run(options(target.clone())).await.unwrap();
        assert!(report.spans_sent > 10_000, "{target}: {}", report.summary());
        assert_eq!(report.spans_failed, 0, "{target}: {}", report.summary());
        assert_eq!(
            report.spans_sent,
            report.spans_accepted + report.spans_rejected + report.spans_throttled
        );
        assert_eq!(
            server.counted_requests("").await - before,
            report.spans_accepted,
            "{}",
            report.summary()
        );
    }
    let v = server
        .wait_for_release_within("loadgen-0-canary", Duration::from_secs(10), |v| {
            v["verdict"] == "red"
        })
        .await;
    assert_eq!(v["baseline"]["deployment_id"], "loadgen-0-stable");
    server.stop().await;
}
