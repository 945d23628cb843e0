"""The OpenTelemetry Python SDK (and raw OTLP) as an outside client of the
real daemon: spans and metrics are counted exactly per release, the
baseline rule holds, bad input is refused with a message and leaves the
daemon healthy. The SDK plumbing (exporters, resources) is otel.py.

Every wait polls the JSON API until the expected counts appear or a 2 s
deadline passes; nothing sleeps to make a test pass.
"""

from __future__ import annotations

import gzip
import json
import os
import time

import grpc
import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.trace import SpanKind

from harness import counts, kv, poll, poll_release
from otel import SHA, metric_exporter, release_resource, send_spans

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

TRANSPORTS = ["grpc", "grpc+gzip", "http", "http+gzip"]


# --- spans ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_spans_are_counted_exactly(daemon, unique, transport):
    deployment = unique("spans")
    service = unique("checkout")
    spans = (
        [(SpanKind.SERVER, "ok")] * 36
        + [(SpanKind.SERVER, "status_error")] * 2
        + [(SpanKind.SERVER, "http_500")] * 2
        # Not requests: never counted, whatever their outcome.
        + [(SpanKind.INTERNAL, "status_error")] * 7
        + [(SpanKind.CLIENT, "http_500")] * 5
        + [(SpanKind.PRODUCER, "ok")] * 3
    )
    send_spans(daemon, transport, release_resource(service, deployment), spans)

    v = poll_release(daemon, deployment, lambda v: counts(v) == (40, 4), timeout=2.0)
    assert v["service"] == service
    assert v["environment"] == "prod"
    assert v["deployment_id"] == deployment
    assert v["git_sha"] == SHA
    assert v["verdict"] == "yellow"
    assert v["baseline"] is None


def test_sdk_consumer_spans_are_requests(daemon, unique):
    deployment = unique("consumer")
    spans = [(SpanKind.CONSUMER, "ok")] * 9 + [(SpanKind.CONSUMER, "status_error")]
    send_spans(daemon, "grpc", release_resource(unique("worker"), deployment), spans)
    poll_release(daemon, deployment, lambda v: counts(v) == (10, 1))


# --- metrics-only services --------------------------------------------------------

METRIC_CASES = [
    # transport, temporality, aggregation, unit
    ("grpc", "cumulative", "explicit", "s"),
    ("http", "cumulative", "explicit", "s"),
    ("grpc", "delta", "explicit", "s"),
    ("http", "delta", "explicit", "ms"),
    ("http", "cumulative", "exponential", "s"),
]


@pytest.mark.parametrize("transport,temporality,aggregation,unit", METRIC_CASES)
def test_sdk_duration_histogram_is_counted_exactly(daemon, unique, transport, temporality, aggregation, unit):
    deployment = unique(f"metrics-{transport}-{temporality}-{aggregation}")
    exporter = metric_exporter(daemon, transport, temporality)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    views = []
    if aggregation == "exponential":
        views = [View(instrument_name="http.server.request.duration", aggregation=ExponentialBucketHistogramAggregation())]
    provider = MeterProvider(
        metric_readers=[reader], resource=release_resource(unique("metrics-only"), deployment), views=views
    )
    meter = provider.get_meter("release-verdict-tests")
    duration = meter.create_histogram("http.server.request.duration", unit=unit)
    # An unrelated instrument must not count as requests.
    other = meter.create_counter("http.server.active_requests_total")
    scale = 1000.0 if unit == "ms" else 1.0

    def record(ok: int, failed: int) -> None:
        for i in range(ok):
            duration.record((0.010 + 0.005 * i) * scale, {"http.request.method": "GET", "http.response.status_code": 200})
            other.add(1)
        for i in range(failed):
            duration.record((0.250 + 0.01 * i) * scale, {"http.request.method": "GET", "http.response.status_code": 503})

    record(17, 3)
    assert provider.force_flush(timeout_millis=10_000)
    poll_release(daemon, deployment, lambda v: counts(v) == (20, 3))

    # The same streams again after more recordings: only the new ones count
    # (cumulative points are turned into deltas per stream).
    record(4, 1)
    assert provider.force_flush(timeout_millis=10_000)
    poll_release(daemon, deployment, lambda v: counts(v) == (25, 4))

    # Shutdown exports once more with nothing new recorded: a cumulative
    # repeat (or an empty delta) adds nothing. shutdown() returns after the
    # export was answered, so one read is enough.
    provider.shutdown()
    assert all(r == MetricExportResult.SUCCESS for r in exporter.results), exporter.results
    assert len(exporter.results) >= 2
    r = daemon.get_release(deployment)
    assert r.status_code == 200
    assert counts(r.json()) == (25, 4)


