//! A user's first five minutes against the real daemon: `release-verdict
//! status` (the binary) read as text, in both forms, and as JSON; what
//! arrived from which service, attributed or not and why not; an HTTP/1.1
//! request on the gRPC port answered with the port to use; every counter
//! on `/metrics` at zero from the start.

use std::process::Command;

use release_verdict::otlp_kit::{kv, release_resource, trace_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::TestServer;

/// `release-verdict status ARGS --server URL`: its exit code and stdout
/// (then stderr). Run off the test's runtime, which serves the daemon.
async fn status(server: &TestServer, args: &[&str]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_release-verdict"));
    command
        .arg("status")
        .args(args)
        .args(["--server", &server.url("")])
        .env_remove("RELEASE_VERDICT_SERVER")
        .env_remove("RELEASE_VERDICT_TOKEN");
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the binary runs");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains('\x1b'), "no colour into a pipe:\n{stdout}");
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// An HTTP/1.1 request written on a raw socket, and everything answered.
async fn http1(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the answer ends: the connection is closed")
    .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

const NODE_EXPORT: &str = "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\n\
    User-Agent: OTel-OTLP-Exporter-JavaScript/0.200.0\r\n\
    Content-Type: application/x-protobuf\r\nContent-Length: 3\r\n\r\nabc";

#[tokio::test]
async fn status_tells_what_arrived_from_whom_and_why_not() {
    let server = TestServer::start().await;

    // Nothing yet: say so, and how to send.
    let (code, text) = status(&server, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with(
            "No release in flight.\n\nSenders: nothing has arrived since the daemon started.\n"
        ),
        "{text}"
    );
    assert!(text.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf  OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:4318"), "{text}");
    assert!(text.contains("OTEL_METRIC_EXPORT_INTERVAL"), "{text}");

    // A release with its (declared) baseline, a service without a
    // deployment id, and a Node exporter on the wrong port.
    let mut baseline = release_resource("checkout", "prod", "checkout-v1", "1111111aaaa");
    baseline.push(kv("deployment.role", "baseline"));
    server.export_traces(&trace_request(baseline, 40, 0)).await;
    server
        .export_traces(&trace_request(
            release_resource("checkout", "prod", "checkout-v2", "2222222bbbb"),
            10,
            0,
        ))
        .await;
    server
        .export_traces(&trace_request(vec![kv("service.name", "web")], 7, 0))
        .await;
    let answer = http1(server.grpc, NODE_EXPORT).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // In flight: one line per release, aligned.
    let (code, text) = status(&server, &["--senders"]).await;
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0], "VERDICT  SERVICE   ENVIRONMENT  DEPLOYMENT   SHA         AGE  REASON",
        "{text}"
    );
    assert!(
        lines[1].starts_with("yellow   checkout  prod         checkout-v1  1111111aaa  "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("yellow   checkout  prod         checkout-v2  2222222bbb  "),
        "{text}"
    );
    // ... and who sent what: web's spans are not judged, and why.
    let senders = &text[text.find("Senders since").expect(&text)..];
    let rows: Vec<&str> = senders.lines().skip(1).take(3).collect();
    assert_eq!(rows[0], "  SERVICE   SPANS WITH ID  WITHOUT  POINTS WITH ID  WITHOUT  LAST SEEN  NOT JUDGED BECAUSE", "{text}");
    assert!(
        rows[1].starts_with("  checkout  50             0        0               0        "),
        "{text}"
    );
    assert!(
        rows[2].starts_with("  web       0              7        0               0        ")
            && rows[2].ends_with("no deployment.id"),
        "{text}"
    );
    assert!(
        text.contains("web sent telemetry without deployment.id: it is counted and ignored"),
        "{text}"
    );
    assert!(text.contains("1 HTTP/1.1 request(s) reached the OTLP/gRPC port (last from OTel-OTLP-Exporter-JavaScript/0.200.0)"), "{text}");

    // One release: its story, once judged (a tick a second).
    server
        .wait_for_release_within("checkout-v2", std::time::Duration::from_secs(5), |v| {
            v["checks"].as_array().is_some_and(|c| !c.is_empty())
        })
        .await;
    let (code, text) = status(&server, &["checkout-v2"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("YELLOW checkout-v2 of checkout in prod (git 2222222bbb)\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  canary:   10 requests, 0 failed; first seen "),
        "{text}"
    );
    assert!(text.contains("\nChecks\n  CHECK "), "{text}");

    // JSON: the API's object.
    let (code, text) = status(&server, &["checkout-v2", "--output", "json"]).await;
    assert_eq!(code, 0, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(v["deployment_id"], "checkout-v2");
    assert_eq!(v["canary"]["requests"], 10);
    let (_, text) = status(&server, &["--senders", "--output", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(v["senders"][1]["service"], "web");
    assert_eq!(v["senders"][1]["missing"], "deployment.id");
    assert_eq!(v["grpc_port_http1"]["requests"], 1);

    // Unknown and unreachable say so and exit 3.
    let (code, text) = status(&server, &["nope"]).await;
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("no release with deployment id \"nope\""),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_release-verdict"))
        .args(["status", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap(); // nothing to serve on 9: blocking is harmless here
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[tokio::test]
async fn http1_on_the_grpc_port_is_answered_with_the_http_port() {
    let server = TestServer::start().await;
    let answer = http1(server.grpc, NODE_EXPORT).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect(&answer);
    assert!(head.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{answer}"
    );
    let port = server.http.port();
    assert!(body.contains(&format!("send to port {port}")), "{body}");
    assert!(
        body.contains(&format!("OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:{port}")),
        "{body}"
    );
    assert!(body.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{body}");
    // A GET too (a browser, curl): anything not HTTP/2.
    let answer = http1(server.grpc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(server
        .metrics()
        .await
        .contains("\nrelease_verdict_grpc_port_http1_requests_total 2\n"));
    // gRPC on the same port is untouched.
    let mut client = server.trace_client().await;
    let req = trace_request(release_resource("svc", "prod", "svc-1", "abc"), 3, 0);
    client.export(req).await.expect("a gRPC export still works");
    assert_eq!(server.counted_requests("service=svc").await, 3);
}

#[tokio::test]
async fn every_counter_is_present_at_zero_from_the_start() {
    let server = TestServer::start().await;
    let metrics = server.metrics().await;
    for series in [
        r#"release_verdict_items_unattributed_total{signal="spans"} 0"#,
        r#"release_verdict_items_unattributed_total{signal="points"} 0"#,
        r#"release_verdict_items_accepted_total{signal="points",transport="grpc"} 0"#,
        r#"release_verdict_items_refused_total{signal="spans",transport="http",reason="release_limit"} 0"#,
        r#"release_verdict_export_requests_refused_total{signal="spans",transport="grpc",reason="overloaded"} 0"#,
        r#"release_verdict_tls_reloads_total{result="error"} 0"#,
        "release_verdict_grpc_port_http1_requests_total 0",
        "release_verdict_releases_expired_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} missing from:\n{metrics}"
        );
    }
}
