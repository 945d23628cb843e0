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

/// Writes a tokens file through a temporary name and a rename, as a
/// secret manager does, so the daemon never reads half a file.
fn put(path: &std::path::Path, lines: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, lines).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The status of an (empty) OTLP/HTTP export to `url` with `token`.
async fn ingest_status(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `f` until it is true or 10 s pass.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_changed_tokens_file_is_in_force_without_a_restart_and_a_broken_one_is_not() {
    let dir = std::env::temp_dir().join(format!("rv-auth-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ingest");
    put(&file, "old-tok\nkept-tok\n");
    let mut config = Config::default();
    config.auth.ingest_tokens_file = file.to_string_lossy().into_owned();
    config.auth.reload_interval = Duration::from_millis(100);
    let server = TestServer::with_config(config).await;
    let url = server.url("");
    assert_eq!(ingest_status(&url, "old-tok").await, 200);
    assert_eq!(ingest_status(&url, "new-tok").await, 401);
    let reloads = |result: &'static str, n: u32| {
        let want = format!("release_verdict_token_reloads_total{{result=\"{result}\"}} {n}");
        let server = &server;
        move || {
            let want = want.clone();
            async move { server.metrics().await.contains(&want) }
        }
    };

    // One token revoked, one added: in force once the change is seen.
    put(&file, "# rotated\nkept-tok\nnew-tok\n");
    eventually("the changed file is reloaded", reloads("ok", 1)).await;
    assert_eq!(ingest_status(&url, "old-tok").await, 401, "revoked");
    assert_eq!(ingest_status(&url, "new-tok").await, 200, "added");
    assert_eq!(ingest_status(&url, "kept-tok").await, 200);

    // A file that holds no token is refused: the tokens in force stay,
    // and the failed reload is counted.
    put(&file, "# emptied by mistake\n");
    eventually("the failed reload is counted", reloads("error", 1)).await;
    assert_eq!(ingest_status(&url, "new-tok").await, 200);
    assert_eq!(ingest_status(&url, "old-tok").await, 401);
    let metrics = server.metrics().await;
    assert!(!metrics.contains("new-tok") && !metrics.contains("kept-tok"));
    server.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn sighup_reads_the_tokens_files_at_once() {
    let dir = std::env::temp_dir().join(format!("rv-auth-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("write");
    put(&file, "old-tok\n");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let grpc_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("config.toml");
    // Looked at once an hour: only the signal can make it read the file.
    std::fs::write(
        &config,
        format!(
            "[ledger]\npath = \":memory:\"\n[auth]\nwrite_tokens_file = {:?}\nreload_interval = \"1h\"\n",
            file.display().to_string()
        ),
    )
    .unwrap();
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_release-verdict"))
        .args(["serve", "--config", &config.display().to_string()])
        .args(["--http-listen", &format!("127.0.0.1:{port}")])
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let post = |token: &'static str| {
        let url = url.clone();
        async move {
            let event = serde_json::json!({"type": "deploy_started", "service": "svc"});
            match reqwest::Client::new()
                .post(format!("{url}/api/v1/events"))
                .bearer_auth(token)
                .json(&event)
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }
    };
    eventually("the daemon answers", || async {
        post("old-tok").await == 200
    })
    .await;
    put(&file, "new-tok\n");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("the new token is in force", || async {
        post("new-tok").await == 200
    })
    .await;
    assert_eq!(post("old-tok").await, 401, "revoked");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 28: one team's exporter could speak for another's deployments.
/// An ingest token limited to services (`TOKEN service=a,b`) has only
/// those services' telemetry taken, over both transports; the rest of the
/// same request is refused through partial success, named and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_token_speaks_only_for_its_services() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    use release_verdict::otlp_kit::{resource_spans, server_span};

    let dir = std::env::temp_dir().join(format!("rv-scope-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config::default();
    config.auth.ingest_tokens_file = tokens(
        &dir,
        "ingest",
        "# team checkout\nteam-tok service=checkout,checkout-worker\nplatform-tok\n",
    );
    let server = TestServer::with_config(config).await;
    // One request: 30 spans of checkout, 20 of pay (another team's).
    let request = |n: u64| ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                release_resource("checkout", "prod", &format!("checkout-{n}"), "s"),
                (0..30).map(|i| server_span(i, 10, false)).collect(),
            ),
            resource_spans(
                release_resource("pay", "prod", &format!("pay-{n}"), "s"),
                (0..20).map(|i| server_span(i, 10, false)).collect(),
            ),
        ],
    };

    let mut client = server.trace_client().await;
    let mut req = tonic::Request::new(request(1));
    req.metadata_mut()
        .insert("authorization", "Bearer team-tok".parse().unwrap());
    let answer = client.export(req).await.unwrap().into_inner();
    let partial = answer.partial_success.expect("pay refused");
    assert_eq!(partial.rejected_spans, 20);
    assert!(partial.error_message.contains("\"pay\""), "{partial:?}");

    let r = reqwest::Client::new()
        .post(server.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", "Bearer team-tok")
        .body(request(2).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A token without services speaks for any.
    let r = reqwest::Client::new()
        .post(server.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", "Bearer platform-tok")
        .body(request(3).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    for (id, want) in [
        ("checkout-1", Some(30)),
        ("checkout-2", Some(30)),
        ("pay-1", None),
        ("pay-2", None),
        ("checkout-3", Some(30)),
        ("pay-3", Some(20)),
    ] {
        let (status, v) = server.get_json(&format!("/api/v1/releases/{id}")).await;
        match want {
            Some(n) => assert_eq!(v["canary"]["requests"], n, "{id}: {v}"),
            None => assert_eq!(status, 404, "{id} was never taken: {v}"),
        }
    }
    let metrics = server.metrics().await;
    for transport in ["grpc", "http"] {
        let line = format!(
            r#"release_verdict_items_refused_total{{signal="spans",transport="{transport}",reason="out_of_scope"}} 20"#
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    server.stop().await;
}
