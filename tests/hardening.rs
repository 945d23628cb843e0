//! The security review's reproductions (issue 12), each over real sockets against the real daemon.

use std::time::{Duration, Instant};

use crate::common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, Metric, ResourceMetrics};
use prost::Message;
use release_verdict::config::Config;
use release_verdict::otlp_kit::{
    exponential_metric, exponential_point, histogram_metric, histogram_point, kv, metrics_request,
    release_resource, resource_metrics, server_span, spans_request, CUMULATIVE, DELTA,
    REQUEST_DURATION,
};
use release_verdict::RpcStatus;

/// The verdict service's client, as build.rs generates it from proto/.
#[allow(dead_code)] // the generated server side and messages are unused here
mod pb {
    tonic::include_proto!("release_verdict.v1");
}

/// gRPC `RESOURCE_EXHAUSTED`, as an OTLP/HTTP error body carries it.
const RESOURCE_EXHAUSTED: i32 = tonic::Code::ResourceExhausted as i32;

/// An explicit-bucket point; `count` and the buckets are given apart, as a
/// forger would give them.
fn point(count: u64, bounds: Vec<f64>, bucket_counts: Vec<u64>) -> HistogramDataPoint {
    HistogramDataPoint {
        count,
        ..histogram_point(vec![], 0, 0, bounds, bucket_counts)
    }
}

/// `n` requests of 50 ms (the (0, 100 ms] bucket stands at its midpoint).
fn requests_of_50ms(n: u64) -> HistogramDataPoint {
    point(n, vec![0.1], vec![n, 0])
}

/// A cumulative point of `n` requests of 50 ms so far, of the stream named
/// by its `http.route`.
fn cumulative(start: u64, time: u64, n: u64, route: &str) -> HistogramDataPoint {
    HistogramDataPoint {
        start_time_unix_nano: start,
        time_unix_nano: time,
        attributes: vec![kv("http.route", route)],
        ..requests_of_50ms(n)
    }
}

/// One release's resource with one metric.
fn resource_metric(id: &str, metric: Metric) -> ResourceMetrics {
    resource_metrics(release_resource("pay", "prod", id, "abc1234"), vec![metric])
}

/// One release's `http.server.request.duration` histogram points.
fn durations(id: &str, temporality: i32, points: Vec<HistogramDataPoint>) -> ResourceMetrics {
    resource_metric(
        id,
        histogram_metric(REQUEST_DURATION, "s", temporality, points),
    )
}

/// A metrics export answered 200 with one point refused, the message
/// naming `why`.
async fn one_point_refused(server: &TestServer, req: &ExportMetricsServiceRequest, why: &str) {
    let partial = server
        .export_metrics(req)
        .await
        .partial_success
        .unwrap_or_else(|| panic!("a point is refused: {why}"));
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains(why),
        "{}",
        partial.error_message
    );
}

/// A metrics export that must be refused whole with the retryable answer
/// (503, Retry-After, RESOURCE_EXHAUSTED); its message.
async fn export_refused_for_room(server: &TestServer, req: &ExportMetricsServiceRequest) -> String {
    let resp = server.post_metrics(req).await;
    assert_eq!(resp.status(), 503);
    assert!(
        resp.headers().contains_key("retry-after"),
        "{:?}",
        resp.headers()
    );
    let status = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, RESOURCE_EXHAUSTED, "{}", status.message);
    status.message
}

