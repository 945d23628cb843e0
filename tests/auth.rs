//! Bearer tokens by scope against the real daemon: loadgen and the SDK-like
//! clients over both transports, the read API, posted events, health.

use std::time::Duration;

use crate::common::*;
use release_verdict::config::Config;
use release_verdict::loadgen::{run, Options, Payload};
use release_verdict::otlp_kit::{release_resource, trace_request};

fn tokens(dir: &std::path::Path, name: &str, lines: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, lines).unwrap();
    path.to_string_lossy().into_owned()
}

fn loadgen(target: String, token: Option<&str>) -> Options {
    Options {
        target,
        rate: 5_000,
        duration: Duration::from_secs(1),
        services: 1,
        canary_weight: 0.2,
        baseline_error: 0.0,
        canary_error: 0.0,
        canary_slowdown: 1.0,
        service_prefix: "loadgen".into(),
        spans_per_request: 100,
        payload: Payload::Small,
        concurrency: 1,
        seed: 1,
        token: token.map(str::to_string),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_takes_its_own_tokens() {
    let dir = std::env::temp_dir().join(format!("rv-auth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config::default();
    config.auth.ingest_tokens_file = tokens(&dir, "ingest", "# collectors\ningest-tok\n");
    config.auth.write_tokens_file = tokens(&dir, "write", "ci-tok\n");
    let server = TestServer::with_config(config).await;

    // Telemetry: counted with the token, refused (and counted as such)
    // without, over both transports.
    for target in [
        format!("grpc://{}", server.grpc),
        format!("http://{}", server.http),
    ] {
        let before = server.counted_requests("").await;
        let with = run(loadgen(target.clone(), Some("ingest-tok")))
            .await
            .unwrap();
        assert!(with.spans_accepted > 0, "{target}: {}", with.summary());
        assert_eq!(with.spans_failed, 0, "{target}: {}", with.summary());
        assert_eq!(
            server.counted_requests("").await - before,
            with.spans_accepted
        );
        let without = run(loadgen(target.clone(), None)).await.unwrap();
        assert_eq!(without.spans_accepted, 0, "{target}: {}", without.summary());
        let wrong = run(loadgen(target.clone(), Some("ci-tok"))).await.unwrap();
        assert_eq!(wrong.spans_accepted, 0, "a write token does not ingest");
    }
    let mut client = server.trace_client().await;
    let status = client
        .export(trace_request(
            release_resource("svc", "prod", "x", "s"),
            1,
            0,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("ingest token is required"),
        "{status}"
    );
    let r = server
        .post(
            "/v1/traces",
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer nope"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"reason="unauthenticated""#),
        "refusals are counted"
    );

    // Posted events need the write token; reading stays open here.
    let event = serde_json::json!({"type": "deploy_started", "service": "svc"});
    let http = reqwest::Client::new();
    let r = http
        .post(server.url("/api/v1/events"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(server.url("/api/v1/events"))
        .bearer_auth("ci-tok")
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = server.get_json("/api/v1/events").await;
    assert_eq!(status, 200);
    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn reading_takes_a_read_token_and_health_none() {
    let dir = std::env::temp_dir().join(format!("rv-auth-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config::default();
    config.auth.read_tokens_file = tokens(&dir, "read", "grafana\nargo\n");
    let server = TestServer::with_config(config).await;
    let http = reqwest::Client::new();
    for path in [
        "/api/v1/releases",
        "/metrics",
        "/api/v1/dora",
        "/api/v1/events",
    ] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(server.url(path))
            .bearer_auth("argo")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for path in ["/healthz", "/readyz"] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The verdict service over gRPC too; ingest stays open.
    let mut client = server.trace_client().await;
    client
        .export(trace_request(
            release_resource("svc", "prod", "x", "s"),
            1,
            0,
        ))
        .await
        .unwrap();
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let denied = grpc
        .unary::<_, (), _>(
            tonic::Request::new(()),
            "/release_verdict.v1.VerdictService/ListVerdicts"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{denied}");
    // The gate takes the token from the environment.
    let url = server.url("");
    let gate = move |token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_release-verdict"));
        cmd.args(["gate", "--server", &url, "--deployment-id", "x"]);
        cmd.args(["--timeout", "1s", "--interval", "100ms"]);
        cmd.env_remove("RELEASE_VERDICT_TOKEN");
        if let Some(t) = token {
            cmd.env("RELEASE_VERDICT_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ((without, why), (with, _)) =
        tokio::task::spawn_blocking(move || (gate(None), gate(Some("grafana"))))
            .await
            .unwrap();
    assert_eq!(without, Some(3), "{why}");
    assert!(why.contains("read token is required"), "{why}");
    assert_eq!(with, Some(2), "read with the token: yellow at the timeout");
    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
