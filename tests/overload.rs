//! Under overload every span is either counted or refused with an answer
//! OTLP clients retry — never silently dropped.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use release_verdict::config::Config;

const SPANS: u64 = 2_000;
const REQUESTS: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_equals_counted_under_overload() {
    let mut config = Config::default();
    config.server.max_inflight_requests = 1;
    let server = TestServer::with_config(config).await;
    let mut tasks = Vec::new();
    for t in 0..12u64 {
        let grpc = server.grpc_url();
        let http = server.url("/v1/traces");
        tasks.push(tokio::spawn(async move {
            let id = format!("r{}", t % 4);
            let req = trace_request(release_resource("svc", "prod", &id, "sha"), SPANS, 7);
            let (mut accepted, mut refused) = (0u64, 0u64);
            if t % 3 == 0 {
                let client = reqwest::Client::new();
                for _ in 0..REQUESTS {
                    let r = client
                        .post(&http)
                        .header("content-type", "application/x-protobuf")
                        .body(req.encode_to_vec())
                        .send()
                        .await
                        .unwrap();
                    match r.status().as_u16() {
                        200 => accepted += SPANS,
                        503 => {
                            assert_eq!(r.headers()["retry-after"], "1");
                            refused += SPANS;
                        }
                        other => panic!("unexpected HTTP {other}"),
                    }
                }
            } else {
                let mut client = TraceServiceClient::connect(grpc).await.unwrap();
                for _ in 0..REQUESTS {
                    match client.export(req.clone()).await {
                        Ok(r) => {
                            assert_eq!(r.into_inner().partial_success, None);
                            accepted += SPANS;
                        }
                        Err(status) => {
                            assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
                            assert!(!status.details().is_empty(), "RetryInfo is attached");
                            refused += SPANS;
                        }
                    }
                }
            }
            (accepted, refused)
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for t in tasks {
        let (a, r) = t.await.unwrap();
        accepted += a;
        refused += r;
    }
    assert_eq!(accepted + refused, 12 * REQUESTS as u64 * SPANS);
    assert!(
        refused > 0,
        "the daemon was never overloaded; the test proves nothing"
    );
    assert!(accepted > 0);
    let counted = server.counted_requests("service=svc").await;
    assert_eq!(counted, accepted, "accepted spans must all be counted");
    let metrics = server.metrics().await;
    let refused_requests: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("release_verdict_export_requests_refused_total")
                && l.contains("overloaded")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(refused_requests * SPANS, refused, "{metrics}");
    server.stop().await;
}