# --- the baseline rule ------------------------------------------------------------


def test_the_busiest_deployment_is_the_canarys_baseline(daemon, unique):
    service = unique("payments")
    stable, canary = unique("stable"), unique("canary")
    stable_sha = "a" * 40

    # The canary's exporter reports first; the stable one serves more.
    send_spans(daemon, "http", release_resource(service, canary), [(SpanKind.SERVER, "ok")] * 4 + [(SpanKind.SERVER, "http_500")])
    send_spans(daemon, "grpc", release_resource(service, stable, sha=stable_sha), [(SpanKind.SERVER, "ok")] * 12)
    # Chosen once the traffic has been watched for [baseline] settle (10 s).
    v = poll_release(daemon, canary, lambda v: counts(v) == (5, 1) and v["baseline"] is not None, timeout=20)
    assert v["baseline"]["deployment_id"] == stable
    assert v["baseline"]["git_sha"] == stable_sha
    assert (v["baseline"]["requests"], v["baseline"]["errors"]) == (12, 0)

    # The baseline has none of its own and says whose it is; the list shows both.
    own = daemon.get_release(stable).json()
    assert own["baseline"] is None
    assert own["reason"].startswith(f"baseline of {canary}"), own["reason"]
    listed = {r["deployment_id"]: r for r in daemon.releases(service=service)}
    assert set(listed) == {stable, canary}
    assert listed[canary]["baseline"]["deployment_id"] == stable

    # Another deployment in another environment is not a baseline.
    other_env = unique("staging-canary")
    send_spans(daemon, "grpc", release_resource(service, other_env, environment="staging"), [(SpanKind.SERVER, "ok")])
    v = poll_release(daemon, other_env, lambda v: counts(v) == (1, 0))
    assert v["environment"] == "staging"
    assert v["baseline"] is None


# --- the read API: lookups --------------------------------------------------------


def test_lookup_not_found_ambiguous_and_odd_ids(daemon, unique):
    assert daemon.get_release(unique("never-sent")).status_code == 404

    shared = unique("shared id/with spaces & ü?")
    svc_a, svc_b = unique("svc-a"), unique("svc-b")
    send_spans(daemon, "grpc", release_resource(svc_a, shared), [(SpanKind.SERVER, "ok")] * 2)
    send_spans(daemon, "grpc", release_resource(svc_b, shared), [(SpanKind.SERVER, "ok")] * 3)
    poll(
        lambda: daemon.get_release(shared).status_code,
        lambda code: code == 409,
        what="ambiguous lookup answering 409",
    )
    body = daemon.get_release(shared).json()
    assert sorted(m["service"] for m in body["matches"]) == sorted([svc_a, svc_b])
    v = poll_release(daemon, shared, lambda v: counts(v) == (3, 0), service=svc_b)
    assert v["service"] == svc_b
    assert daemon.get_release(shared, service=svc_a, environment="prod").json()["canary"]["requests"] == 2
    assert daemon.get_release(shared, service=svc_a, environment="nope").status_code == 404


# --- raw OTLP/HTTP JSON -------------------------------------------------------------