/// The value of the one `/metrics` sample whose line holds every fragment.
fn sample(metrics: &str, fragments: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .find(|l| !l.starts_with('#') && fragments.iter().all(|f| l.contains(f)))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// The review, "histogram counts are trusted": an OTLP/HTTP protobuf
/// `http.server.request.duration` delta explicit-bucket histogram point
/// with `count=1e15` (bucket counts not summing to it) on a canary gave the
/// release 1e15 requests; two points of 2^63 each wrapped to 0 requests;
/// `count=0` with a million bucket counts gave latencies without requests.
#[tokio::test]
async fn histogram_counts_are_checked_against_their_buckets() {
    let server = TestServer::start().await;
    let cases: [(&str, Vec<HistogramDataPoint>, &str); 5] = [
        (
            "1e15",
            vec![point(1_000_000_000_000_000, vec![0.1], vec![2, 1])],
            "data_points[0]: count 1000000000000000 is not the sum of the bucket counts (3)",
        ),
        (
            "2^63 twice",
            vec![
                point(1 << 63, vec![0.1], vec![1 << 63, 0]),
                point(1 << 63, vec![0.1], vec![1 << 63, 0]),
            ],
            "data_points[0].count: 9223372036854775808 new requests in one point; at most 4294967296",
        ),
        (
            "0 over a million in a bucket",
            vec![point(0, vec![0.1], vec![1_000_000, 0])],
            "data_points[0]: count 0 is not the sum of the bucket counts (1000000)",
        ),
        (
            "0 over a million buckets",
            vec![point(0, vec![], vec![1; 1_000_000])],
            "data_points[0]: explicit histogram has 1000000 bucket counts for 0 bounds",
        ),
        (
            "1e15 without buckets",
            vec![point(1_000_000_000_000_000, vec![], vec![])],
            "data_points[0].count: 1000000000000000 new requests in one point",
        ),
    ];
    let rounds = cases.len() as u64;
    for (case, mut forged, why) in cases {
        let refused = forged.len() as i64;
        // The canary's honest point rides behind the forged ones.
        forged.push(requests_of_50ms(1));
        let req = metrics_request(vec![
            durations("pay-canary", DELTA, forged),
            durations("pay-neighbour", DELTA, vec![requests_of_50ms(7)]),
        ]);
        let partial = server
            .export_metrics(&req)
            .await
            .partial_success
            .unwrap_or_else(|| panic!("{case}: the forged points are refused"));
        assert_eq!(partial.rejected_data_points, refused, "{case}");
        assert!(
            partial.error_message.contains(why),
            "{case}: {}",
            partial.error_message
        );
    }
    // Still serving, and every honest point counted, no more.
    let neighbour = server
        .wait_for_release("pay-neighbour", |v| v["canary"]["requests"] == 7 * rounds)
        .await;
    assert_eq!(neighbour["canary"]["errors"], 0);
    let canary = server
        .wait_for_release("pay-canary", |v| v["canary"]["requests"] == rounds)
        .await;
    assert_eq!(canary["canary"]["errors"], 0);
    let metrics = server.metrics().await;
    let at = |p: &str| {
        sample(
            &metrics,
            &[
                "release_verdict_latency_seconds{",
                r#"deployment_id="pay-canary""#,
                r#"cohort="canary""#,
                &format!(r#"percentile="{p}""#),
            ],
        )
    };
    // Only the honest 50 ms requests have latencies (within HDR precision).
    for p in ["p50", "p99"] {
        let s = at(p).unwrap_or_else(|| panic!("no {p}: {metrics}"));
        assert!((0.049..0.051).contains(&s), "{p} = {s}");
    }
    server.stop().await;
}

/// The review, "unbounded memory per stream": a cumulative histogram point
/// with empty `bucket_counts` and 2 million `explicit_bounds` was
/// remembered whole for its stream. A million (8 MB, under the 16 MiB
/// request limit) still exceeds the 4096 bounds allowed many times over.
#[tokio::test]
async fn a_point_with_a_million_bounds_is_refused() {
    let server = TestServer::start().await;
    let now = now_nanos();
    let mut huge = point(0, (0..1_000_000).map(f64::from).collect(), vec![]);
    huge.start_time_unix_nano = now;
    huge.time_unix_nano = now + 1;
    let req = metrics_request(vec![
        durations("pay-huge", CUMULATIVE, vec![huge]),
        durations("pay-neighbour", DELTA, vec![requests_of_50ms(3)]),
    ]);
    assert!(req.encoded_len() < Config::default().server.max_request_bytes);
    one_point_refused(
        &server,
        &req,
        "data_points[0]: explicit_bounds has 1000000 entries; at most 4096 are accepted",
    )
    .await;
    server
        .wait_for_release("pay-neighbour", |v| v["canary"]["requests"] == 3)
        .await;
    let (status, _) = server.get_json("/api/v1/releases/pay-huge").await;
    assert_eq!(status, 404, "nothing of the point was recorded");
    server.stop().await;
}

/// The review, "a stream frozen from the future": a cumulative point dated
/// far ahead of the daemon's clock was taken as newer than every honest
/// point after it, and the stream went silent.
#[tokio::test]
async fn a_future_dated_point_is_refused_and_its_stream_still_counted() {
    let server = TestServer::start().await;
    let start = now_nanos();
    let second = 1_000_000_000;
    let day = 86_400 * second;
    let stream = |time, n| {
        metrics_request(vec![
            durations(
                "pay-canary",
                CUMULATIVE,
                vec![cumulative(start, time, n, "/pay")],
            ),
            durations("pay-neighbour", DELTA, vec![requests_of_50ms(1)]),
        ])
    };
    let first = server.export_metrics(&stream(start + second, 2)).await;
    assert_eq!(first.partial_success, None);
    let ahead = start + day;
    let why = format!(
        "data_points[0].time_unix_nano: {ahead} is more than 600 s ahead of the daemon's clock"
    );
    one_point_refused(&server, &stream(ahead, 1_000), &why).await;
    // Later honest points add what they add: 2, then 3 more.
    let later = server.export_metrics(&stream(start + 2 * second, 5)).await;
    assert_eq!(later.partial_success, None);
    server
        .wait_for_release("pay-canary", |v| v["canary"]["requests"] == 5)
        .await;
    server
        .wait_for_release("pay-neighbour", |v| v["canary"]["requests"] == 3)
        .await;
    server.stop().await;
}

/// Issue 28: a cumulative point stamped nine minutes ahead, inside the
/// ten-minute allowance, was taken and then every honest point after it
/// was older: answered 200, counted nothing, for nine minutes. Points after
/// one stamped ahead of the daemon's clock are ordered by arrival.
#[tokio::test]
async fn a_point_stamped_ahead_within_the_allowance_does_not_freeze_its_stream() {
    let server = TestServer::start().await;
    let start = now_nanos();
    let second = 1_000_000_000;
    let stream = |time, n| {
        metrics_request(vec![durations(
            "pay-canary",
            CUMULATIVE,
            vec![cumulative(start, time, n, "/pay")],
        )])
    };
    // 2 requests, then a point stamped +9 min adding 1.
    for (time, n) in [(start + second, 2), (start + 540 * second, 3)] {
        let answer = server.export_metrics(&stream(time, n)).await;
        assert_eq!(answer.partial_success, None);
    }
    server
        .wait_for_release("pay-canary", |v| v["canary"]["requests"] == 3)
        .await;
    // The honest points after it count: 4 more, then 3 more.
    for (time, n) in [(start + 2 * second, 7), (start + 3 * second, 10)] {
        let answer = server.export_metrics(&stream(time, n)).await;
        assert_eq!(answer.partial_success, None);
    }
    server
        .wait_for_release("pay-canary", |v| v["canary"]["requests"] == 10)
        .await;
    server.stop().await;
}

/// `resources` resources (releases `{prefix}-0`, …) of five cumulative
/// streams each, every point counting `n` requests.
fn five_streams_each(
    start: u64,
    prefix: &str,
    resources: u64,
    n: u64,
) -> ExportMetricsServiceRequest {
    metrics_request(
        (0..resources)
            .map(|r| {
                let points = (0..5)
                    .map(|s| cumulative(start, start + 1, n, &format!("/{prefix}{r}/s{s}")))
                    .collect();
                durations(&format!("{prefix}-{r}"), CUMULATIVE, points)
            })
            .collect(),
    )
}

/// Issue 28: one sender with 101 resources filled the cumulative stream
/// table (the per-resource quota holds per resource only) and every other
/// sender's new streams were refused. Streams are now also counted per
/// sending address.
#[tokio::test]
async fn one_address_with_many_resources_cannot_fill_the_stream_table() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;

    let mut config = Config::default();
    config.limits.max_metric_streams = 20;
    config.limits.max_metric_streams_per_resource = 5;
    config.limits.max_metric_streams_per_sender = 10;
    let server = TestServer::with_config(config).await;
    let start = now_nanos();
    // Four resources of five streams each, all from 127.0.0.2.
    let flood = five_streams_each(start, "pay-flood", 4, 1);
    let flooder = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let answer = flooder
        .post(server.url("/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(flood.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer = ExportMetricsServiceResponse::decode(answer.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.expect("past the address's quota");
    assert_eq!(partial.rejected_data_points, 10);
    assert!(
        partial
            .error_message
            .contains("max_metric_streams_per_sender"),
        "{}",
        partial.error_message
    );
    // Another sender's new streams are taken and counted.
    let honest = metrics_request(vec![durations(
        "pay-honest",
        CUMULATIVE,
        (0..5)
            .map(|s| cumulative(start, start + 1, 2, &format!("/h{s}")))
            .collect(),
    )]);
    let answer = server.export_metrics(&honest).await;
    assert_eq!(answer.partial_success, None);
    server
        .wait_for_release("pay-honest", |v| v["canary"]["requests"] == 10)
        .await;
    server.stop().await;
}

/// Issue 28: the per-sender quota was kept per address, so exporters
/// behind one collector or NAT shared one share, and one token spread over
/// many addresses had many. With tokens on, it is kept per ingest token:
/// two tokens from the same address each get their own (on the address
/// quota, the second token's streams were refused here).
#[tokio::test]
async fn with_tokens_on_the_stream_quota_is_each_tokens_own() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;

    let dir = std::env::temp_dir().join(format!("rv-sender-quota-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("ingest");
    std::fs::write(&tokens, "flood-tok\nhonest-tok\n").unwrap();
    let mut config = Config::default();
    config.auth.ingest_tokens_file = tokens.to_string_lossy().into_owned();
    config.limits.max_metric_streams = 40;
    config.limits.max_metric_streams_per_resource = 5;
    config.limits.max_metric_streams_per_sender = 10;
    let server = TestServer::with_config(config).await;
    let start = now_nanos();
    let post = |token: &'static str, body: Vec<u8>| {
        reqwest::Client::new()
            .post(server.url("/v1/metrics"))
            .header("content-type", "application/x-protobuf")
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .send()
    };
    // Four resources of five streams each with one token: ten are past
    // its quota.
    let flood = five_streams_each(start, "pay-flood", 4, 1);
    let answer = post("flood-tok", flood.encode_to_vec()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer = ExportMetricsServiceResponse::decode(answer.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.expect("past the token's quota");
    assert_eq!(partial.rejected_data_points, 10);
    assert!(
        partial.error_message.contains("ingest token"),
        "{}",
        partial.error_message
    );
    // From the same address, the other token's new streams are its own.
    let honest = five_streams_each(start, "pay-honest", 2, 2);
    let answer = post("honest-tok", honest.encode_to_vec()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer = ExportMetricsServiceResponse::decode(answer.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success, None, "the second token's own share");
    for r in 0..2 {
        server
            .wait_for_release(&format!("pay-honest-{r}"), |v| {
                v["canary"]["requests"] == 10
            })
            .await;
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The review, "a full stream table is blamed on the sender": with
/// `limits.max_metric_streams` reached, a legitimate new stream was
/// answered 400 and counted as invalid, so exporters dropped it.
#[tokio::test]
async fn a_full_stream_table_is_answered_retry_later() {
    let mut config = Config::default();
    config.limits.max_metric_streams = 2;
    let server = TestServer::with_config(config).await;
    let start = now_nanos();
    let new_stream = |id: &str, route: &str, n| {
        metrics_request(vec![durations(
            id,
            CUMULATIVE,
            vec![cumulative(start, start + 1, n, route)],
        )])
    };
    for route in ["/a", "/b"] {
        let taken = server.export_metrics(&new_stream("pay-1", route, 1)).await;
        assert_eq!(taken.partial_success, None, "{route}");
    }
    let late = new_stream("pay-2", "/c", 1);
    let why = export_refused_for_room(&server, &late).await;
    assert!(
        why.contains("the table of cumulative streams is full ([limits] max_metric_streams)"),
        "{why}"
    );
    let mut grpc = server.metrics_client().await;
    let refused = grpc.export(late).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(!refused.details().is_empty(), "RetryInfo is attached");
    // The streams already followed are still counted.
    let known = metrics_request(vec![durations(
        "pay-1",
        CUMULATIVE,
        vec![cumulative(start, start + 2, 4, "/a")],
    )]);
    assert_eq!(server.export_metrics(&known).await.partial_success, None);
    server
        .wait_for_release("pay-1", |v| v["canary"]["requests"] == 5)
        .await;
    let metrics = server.metrics().await;
    for transport in ["http", "grpc"] {
        let refused = sample(
            &metrics,
            &[&format!(
                r#"release_verdict_items_refused_total{{signal="points",transport="{transport}",reason="stream_limit"}}"#
            )],
        );
        assert_eq!(refused, Some(1.0), "{transport}: {metrics}");
    }
    // Every counter is present from the start: this one stays at zero.
    let invalid = sample(
        &metrics,
        &[
            r#"release_verdict_items_refused_total{signal="points",transport="http",reason="invalid"}"#,
        ],
    );
    assert_eq!(invalid, Some(0.0), "not counted as invalid: {metrics}");
    server.stop().await;
}

/// Issue 12, fairness: "a quota of streams per resource so one sender
/// cannot lock out the others". One resource's flood of new streams stops
/// at `limits.max_metric_streams_per_resource`; another's are still taken.
#[tokio::test]
async fn one_resource_cannot_take_every_stream() {
    let mut config = Config::default();
    config.limits.max_metric_streams_per_resource = 3;
    let server = TestServer::with_config(config).await;
    let start = now_nanos();
    let streams = |id: &str, routes: &[&str], n| {
        let points = routes
            .iter()
            .map(|r| cumulative(start, start + 1, n, r))
            .collect();
        metrics_request(vec![durations(id, CUMULATIVE, points)])
    };
    let flood = streams("pay-flood", &["/1", "/2", "/3", "/4"], 2);
    one_point_refused(&server, &flood, "data_points[3]: the resource holds as many cumulative streams as one may ([limits] max_metric_streams_per_resource)").await;
    let why = export_refused_for_room(&server, &streams("pay-flood", &["/5"], 2)).await;
    assert!(why.contains("max_metric_streams_per_resource"), "{why}");
    // Another resource's new stream is taken.
    let other = server
        .export_metrics(&streams("pay-other", &["/1"], 4))
        .await;
    assert_eq!(other.partial_success, None);
    server
        .wait_for_release("pay-other", |v| v["canary"]["requests"] == 4)
        .await;
    server
        .wait_for_release("pay-flood", |v| v["canary"]["requests"] == 6)
        .await;
    let metrics = server.metrics().await;
    let refused = sample(
        &metrics,
        &[
            r#"release_verdict_items_refused_total{signal="points",transport="http",reason="stream_limit"}"#,
        ],
    );
    assert_eq!(refused, Some(2.0), "{metrics}");
    server.stop().await;
}

/// The review, "NotFound too large to read": `GetVerdict` for a 100 KB id
/// echoed the id whole, and the client failed with RESOURCE_EXHAUSTED
/// instead of seeing NOT_FOUND.
#[tokio::test]
async fn not_found_quotes_a_long_id_in_part() {
    let server = TestServer::start().await;
    let mut client = pb::verdict_service_client::VerdictServiceClient::new(server.channel().await);
    let id = "x".repeat(100 * 1024);
    let err = client
        .get_verdict(pb::GetVerdictRequest {
            deployment_id: id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    let message = err.message();
    assert!(message.len() < 256 + 100, "{} bytes", message.len());
    assert!(
        message.contains(&format!("{}… (102400 bytes)", "x".repeat(256))),
        "{message}"
    );
    server.stop().await;
}

/// The review, "a latency from nowhere": an exponential histogram point
/// with an offset near i32::MAX, and a span with start=0 and end=u64::MAX,
/// were recorded as one-hour latencies.
#[tokio::test]
async fn impossible_durations_are_refused_not_recorded_as_an_hour() {
    let server = TestServer::start().await;
    let far = exponential_point(vec![], 0, 0, 20, i32::MAX - 1, vec![1, 1]);
    let req = metrics_request(vec![
        resource_metric(
            "pay-far",
            exponential_metric(REQUEST_DURATION, "s", DELTA, vec![far]),
        ),
        durations("pay-neighbour", DELTA, vec![requests_of_50ms(2)]),
    ]);
    one_point_refused(&server, &req, "beyond 2^±64 of the unit").await;
    let (status, _) = server.get_json("/api/v1/releases/pay-far").await;
    assert_eq!(status, 404, "nothing of the point was recorded");

    let mut forever = server_span(0, 0, false);
    forever.start_time_unix_nano = 0;
    forever.end_time_unix_nano = u64::MAX;
    let spans = std::iter::once(forever)
        .chain((1..4).map(|i| server_span(i, 50, false)))
        .collect();
    let req = spans_request(
        release_resource("pay", "prod", "pay-spans", "abc1234"),
        spans,
    );
    let partial = server
        .export_traces(&req)
        .await
        .partial_success
        .expect("the span is refused");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("spans[0]: end_time_unix_nano: the span lasts 18446744073 s, longer than the 3600 s maximum"),
        "{}",
        partial.error_message
    );
    server
        .wait_for_release("pay-spans", |v| v["canary"]["requests"] == 3)
        .await;
    let metrics = server.metrics().await;
    let p99 = sample(
        &metrics,
        &[
            "release_verdict_latency_seconds{",
            r#"deployment_id="pay-spans""#,
            r#"cohort="canary""#,
            r#"percentile="p99""#,
        ],
    )
    .unwrap_or_else(|| panic!("no p99: {metrics}"));
    assert!((0.049..0.051).contains(&p99), "p99 = {p99} s");
    server.stop().await;
}

/// The review, "coarse timers never go green": a canary whose every
/// request took 50 ms, as coarse timers report, against a baseline at 50 ms
/// too, stayed yellow for good: no request was ever faster than the
/// baseline's quantile.
#[tokio::test]
async fn identical_latencies_go_green() {
    let mut config = Config::default();
    config.judge.tick = Duration::from_millis(100);
    config.judge.epoch = Duration::from_secs(1);
    config.judge.min_duration = Duration::from_secs(1);
    config.judge.min_requests = 300;
    let server = TestServer::with_config(config).await;
    let mut client = server.trace_client().await;
    let flat = |id: &str, sha: &str, n: u64| {
        let spans = (0..n).map(|i| server_span(i, 50, false)).collect();
        spans_request(release_resource("checkout", "prod", id, sha), spans)
    };
    client
        .export(flat("checkout-1a2b3c4", "1a2b3c4", 100))
        .await
        .unwrap();
    server
        .wait_for_release("checkout-1a2b3c4", |v| v["canary"]["requests"] == 100)
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let green = loop {
        client
            .export(flat("checkout-1a2b3c4", "1a2b3c4", 180))
            .await
            .unwrap();
        client
            .export(flat("checkout-2b5d9af", "2b5d9af", 60))
            .await
            .unwrap();
        let (_, v) = server.get_json("/api/v1/releases/checkout-2b5d9af").await;
        if v["verdict"] == "green" {
            break v;
        }
        assert!(Instant::now() < deadline, "never green; last: {v}");
        // Paces the traffic; the deadline above is what is asserted.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(green["baseline"]["deployment_id"], "checkout-1a2b3c4");
    let checks = green["checks"].as_array().unwrap();
    let latency = checks
        .iter()
        .find(|c| c["name"] == "latency")
        .unwrap_or_else(|| panic!("a latency check: {green}"));
    assert_eq!(latency["result"], "pass", "{green}");
    assert!(checks.iter().all(|c| c["result"] == "pass"), "{green}");
    server.stop().await;
}
