"""A user's first steps with a real OpenTelemetry SDK, against the real
daemon: the SDK's OTLP/HTTP exporter (http/protobuf, the default of the
Node.js SDK and the Java agent) pointed at the gRPC port is answered with
the port to use, counted and logged once; telemetry without a release id
is logged once per service, naming the missing attribute, and shown by
`release-verdict status`.
"""

from __future__ import annotations

import re
import subprocess

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult

from harness import daemon_binary, poll
from otel import export_server_spans, recording

WRONG_PORT_LOG = re.compile(r"HTTP/1\.1 requests on the OTLP/gRPC port.*")


def status(daemon, *args: str) -> str:
    out = subprocess.run(
        [str(daemon_binary()), "status", "--server", daemon.http_url, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_http_exporter_on_the_grpc_port_is_told_the_http_port(daemon_factory):
    daemon = daemon_factory()
    http_port = daemon.http_addr.rsplit(":", 1)[1]
    # The Node.js mistake: the HTTP exporter given the gRPC port.
    exporter = recording(HttpSpanExporter)(endpoint=f"http://{daemon.grpc_addr}/v1/traces")
    export_server_spans(exporter, Resource.create({"service.name": "node-app"}), 2, "first-steps")
    assert exporter.results == [SpanExportResult.FAILURE] * 2

    # What the exporter was told, as a person reading its error sees it.
    answer = requests.post(f"http://{daemon.grpc_addr}/v1/traces", data=b"", timeout=10)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/plain")
    assert f"send to port {http_port}" in answer.text
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in answer.text

    poll(
        lambda: daemon.metrics().get("release_verdict_grpc_port_http1_requests_total"),
        lambda n: n == 3,
        timeout=2.0,
        what="three HTTP/1.1 requests counted",
    )
    line = daemon.await_log(WRONG_PORT_LOG, timeout=2.0).group(0)
    assert f"http_port={http_port}" in line, line
    assert "OTel-OTLP-Exporter-Python" in line, line
    # Rate-limited: one line for the three requests within the minute.
    assert len(WRONG_PORT_LOG.findall(daemon.log())) == 1, daemon.log()

    text = status(daemon)
    assert "3 HTTP/1.1 request(s) reached the OTLP/gRPC port (last from python-requests" in text, text


def test_telemetry_without_a_release_id_is_logged_once_per_service(daemon_factory, unique):
    daemon = daemon_factory()
    service = unique("web")
    for _ in range(2):
        exporter = recording(HttpSpanExporter)(endpoint=f"{daemon.http_url}/v1/traces")
        export_server_spans(exporter, Resource.create({"service.name": service}), 3, "first-steps")
        assert exporter.results == [SpanExportResult.SUCCESS] * 3

    senders = poll(
        lambda: requests.get(f"{daemon.http_url}/api/v1/senders", timeout=5).json(),
        lambda body: any(s["spans"]["unattributed"] == 6 for s in body["senders"]),
        timeout=2.0,
        what="six unattributed spans",
    )
    (row,) = [s for s in senders["senders"] if s["service"] == service]
    assert row["missing"] == "deployment.id"
    assert row["spans"] == {"attributed": 0, "unattributed": 6}

    pattern = re.compile(r"telemetry without a release id.*")
    lines = [l for l in pattern.findall(daemon.log()) if service in l]
    assert len(lines) == 1, daemon.log()
    assert "missing=deployment.id" in lines[0], lines[0]

    text = status(daemon)
    assert text.startswith("No release in flight.\n"), text
    assert re.search(rf"^  {re.escape(service)}\s+0\s+6\s+0\s+0\s+\S+ ago\s+no deployment\.id$", text, re.M), text