def json_span(deployment: str, kind: int, *, status_code: int = 200, error: bool = False, trace_id: str | None = None, attrs: bool = True) -> dict:
    """One span in the OTLP JSON mapping with the identity on the span, as
    the Node example in shared/seeds tags it (deployment.id, git.sha,
    service.env)."""
    start = time.time_ns()
    attributes = [
        {"key": "http.request.method", "value": {"stringValue": "POST"}},
        # int64 values are strings in OTLP JSON.
        {"key": "http.response.status_code", "value": {"intValue": str(status_code)}},
    ]
    if attrs:
        attributes += [
            {"key": "deployment.id", "value": {"stringValue": deployment}},
            {"key": "git.sha", "value": {"stringValue": SHA}},
            {"key": "service.env", "value": {"stringValue": "staging"}},
        ]
    span = {
        "traceId": trace_id or os.urandom(16).hex(),
        "spanId": os.urandom(8).hex(),
        "name": "http.request",
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 3_000_000),
        "attributes": attributes,
    }
    if error:
        span["status"] = {"code": 2, "message": "boom"}
    return span


def json_request(service: str, spans: list[dict]) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "node-example"}, "spans": spans}],
            }
        ]
    }


def post_json(daemon, body: dict, gzipped: bool = True) -> requests.Response:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if gzipped:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return requests.post(f"{daemon.http_url}/v1/traces", data=data, headers=headers, timeout=5)


SERVER, INTERNAL, CLIENT = 2, 1, 3


def test_json_gzip_with_identity_on_span_attributes(daemon, unique):
    deployment, service = unique("node"), unique("node-api")
    before = daemon.metrics().get("release_verdict_items_unattributed_total", signal="spans")
    spans = (
        [json_span(deployment, SERVER) for _ in range(27)]
        + [json_span(deployment, SERVER, error=True) for _ in range(2)]
        + [json_span(deployment, SERVER, status_code=503)]
        + [json_span(deployment, INTERNAL, error=True)]
        + [json_span(deployment, CLIENT, status_code=502)]
        # A request span without a release id: accepted, counted, ignored.
        + [json_span(deployment, SERVER, attrs=False)]
    )
    r = post_json(daemon, json_request(service, spans))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    answer = r.json()
    print("JSON export answer:", r.text)
    assert not (answer.get("partialSuccess") or {}).get("rejectedSpans"), answer

    v = poll_release(daemon, deployment, lambda v: counts(v) == (30, 3))
    assert v["service"] == service
    assert v["environment"] == "staging"  # from service.env, the last fallback
    assert v["git_sha"] == SHA
    after = daemon.metrics().get("release_verdict_items_unattributed_total", signal="spans")
    assert after - before == 1


# --- bad input ----------------------------------------------------------------------

NOT_HEX = "zz" * 16


def bad_inputs():
    valid_json = json.dumps(json_request("bad-input", [json_span("bad-input", SERVER)])).encode()
    return [
        # name, path, content type, content encoding, body, words the message must contain
        ("garbage protobuf", "/v1/traces", "application/x-protobuf", None, b"\x0a\xff\xff\xff\xff\x0f\x12garbage", ["protobuf"]),
        ("garbage protobuf metrics", "/v1/metrics", "application/x-protobuf", None, b"\xff\xfe\xfd\xfc", ["protobuf"]),
        ("invalid JSON", "/v1/traces", "application/json", None, b'{"resourceSpans": [', ["json"]),
        ("invalid JSON metrics", "/v1/metrics", "application/json", None, b"not json at all", ["json"]),
        (
            "non-hex traceId",
            "/v1/traces",
            "application/json",
            None,
            json.dumps(json_request("bad-input", [json_span("bad-input", SERVER, trace_id=NOT_HEX)])).encode(),
            ["json", "traceId", "'z'"],  # names the field and the offending character
        ),
        (
            "short traceId",
            "/v1/traces",
            "application/json",
            None,
            json.dumps(json_request("bad-input", [json_span("bad-input", SERVER, trace_id="abcd")])).encode(),
            ["trace_id"],
        ),
        ("gzip that is not gzip", "/v1/traces", "application/json", "gzip", valid_json, ["gzip"]),
    ]


def rpc_status(r: requests.Response) -> tuple[int, str]:
    """The google.rpc.Status of an OTLP/HTTP error answer, in either encoding."""
    if r.headers.get("Content-Type", "").startswith("application/x-protobuf"):
        s = status_pb2.Status.FromString(r.content)
        return s.code, s.message
    body = r.json()
    return body["code"], body["message"]


