//! OTLP in over real sockets: gRPC, HTTP protobuf, HTTP JSON with gzip, and
//! the read API showing exact counts.

use std::io::Write;
use std::time::Duration;

use crate::common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use release_verdict::config::Config;
use release_verdict::otlp_kit::{
    exponential_metric, exponential_point, kv, metrics_request, release_resource, resource_metrics,
    trace_request, CUMULATIVE, DELTA, REQUEST_DURATION,
};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn grpc_spans_are_counted_exactly() {
    let server = TestServer::start().await;
    let mut client = server.trace_client().await;
    let resource = release_resource("checkout", "prod", "checkout-2b5d9af", "2b5d9af");
    for _ in 0..4 {
        let resp = client
            .export(trace_request(resource.clone(), 10, 10))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.partial_success, None);
    }
    let v = server
        .wait_for_release("checkout-2b5d9af", |v| v["canary"]["requests"] == 40)
        .await;
    assert_eq!(v["canary"]["errors"], 4);
    assert_eq!(v["service"], "checkout");
    assert_eq!(v["environment"], "prod");
    assert_eq!(v["git_sha"], "2b5d9af");
    assert_eq!(v["verdict"], "yellow");
    server.stop().await;
}

#[tokio::test]
async fn http_protobuf_spans_are_counted_exactly() {
    let server = TestServer::start().await;
    let req = trace_request(release_resource("cart", "prod", "cart-1", "c1"), 40, 10);
    let resp = server.post_traces(&req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let body = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body.partial_success, None);
    let v = server
        .wait_for_release("cart-1", |v| v["canary"]["requests"] == 40)
        .await;
    assert_eq!(v["canary"]["errors"], 4);
    server.stop().await;
}

