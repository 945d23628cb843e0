"""Decoding is bounded like reading: a body whose every few bytes decode
to a struct of a few hundred is refused before it is decoded, over
OTLP/HTTP (413) and OTLP/gRPC (INVALID_ARGUMENT), with a message naming
`server.max_decoding_bytes`, counted, and costing the daemon no more than
its bytes (issue 28: memory bounded whatever the input).

Before, one 13 MiB body of 7,000,000 empty histogram points (two bytes
each) was decoded by prost into 2.7 GB (peak RSS, release build) and
answered 200, and 14 MiB of OTLP/JSON with 5,000,000 empty spans, its
resource after them (read through a model of the request, not span by
span), took 2.4 GB. The bodies are built here byte by byte, as a hostile
sender would; a normal export on the same daemon is still counted.
"""

from __future__ import annotations

import struct

import grpc
import requests

from harness import proc_status_kb
from hostile import field, kv, varint

POINTS = 7_000_000
# What the refusals may add to the daemon's peak RSS: the body itself
# (read in full before anything else), a decompressed copy at most, and
# the daemon's working room; decoding the points would add gigabytes.
MAX_ADDED_MIB = 120


def empty_points_body(points: int, deployment_id: str) -> bytes:
    """An ExportMetricsServiceRequest: one release's request-duration
    histogram of `points` empty data points (field 1 of Histogram, two
    bytes each), delta temporality."""
    histogram = b"\x0a\x00" * points + b"\x10\x01"
    metric = field(1, b"http.server.request.duration") + field(3, b"s") + field(9, histogram)
    attrs = b"".join(
        field(1, kv(k, v))
        for k, v in (("service.name", "heavy"), ("deployment.id", deployment_id))
    )
    return field(1, field(1, attrs) + field(2, field(2, metric)))


def test_a_body_that_decodes_to_gigabytes_is_refused_before_it_is_decoded(daemon_factory, unique):
    d = daemon_factory()
    pid = d.proc.pid
    body = empty_points_body(POINTS, unique("heavy"))
    assert len(body) < 16 << 20  # within max_request_bytes: only its decoding is too much
    before = proc_status_kb(pid, "VmRSS") / 1024

    r = requests.post(
        f"{d.http_url}/v1/metrics", data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=120
    )
    assert r.status_code == 413, (r.status_code, r.text[:300])
    assert "server.max_decoding_bytes" in r.text, r.text

    channel = grpc.insecure_channel(d.grpc_addr, options=[("grpc.max_send_message_length", 32 << 20)])
    export = channel.unary_unary(
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        try:
            export(body, timeout=120)
            raise AssertionError("the gRPC export was answered OK")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert "server.max_decoding_bytes" in e.details(), e.details()
    finally:
        channel.close()

    peak = proc_status_kb(pid, "VmHWM") / 1024
    print(f"RSS {before:.0f} MiB before, peak {peak:.0f} MiB")
    assert peak - before < MAX_ADDED_MIB, f"refusing two {len(body) >> 20} MiB bodies took {peak - before:.0f} MiB"
    m = d.metrics()
    for transport in ("http", "grpc"):
        refused = m.get("release_verdict_export_requests_refused_total", signal="points", transport=transport, reason="too_large")
        assert refused == 1, (transport, refused)

    # A body of the same release's points that decodes to little is taken.
    ok_id = unique("light")
    r = requests.post(
        f"{d.http_url}/v1/metrics",
        data=light_body(ok_id),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert d.metrics().get("release_verdict_items_accepted_total", signal="points", transport="http") == 1


def light_body(deployment_id: str) -> bytes:
    """One delta histogram point of 8 requests in (0, 0.1] s."""
    point = (
        varint(2 << 3 | 1) + struct.pack("<Q", 1)  # start_time_unix_nano
        + varint(3 << 3 | 1) + struct.pack("<Q", 2)  # time_unix_nano
        + varint(4 << 3 | 1) + struct.pack("<Q", 8)  # count
        + field(6, struct.pack("<QQ", 8, 0))  # bucket_counts
        + field(7, struct.pack("<d", 0.1))  # explicit_bounds
    )
    histogram = field(1, point) + b"\x10\x01"
    metric = field(1, b"http.server.request.duration") + field(3, b"s") + field(9, histogram)
    attrs = b"".join(
        field(1, kv(k, v))
        for k, v in (("service.name", "light"), ("deployment.id", deployment_id))
    )
    return field(1, field(1, attrs) + field(2, field(2, metric)))


def test_json_spans_that_would_be_read_through_a_model_are_weighed_first(daemon_factory):
    d = daemon_factory()
    pid = d.proc.pid
    spans = ",".join(["{}"] * 5_000_000)
    resource = '{"attributes":[{"key":"service.name","value":{"stringValue":"heavy"}}]}'
    # The resource after the spans: not the layout exporters write, so the
    # spans would be read into a model of the request first.
    body = ('{"resourceSpans":[{"scopeSpans":[{"spans":[%s]}],"resource":%s}]}' % (spans, resource)).encode()
    assert len(body) < 16 << 20
    before = proc_status_kb(pid, "VmRSS") / 1024
    r = requests.post(f"{d.http_url}/v1/traces", data=body, headers={"Content-Type": "application/json"}, timeout=120)
    assert r.status_code == 413, (r.status_code, r.text[:300])
    assert "server.max_decoding_bytes" in r.json()["message"], r.text
    peak = proc_status_kb(pid, "VmHWM") / 1024
    print(f"RSS {before:.0f} MiB before, peak {peak:.0f} MiB")
    assert peak - before < MAX_ADDED_MIB, f"refusing a {len(body) >> 20} MiB body took {peak - before:.0f} MiB"
    refused = d.metrics().get("release_verdict_export_requests_refused_total", signal="spans", transport="http", reason="too_large")
    assert refused == 1, refused