@pytest.mark.parametrize("name,path,ctype,cenc,body,words", bad_inputs(), ids=[c[0] for c in bad_inputs()])
def test_bad_http_input_is_400_with_a_message(daemon, unique, name, path, ctype, cenc, body, words):
    headers = {"Content-Type": ctype}
    if cenc:
        headers["Content-Encoding"] = cenc
    r = requests.post(f"{daemon.http_url}{path}", data=body, headers=headers, timeout=5)
    assert r.status_code == 400, (r.status_code, r.content)
    code, message = rpc_status(r)
    assert code == 3, (code, message)  # INVALID_ARGUMENT
    for word in words:
        assert word.lower() in message.lower(), message
    print(f"{name}: 400 {message!r}")

    # Still healthy, and a valid export still works.
    assert requests.get(f"{daemon.http_url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{daemon.http_url}/readyz", timeout=5).status_code == 200
    deployment = unique("after-bad-input")
    r = post_json(daemon, json_request(unique("svc"), [json_span(deployment, SERVER) for _ in range(3)]))
    assert r.status_code == 200, r.text
    poll_release(daemon, deployment, lambda v: counts(v) == (3, 0))


def test_unsupported_content_type_is_415(daemon):
    r = requests.post(f"{daemon.http_url}/v1/traces", data=b"hello", headers={"Content-Type": "text/plain"}, timeout=5)
    assert r.status_code == 415, (r.status_code, r.content)
    code, message = rpc_status(r)
    assert "content type" in message.lower(), message


def test_oversized_body_is_413(daemon_factory, unique):
    d = daemon_factory("[server]\nmax_request_bytes = 4096\n")
    big = json.dumps(json_request("big", [json_span(unique("big"), SERVER) for _ in range(200)])).encode()
    assert len(big) > 4096
    bomb = gzip.compress(big)
    assert len(bomb) < 4096 * 4
    for data, headers in [
        (big, {"Content-Type": "application/json"}),
        (bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
    ]:
        r = requests.post(f"{d.http_url}/v1/traces", data=data, headers=headers, timeout=5)
        assert r.status_code == 413, (r.status_code, r.content)
        code, message = rpc_status(r)
        assert code == 8 and "limit" in message, (code, message)  # RESOURCE_EXHAUSTED

    with grpc.insecure_channel(d.grpc_addr) as channel:
        export = channel.unary_unary(TRACE_EXPORT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            export(b"\x0a" + b"\x00" * 10_000, timeout=5)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (e.value.code(), e.value.details())
    assert requests.get(f"{d.http_url}/healthz", timeout=5).status_code == 200


# --- bad input over gRPC --------------------------------------------------------------


def test_bad_grpc_input(daemon, unique):
    with grpc.insecure_channel(daemon.grpc_addr) as channel:
        identity = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
        for method in (TRACE_EXPORT, METRICS_EXPORT):
            export = channel.unary_unary(method, **identity)
            with pytest.raises(grpc.RpcError) as e:
                export(b"\x0a\xff\xff\xff\xff\x0f\x12garbage", timeout=5)
            # bad input, not retried by exporters
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.code()
            assert "decode" in (e.value.details() or "").lower(), e.value.details()

        # Well-formed protobuf breaking the data model: an all-zero trace id.
        req = trace_service_pb2.ExportTraceServiceRequest()
        span = req.resource_spans.add().scope_spans.add().spans.add()
        span.CopyFrom(
            ProtoSpan(
                trace_id=bytes(16),
                span_id=b"\x01" * 8,
                name="GET /",
                kind=ProtoSpan.SPAN_KIND_SERVER,
                attributes=[kv("deployment.id", "zero-trace")],
            )
        )
        export = channel.unary_unary(TRACE_EXPORT, **identity)
        with pytest.raises(grpc.RpcError) as e:
            export(req.SerializeToString(), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.value.code(), e.value.details())
        assert "trace_id" in e.value.details(), e.value.details()

    assert requests.get(f"{daemon.http_url}/healthz", timeout=5).status_code == 200
    deployment = unique("after-bad-grpc")
    send_spans(daemon, "grpc", release_resource(unique("svc"), deployment), [(SpanKind.SERVER, "ok")] * 3)
    poll_release(daemon, deployment, lambda v: counts(v) == (3, 0))