#[tokio::test]
async fn http_json_gzip_with_identity_on_span_attributes() {
    let server = TestServer::start().await;
    // The seed's Node example: identity set on the span, not the resource;
    // ids are hex, int64 as strings, enums as integers.
    let span = |i: u32, status: u32, code: &str| {
        format!(
            r#"{{"traceId":"5b8efff798038103d269b633813fc6{i:02x}","spanId":"eee19b7ec3c1b1{i:02x}","name":"POST /pay","kind":2,
               "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000250000000",
               "status":{{"code":{status}}},
               "attributes":[{{"key":"deployment.id","value":{{"stringValue":"pay/v2 #7"}}}},
                             {{"key":"git.sha","value":{{"stringValue":"abc123"}}}},
                             {{"key":"http.response.status_code","value":{{"intValue":"{code}"}}}}]}}"#
        )
    };
    let spans: Vec<String> = (0..10)
        .map(|i| match i {
            0 => span(i, 2, "200"),
            1 => span(i, 0, "502"),
            _ => span(i, 0, "200"),
        })
        .collect();
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"payments"}}}}]}},
             "scopeSpans":[{{"scope":{{"name":"manual"}},"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    );
    let json_gzip = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let resp = server
        .post("/v1/traces", &json_gzip, gzip(body.as_bytes()))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    // the id holds a slash, a space and a hash: percent-encoded in the path
    let v = server
        .wait_for_release("pay/v2 #7", |v| v["canary"]["requests"] == 10)
        .await;
    assert_eq!(v["canary"]["errors"], 2);
    assert_eq!(v["service"], "payments");
    assert_eq!(v["git_sha"], "abc123");
    server.stop().await;
}

#[tokio::test]
async fn the_busiest_deployment_is_the_baseline_whoever_reports_first() {
    let mut config = Config::default();
    config.baseline.settle = Duration::from_millis(500);
    let server = TestServer::with_config(config).await;
    let mut client = server.trace_client().await;
    // The canary's exporter reports first: arrival order must not matter.
    let canary = release_resource("checkout", "prod", "checkout-2b5d9af", "2b5d9af");
    client.export(trace_request(canary, 5, 0)).await.unwrap();
    let stable = release_resource("checkout", "prod", "checkout-1a2b3c4", "1a2b3c4");
    client
        .export(trace_request(stable.clone(), 50, 0))
        .await
        .unwrap();
    client.export(trace_request(stable, 10, 5)).await.unwrap();
    let v = server
        .wait_for_release_within("checkout-2b5d9af", Duration::from_secs(10), |v| {
            v["baseline"]["requests"] == 60
        })
        .await;
    assert_eq!(v["baseline"]["deployment_id"], "checkout-1a2b3c4");
    assert_eq!(v["baseline"]["git_sha"], "1a2b3c4");
    assert_eq!(v["baseline"]["errors"], 2);
    // the baseline itself has none, and says whom it serves
    let (_, stable_v) = server.get_json("/api/v1/releases/checkout-1a2b3c4").await;
    assert!(stable_v["baseline"].is_null());
    let reason = stable_v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("baseline of checkout-2b5d9af"),
        "{reason}"
    );
    server.stop().await;
}

#[tokio::test]
async fn lookups_narrow_and_disambiguate() {
    let server = TestServer::start().await;
    let mut client = server.trace_client().await;
    for env in ["prod", "staging"] {
        client
            .export(trace_request(
                release_resource("api", env, "v42", "s"),
                3,
                0,
            ))
            .await
            .unwrap();
    }
    let (status, body) = server.get_json("/api/v1/releases/v42").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["matches"].as_array().unwrap().len(), 2);
    let (status, body) = server
        .get_json("/api/v1/releases/v42?environment=staging")
        .await;
    assert_eq!(
        (status, body["environment"].as_str()),
        (200, Some("staging"))
    );
    let (status, body) = server.get_json("/api/v1/releases/nope").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"));
    let (status, body) = server
        .get_json("/api/v1/releases?service=api&environment=prod")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["releases"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn bad_http_input_gets_400_with_a_message() {
    let server = TestServer::start().await;
    let post = |ct: &'static str, body: Vec<u8>| {
        let server = &server;
        async move {
            let content_type = [("content-type", ct)];
            server.post("/v1/traces", &content_type, body).await
        }
    };
    let r = post(PROTOBUF, vec![0xff, 0xff, 0xff, 0x01]).await;
    assert_eq!(r.status(), 400);
    let status = release_verdict::RpcStatus::decode(r.bytes().await.unwrap()).unwrap();
    assert!(
        status.message.contains("invalid protobuf"),
        "{}",
        status.message
    );

    let r = post("application/json", b"{\"resourceSpans\": [".to_vec()).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid OTLP JSON"),
        "{body}"
    );

    let bad_id = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex!","spanId":"eee19b7ec3c1b174","kind":2}]}]}]}"#;
    let r = post("application/json", bad_id.as_bytes().to_vec()).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("invalid"),
        "{body}"
    );

    let r = post("text/plain", b"hi".to_vec()).await;
    assert_eq!(r.status(), 415);

    // protobuf that decodes but breaks the data model: every span invalid → 400
    let mut req = trace_request(release_resource("a", "b", "c", "d"), 2, 0);
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.trace_id = vec![1, 2, 3];
    }
    let r = server.post_traces(&req).await;
    assert_eq!(r.status(), 400);
    let status = release_verdict::RpcStatus::decode(r.bytes().await.unwrap()).unwrap();
    assert!(
        status.message.contains("trace_id must be 16 bytes"),
        "{}",
        status.message
    );

    // some spans invalid → partial success naming the problem
    let mut req = trace_request(release_resource("a", "b", "c", "d"), 3, 0);
    req.resource_spans[0].scope_spans[0].spans[1].span_id = vec![];
    let partial = server.export_traces(&req).await.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("spans[1]: span_id"),
        "{}",
        partial.error_message
    );

    let (status, _) = server.get_json("/api/v1/releases/c").await;
    assert_eq!(status, 200);
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused_as_too_large() {
    let mut config = Config::default();
    config.server.max_request_bytes = 64 * 1024;
    let server = TestServer::with_config(config).await;
    let big = trace_request(release_resource("a", "b", "big", "d"), 2_000, 0);
    assert!(big.encoded_len() > 64 * 1024);

    // HTTP, plain and as a gzip bomb that is small on the wire
    let r = server.post_traces(&big).await;
    assert_eq!(r.status(), 413);
    let bomb = gzip(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let protobuf_gzip = [("content-type", PROTOBUF), ("content-encoding", "gzip")];
    let r = server.post("/v1/traces", &protobuf_gzip, bomb).await;
    assert_eq!(r.status(), 413);

    // gRPC, plain and gzip-compressed
    let mut client = server.trace_client().await;
    let err = client.export(big.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let mut gz = server
        .trace_client()
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let err = gz.export(big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");

    // nothing of it was counted, and small requests still go through
    let (status, _) = server.get_json("/api/v1/releases/big").await;
    assert_eq!(status, 404);
    let ok = client
        .export(trace_request(
            release_resource("a", "b", "small", "d"),
            5,
            0,
        ))
        .await;
    assert!(ok.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn grpc_requests_of_only_invalid_spans_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = server.trace_client().await;
    let mut req = trace_request(release_resource("a", "b", "c", "d"), 2, 0);
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.span_id = vec![0; 8];
    }
    let err = client.export(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("span_id"), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn the_release_cap_refuses_and_counts_new_releases() {
    let mut config = Config::default();
    config.limits.max_releases = 3;
    let server = TestServer::with_config(config).await;
    let mut client = server.trace_client().await;
    let mut refused = 0;
    for i in 0..5 {
        let answer = client
            .export(trace_request(
                release_resource("s", "e", &format!("r{i}"), "x"),
                2,
                0,
            ))
            .await;
        match answer {
            Ok(resp) => assert_eq!(resp.into_inner().partial_success, None),
            // Refused whole for want of room: retried later by exporters.
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                assert!(status.message().contains("limit of 3"), "{status}");
                assert!(!status.details().is_empty(), "RetryInfo is attached");
                refused += 2;
            }
        }
    }
    assert_eq!(refused, 4);
    // A request with a known release and a new one: a partial success.
    let mut mixed = trace_request(release_resource("s", "e", "r0", "x"), 1, 0);
    mixed
        .resource_spans
        .extend(trace_request(release_resource("s", "e", "r9", "x"), 1, 0).resource_spans);
    let p = client
        .export(mixed)
        .await
        .unwrap()
        .into_inner()
        .partial_success
        .unwrap();
    assert_eq!(p.rejected_spans, 1);
    // known releases keep being counted at the cap
    client
        .export(trace_request(release_resource("s", "e", "r0", "x"), 2, 0))
        .await
        .unwrap();
    server
        .wait_for_release("r0", |v| v["canary"]["requests"] == 5)
        .await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("release_verdict_releases_tracked 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"release_verdict_items_refused_total{signal="spans",transport="grpc",reason="release_limit"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("release_verdict_releases_refused_total 3"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn spans_without_a_release_are_counted_and_ignored() {
    let server = TestServer::start().await;
    let mut client = server.trace_client().await;
    let resp = client
        .export(trace_request(vec![kv("service.name", "anon")], 7, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success, None);
    let (_, body) = server.get_json("/api/v1/releases").await;
    assert_eq!(body["releases"].as_array().unwrap().len(), 0);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"release_verdict_items_unattributed_total{signal="spans"} 7"#),
        "{metrics}"
    );
    server.stop().await;
}

/// The security review's poisoned stream: a cumulative exponential point at
/// scale 20 and an offset near i32::MAX, then its retry at scale 19, in the
/// same requests as a legitimate service. Each used to panic the request
/// and lose the other service's data.
#[tokio::test]
async fn a_poisoned_histogram_stream_is_refused_and_its_neighbours_counted() {
    let server = TestServer::start().await;
    let now = now_nanos();
    let resource = |id: &str, temporality: i32, scale: i32, offset: i32, time: u64| {
        let start = now - 1_000_000_000;
        let point = exponential_point(vec![], start, time, scale, offset, vec![1, 1]);
        resource_metrics(
            release_resource("pay", "prod", id, "abc1234"),
            vec![exponential_metric(
                REQUEST_DURATION,
                "s",
                temporality,
                vec![point],
            )],
        )
    };
    for (round, scale) in [(1u64, 20), (2, 19)] {
        let req = metrics_request(vec![
            resource("pay-poisoned", CUMULATIVE, scale, i32::MAX, now + round),
            // 0.1 s at scale 3: index -27.
            resource("pay-honest", DELTA, 3, -27, now + round),
        ]);
        let resp = server.post_metrics(&req).await;
        assert_eq!(resp.status(), 200, "round {round}");
        let body = ExportMetricsServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
        let partial = body.partial_success.expect("the poisoned point is refused");
        assert_eq!(partial.rejected_data_points, 1);
        assert!(partial.error_message.contains("2^±64"), "{partial:?}");
    }
    let v = server
        .wait_for_release("pay-honest", |v| v["canary"]["requests"] == 4)
        .await;
    assert_eq!(v["canary"]["errors"], 0);
    let (status, _) = server.get_json("/api/v1/releases/pay-poisoned").await;
    assert_eq!(status, 404, "nothing of the poisoned stream was recorded");
    server.stop().await;
}

/// The security review's forged role: one span claiming
/// `deployment.role=baseline` under a bad canary's identity left it yellow
/// "no baseline" for good and judged the real stable against it.
#[tokio::test]
async fn a_forged_role_claim_is_refused_and_the_canary_still_judged() {
    let mut config = Config::default();
    config.baseline.settle = Duration::from_millis(300);
    let server = TestServer::with_config(config).await;
    let mut client = server.trace_client().await;
    let stable = release_resource("checkout", "prod", "checkout-1a2b3c4", "1a2b3c4");
    let canary = release_resource("checkout", "prod", "checkout-bad0bad", "bad0bad");
    let mut judged = false;
    for _ in 0..100 {
        client
            .export(trace_request(stable.clone(), 200, 0))
            .await
            .unwrap();
        client
            .export(trace_request(canary.clone(), 20, 0))
            .await
            .unwrap();
        let (_, v) = server.get_json("/api/v1/releases/checkout-bad0bad").await;
        if v["baseline"]["deployment_id"] == "checkout-1a2b3c4" {
            judged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(judged, "the canary never got its baseline");
    let mut forged = canary.clone();
    forged.push(kv("deployment.role", "baseline"));
    let resp = client
        .export(trace_request(forged, 1, 0))
        .await
        .unwrap()
        .into_inner();
    let partial = resp.partial_success.expect("the claim is refused");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("claims deployment.role=baseline"),
        "{partial:?}"
    );
    // Still judged against the stable version (at a tick after the claim),
    // which still has no baseline.
    let (_, before) = server.get_json("/api/v1/releases/checkout-bad0bad").await;
    client
        .export(trace_request(stable.clone(), 200, 0))
        .await
        .unwrap();
    client
        .export(trace_request(canary.clone(), 20, 0))
        .await
        .unwrap();
    let v = server
        .wait_for_release("checkout-bad0bad", |v| {
            v["evaluated_at"] != before["evaluated_at"]
        })
        .await;
    assert_eq!(v["baseline"]["deployment_id"], "checkout-1a2b3c4");
    let (_, s) = server.get_json("/api/v1/releases/checkout-1a2b3c4").await;
    assert!(s["baseline"].is_null(), "{s}");
    let refused = server.metrics().await;
    assert!(
        refused.contains(r#"reason="role_conflict""#),
        "counted under its own reason"
    );
    server.stop().await;
}

/// Sends the stable's and the canary's traffic (the canary failing one
/// request in `every`) until the canary's verdict is `want`; returns it
/// and the canary's requests and errors sent.
async fn judged_until(
    server: &TestServer,
    client: &mut TraceServiceClient<tonic::transport::Channel>,
    stable: &[KeyValue],
    canary: &[KeyValue],
    every: u64,
    want: &str,
) -> (serde_json::Value, u64, u64) {
    let id = canary_id(canary);
    let (mut sent, mut failed) = (0u64, 0u64);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        client
            .export(trace_request(stable.to_vec(), 200, 0))
            .await
            .unwrap();
        client
            .export(trace_request(canary.to_vec(), 50, every))
            .await
            .unwrap();
        sent += 50;
        failed += 50u64.div_ceil(every);
        let (_, v) = server.get_json(&format!("/api/v1/releases/{id}")).await;
        if v["verdict"] == want {
            return (v, sent, failed);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {want}; last: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn canary_id(resource: &[KeyValue]) -> String {
    resource
        .iter()
        .find(|kv| kv.key == "deployment.id")
        .and_then(|kv| kv.value.as_ref())
        .map(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => String::new(),
        })
        .expect("a deployment.id")
}

/// Issue 28's forged baseline: one span claiming `deployment.role=baseline`
/// under a canary's id, sent before the canary's own telemetry, made the
/// canary (20% errors) the service's baseline, never judged. A claim its
/// own telemetry does not carry is withdrawn: the canary is judged against
/// the stable and red, its counts those sent.
#[tokio::test]
async fn a_role_claimed_before_the_canarys_own_telemetry_is_withdrawn() {
    let mut config = Config::default();
    config.baseline.settle = Duration::from_millis(300);
    config.judge.tick = Duration::from_millis(100);
    let server = TestServer::with_config(config).await;
    let mut client = server.trace_client().await;
    let stable = release_resource("pay", "prod", "pay-1111111", "1111111");
    let canary = release_resource("pay", "prod", "pay-bad0bad", "bad0bad");
    client
        .export(trace_request(stable.clone(), 200, 0))
        .await
        .unwrap();
    let mut forged = canary.clone();
    forged.push(kv("deployment.role", "baseline"));
    client.export(trace_request(forged, 1, 0)).await.unwrap();
    let (red, sent, failed) = judged_until(&server, &mut client, &stable, &canary, 5, "red").await;
    assert_eq!(red["baseline"]["deployment_id"], "pay-1111111", "{red}");
    assert_eq!(red["baseline"]["chosen_by"], "traffic", "{red}");
    // The forged span is a request of the canary's too.
    assert_eq!(red["canary"]["requests"], sent + 1, "{red}");
    assert_eq!(red["canary"]["errors"], failed, "{red}");
    server.stop().await;
}

/// Issue 28's injected baseline: a new deployment declaring `baseline`
/// with 40% errors, first seen well after the canary, took the stable's
/// place, and a canary at 10% errors went green against it. A late claim
/// is held off while the established baseline reports.
#[tokio::test]
async fn a_baseline_declared_after_the_canary_does_not_take_the_stables_place() {
    let mut config = Config::default();
    config.baseline.settle = Duration::from_millis(300);
    config.judge.tick = Duration::from_millis(100);
    let server = TestServer::with_config(config).await;
    let mut client = server.trace_client().await;
    let stable = release_resource("cart", "prod", "cart-1111111", "1111111");
    let canary = release_resource("cart", "prod", "cart-2222222", "2222222");
    let mut injected = release_resource("cart", "prod", "cart-6666666", "6666666");
    injected.push(kv("deployment.role", "baseline"));
    for _ in 0..10 {
        client
            .export(trace_request(stable.clone(), 200, 0))
            .await
            .unwrap();
        client
            .export(trace_request(canary.clone(), 5, 0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
        .wait_for_release("cart-2222222", |v| {
            v["baseline"]["deployment_id"] == "cart-1111111"
        })
        .await;
    // The injected baseline, failing every other request.
    for _ in 0..5 {
        client
            .export(trace_request(injected.clone(), 100, 2))
            .await
            .unwrap();
    }
    let (red, _, _) = judged_until(&server, &mut client, &stable, &canary, 10, "red").await;
    assert_eq!(red["baseline"]["deployment_id"], "cart-1111111", "{red}");
    let (_, injected) = server.get_json("/api/v1/releases/cart-6666666").await;
    assert_eq!(injected["role"], "baseline", "{injected}");
    server.stop().await;
}
