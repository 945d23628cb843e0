//! Under overload every span is either counted or refused with an answer
//! OTLP clients retry — never silently dropped.

use crate::common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use release_verdict::config::Config;
use release_verdict::otlp_kit::{release_resource, trace_request};

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
                    let r = post_protobuf(&client, &http, &req).await;
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

/// The security review's slow senders: 64 connections that announce a body
/// and send one byte of it used to hold every in-flight place, so all HTTP
/// and gRPC exports failed for as long as they stayed open. Bodies are now
/// read before a place is taken: slow senders cost their own connections
/// only, and are answered 408 once `body_read_timeout` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_hold_no_place_of_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = Config::default();
    config.server.body_read_timeout = std::time::Duration::from_secs(2);
    let server = TestServer::with_config(config).await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut conn = tokio::net::TcpStream::connect(server.http).await.unwrap();
        conn.write_all(
            b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 1000\r\n\r\n\x0a",
        )
        .await
        .unwrap();
        slow.push(conn);
    }
    // Every in-flight place is free for the others, over both transports.
    let req = trace_request(release_resource("svc", "prod", "fast", "sha"), 10, 0);
    let r = server.post_traces(&req).await;
    assert_eq!(r.status(), 200);
    let mut client = server.trace_client().await;
    client.export(req).await.unwrap();
    assert_eq!(server.counted_requests("service=svc").await, 20);
    // The slow ones are told why, after the timeout.
    let mut answer = vec![0u8; 1024];
    let n = slow[0].read(&mut answer).await.unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("body_read_timeout"), "{head}");
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"reason="slow_body""#), "counted");
    server.stop().await;
}

/// Bodies being read hold at most `max_buffered_bytes`; past it a body is
/// refused with an answer OTLP clients retry, and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_being_read_are_bounded_in_bytes() {
    use tokio::io::AsyncWriteExt;

    let mut config = Config::default();
    config.server.max_request_bytes = 1 << 20;
    config.server.max_buffered_bytes = 1 << 20;
    let server = TestServer::with_config(config).await;
    // One sender holds almost the whole budget, slowly.
    let mut hog = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let almost = (1 << 20) - 100;
    hog.write_all(
        format!("POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n", almost + 50).as_bytes(),
    )
    .await
    .unwrap();
    hog.write_all(&vec![0u8; almost]).await.unwrap();
    // Probing before the hog's bytes are all held could make the hog the
    // body refused (whichever frame overflows is), so wait until they are.
    wait_for_buffered(&server, |held| held >= almost).await;
    let req = trace_request(release_resource("svc", "prod", "fast", "sha"), 50, 0);
    let r = server.post_traces(&req).await;
    assert_eq!(r.status(), 503, "the budget is full");
    assert_eq!(r.headers()["retry-after"], "1");
    drop(hog);
    // Once the hog is gone its bytes are free again.
    wait_for_buffered(&server, |held| held == 0).await;
    let r = server.post_traces(&req).await;
    assert_eq!(r.status(), 200, "the budget came back");
    server.stop().await;
}

/// One sender (an address) holds at most `max_buffered_bytes_per_peer` of
/// bodies being read: its next body is refused (429, retried), while
/// another sender's body still fits. (Before the share, the flooder's
/// third body was taken and the budget was everyone's to lose.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sender_holds_only_its_share_of_bodies_being_read() {
    use tokio::io::AsyncWriteExt;

    let mut config = Config::default();
    config.server.max_request_bytes = 1 << 20;
    config.server.max_buffered_bytes = 3 << 20;
    config.server.max_buffered_bytes_per_peer = 2 << 20;
    let server = TestServer::with_config(config).await;
    let flooder = std::net::IpAddr::from([127, 0, 0, 2]);
    // Two unfinished bodies from the flooder's address: its whole share.
    let almost = (1 << 20) - 100;
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((flooder, 0).into()).unwrap();
        let mut hog = socket.connect(server.http).await.unwrap();
        hog.write_all(
            format!("POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n", almost + 50).as_bytes(),
        )
        .await
        .unwrap();
        hog.write_all(&vec![0u8; almost]).await.unwrap();
        hogs.push(hog);
    }
    wait_for_buffered(&server, |held| held >= 2 * almost).await;

    // The flooder's next body, however small, is over its share.
    let req = trace_request(release_resource("svc", "prod", "fast", "sha"), 50, 0);
    let body = prost::Message::encode_to_vec(&req);
    let from_flooder = reqwest::Client::builder()
        .local_address(flooder)
        .build()
        .unwrap();
    let r = from_flooder
        .post(server.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "over the flooder's share");
    assert_eq!(r.headers()["retry-after"], "1");
    // Another sender's body fits in what the share left.
    let r = server.post_traces(&req).await;
    assert_eq!(r.status(), 200, "another sender is not locked out");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"release_verdict_export_requests_refused_total{signal="spans",transport="http",reason="overloaded"} 1"#),
        "the refusal is counted: {metrics}"
    );

    drop(hogs);
    wait_for_buffered(&server, |held| held == 0).await;
    let r = from_flooder
        .post(server.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the share came back");
    server.stop().await;
}

/// Polls `/metrics` until the bytes of bodies being read satisfy `done`
/// (the hog's bytes travel over loopback, so they are not held at once).
async fn wait_for_buffered(server: &TestServer, done: impl Fn(usize) -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let metrics = server.metrics().await;
        let held = metrics
            .lines()
            .find_map(|l| l.strip_prefix("release_verdict_request_body_bytes_buffered "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .expect("the buffered-bytes gauge is exposed");
        if done(held) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bodies still hold {held} bytes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
