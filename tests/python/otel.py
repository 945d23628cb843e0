"""The OpenTelemetry Python SDK as the tests' outside client: exporters that
remember each export's result, a release's resource, and spans sent through
the SDK to a daemon (harness.Daemon). Shared by test_sdk.py, test_auth.py,
test_tls.py and the ledger tests.
"""

from __future__ import annotations

import random
import threading
import time

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

# RolloutTraffic's endpoints: the routes, and the endpoint key the daemon
# makes of the failing one (the method, then the route).
ROUTES = ("/api/items", "/api/checkout")
CHECKOUT = "GET /api/checkout"


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


class RolloutTraffic:
    """Two versions of `cart` sending spans through the SDK for `seconds`,
    then flushing: the baseline 60 requests/s failing 1% with
    TimeoutError on either endpoint, the canary 20/s failing 30% of
    /api/checkout with KeyError (a kind the baseline never shows). Counts
    what it sent per version."""

    def __init__(self, daemon, seconds: float):
        self.seconds = seconds
        self.sent = {"cart-v1": [0, 0], "cart-v2": [0, 0]}
        self.providers = {}
        for version in self.sent:
            provider = TracerProvider(resource=release_resource("cart", version))
            provider.add_span_processor(BatchSpanProcessor(span_exporter(daemon, "http"), schedule_delay_millis=500))
            self.providers[version] = provider
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        rng = random.Random(30)
        tracers = {v: p.get_tracer("page-test") for v, p in self.providers.items()}
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < self.seconds:
            for version, per_tick in (("cart-v1", 6), ("cart-v2", 2)):
                for i in range(per_tick):
                    route = ROUTES[(tick + i) % 2]
                    if version == "cart-v2":
                        failed, kind = route == "/api/checkout" and rng.random() < 0.30, "KeyError"
                    else:
                        failed, kind = rng.random() < 0.01, "TimeoutError"
                    end = time.time_ns()
                    took = int(rng.lognormvariate(3.7, 0.4) * 1e6)  # about 40 ms
                    span = tracers[version].start_span(f"GET {route}", kind=SpanKind.SERVER, start_time=end - took)
                    span.set_attribute("http.request.method", "GET")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", 500 if failed else 200)
                    if failed:
                        span.set_attribute("error.type", kind)
                        span.set_status(Status(StatusCode.ERROR, kind))
                    span.end(end_time=end)
                    self.sent[version][0] += 1
                    self.sent[version][1] += int(failed)
            tick += 1
            time.sleep(0.1)
        for p in self.providers.values():
            assert p.force_flush(timeout_millis=10_000), "span flush timed out"
        self.done.set()

    def stop(self) -> None:
        self.thread.join(timeout=self.seconds + 30)
        for p in self.providers.values():
            p.shutdown()
