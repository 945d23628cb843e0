"""The OpenTelemetry Python SDK as the tests' outside client: exporters that
remember each export's result, a release's resource, and spans sent through
the SDK to a daemon (harness.Daemon). Shared by test_sdk.py, test_auth.py,
test_tls.py and the ledger tests.
"""

from __future__ import annotations

import grpc
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.metrics import Histogram
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

SHA = "0123456789abcdef0123456789abcdef01234567"


def recording(exporter_cls):
    """A subclass of an OTLP exporter that remembers each export's result, so a
    failed export is reported as such rather than as missing counts."""

    class Recording(exporter_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.results = []

        def export(self, *args, **kwargs):
            result = super().export(*args, **kwargs)
            self.results.append(result)
            return result

    Recording.__name__ = f"Recording{exporter_cls.__name__}"
    return Recording


def span_exporter(daemon, transport: str):
    """A recording span exporter to `daemon` over "grpc", "grpc+gzip",
    "http" or "http+gzip"."""
    gz = transport.endswith("+gzip")
    if transport.startswith("grpc"):
        return recording(GrpcSpanExporter)(
            endpoint=daemon.grpc_addr,
            insecure=True,
            compression=grpc.Compression.Gzip if gz else grpc.Compression.NoCompression,
        )
    return recording(HttpSpanExporter)(
        endpoint=f"{daemon.http_url}/v1/traces",
        compression=HttpCompression.Gzip if gz else HttpCompression.NoCompression,
    )


def metric_exporter(daemon, transport: str, temporality: str):
    """A recording metric exporter to `daemon` over "grpc" or "http", its
    histograms "delta" or "cumulative"."""
    pref = {
        Histogram: AggregationTemporality.DELTA if temporality == "delta" else AggregationTemporality.CUMULATIVE
    }
    if transport == "grpc":
        return recording(GrpcMetricExporter)(
            endpoint=daemon.grpc_addr, insecure=True, preferred_temporality=pref
        )
    return recording(HttpMetricExporter)(endpoint=f"{daemon.http_url}/v1/metrics", preferred_temporality=pref)


def release_resource(service: str, deployment: str, environment: str = "prod", sha: str = SHA) -> Resource:
    return Resource.create(
        {
            "service.name": service,
            "deployment.id": deployment,
            "git.sha": sha,
            "deployment.environment.name": environment,
        }
    )


def send_spans(daemon, transport: str, resource: Resource, spans: list[tuple[SpanKind, str]]) -> None:
    """Sends one span per (kind, outcome) through the SDK and flushes.
    outcome: "ok", "status_error" (span status ERROR) or "http_500"."""
    exporter = span_exporter(daemon, transport)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512))
    tracer = provider.get_tracer("release-verdict-tests")
    for i, (kind, outcome) in enumerate(spans):
        span = tracer.start_span(f"GET /items/{i}", kind=kind)
        span.set_attribute("http.request.method", "GET")
        span.set_attribute("http.response.status_code", 500 if outcome == "http_500" else 200)
        if outcome == "status_error":
            span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end()
    assert provider.force_flush(timeout_millis=10_000), "span flush timed out"
    provider.shutdown()
    assert exporter.results, "the SDK exported nothing"
    assert all(r == SpanExportResult.SUCCESS for r in exporter.results), exporter.results


def export_server_spans(exporter, resource: Resource, n: int, scope: str) -> list:
    """Exports `n` SERVER spans through a recording `exporter`, one export
    each, and returns the exports' results (failures included)."""
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(scope)
    for i in range(n):
        tracer.start_span(f"GET /{i}", kind=SpanKind.SERVER).end()
    provider.shutdown()
    return exporter.results
