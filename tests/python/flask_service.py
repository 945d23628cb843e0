"""One version of a small Flask service, instrumented as a new user would
instrument it, exporting OTLP/gRPC straight to release-verdict.

Run by test_real_services.py, one process per version:

    python flask_service.py --version v2 --sha 2b5d… --otlp 127.0.0.1:4317 \
        --error-rate 0.08 --signals traces

The instrumentation is the upstream `opentelemetry-instrumentation-flask`
from PyPI (FlaskInstrumentor), with its defaults: SERVER spans (status ERROR
on a 5xx) and the duration histogram, by default `http.server.duration` in
ms with `http.status_code`; with OTEL_SEMCONV_STABILITY_OPT_IN=http,
`http.server.request.duration` in s with `http.response.status_code`.

The resource names the release (`deployment.id=shop-<version>`, `git.sha`)
and nothing about its role: the daemon has to find the baseline by itself.

`--signals` is `traces`, `metrics` or `both` (the SDKs' auto-instrumentation
default), the signal left out going to a no-op provider.

The test decides when each version's telemetry reaches the daemon, so that
it can make the new version's exporter flush first: the span processor and
the metric reader are set to export once an hour, and `POST /_flush` exports
everything recorded so far and answers once the daemon has answered. With
`--periodic` they export as the SDK does by default instead, at the
intervals OTEL_BSP_SCHEDULE_DELAY and OTEL_METRIC_EXPORT_INTERVAL set.
`/_flush` is outside the instrumentation, so it is not a request of the
service. `GET /checkout` is the service: a deterministic share of its
requests (`--error-rate`) answer 500.

Once the server is bound it prints `listening on http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import logging
import math
import threading

from flask import Flask
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NoOpTracerProvider
from werkzeug.serving import WSGIRequestHandler, make_server

# Exports happen on /_flush only: the periodic ones never come within a test,
# and the queue never fills up to a batch that would export by itself.
HOUR_MS = 3_600_000
QUEUE = 1_000_000
FLUSH_TIMEOUT_MS = 15_000


class ErrorSchedule:
    """Request k (from 1) fails when it takes floor(k * rate) past an integer:
    exactly `rate` of the requests fail, spread evenly, the same every run."""

    def __init__(self, rate: float):
        self.rate = rate
        self.requests = 0
        self.lock = threading.Lock()

    def next_fails(self) -> bool:
        with self.lock:
            self.requests += 1
            k = self.requests
        return math.floor(k * self.rate) > math.floor((k - 1) * self.rate)


def providers(args: argparse.Namespace):
    """(tracer provider, meter provider, the exporting providers): the SDK's
    providers for --signals, a no-op one for a signal left out."""
    resource = Resource.create(
        {
            "service.name": "shop",
            "deployment.environment.name": "test",
            "deployment.id": f"shop-{args.version}",
            "git.sha": args.sha,
        }
    )
    exporting = []
    tracer_provider = NoOpTracerProvider()
    meter_provider = NoOpMeterProvider()
    if args.signals in ("traces", "both"):
        tracer_provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=args.otlp, insecure=True)
        if args.periodic:
            # The SDK's defaults, OTEL_BSP_* read from the environment.
            processor = BatchSpanProcessor(exporter)
        else:
            processor = BatchSpanProcessor(
                exporter,
                schedule_delay_millis=HOUR_MS,
                max_queue_size=QUEUE,
                max_export_batch_size=QUEUE,
            )
        tracer_provider.add_span_processor(processor)
        exporting.append(tracer_provider)
    if args.signals in ("metrics", "both"):
        exporter = OTLPMetricExporter(endpoint=args.otlp, insecure=True)
        # Periodic: the SDK's default, OTEL_METRIC_EXPORT_INTERVAL read from
        # the environment.
        interval = None if args.periodic else HOUR_MS
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval)
        meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
        exporting.append(meter_provider)
    return tracer_provider, meter_provider, exporting


def build_app(args: argparse.Namespace):
    """The WSGI application: the shop instrumented, /_flush on its own."""
    tracer_provider, meter_provider, exporting = providers(args)
    errors = ErrorSchedule(args.error_rate)

    shop = Flask(f"shop-{args.version}")

    @shop.get("/checkout")
    def checkout():
        if errors.next_fails():
            return "payment backend failed\n", 500
        return "ok\n"

    control = Flask("control")

    @control.post("/_flush")
    def flush():
        # Returns once the export was answered, or the exporter gave up
        # retrying (the daemon restarting): the SDK does not say which.
        for provider in exporting:
            provider.force_flush(timeout_millis=FLUSH_TIMEOUT_MS)
        return "flushed\n"

    FlaskInstrumentor().instrument_app(
        shop, tracer_provider=tracer_provider, meter_provider=meter_provider
    )

    def app(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_"):
            return control.wsgi_app(environ, start_response)
        return shop.wsgi_app(environ, start_response)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="deployment.id is shop-<version>")
    parser.add_argument("--sha", required=True, help="git.sha")
    parser.add_argument("--otlp", required=True, help="the daemon's OTLP/gRPC host:port")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answering 500")
    parser.add_argument("--signals", choices=["traces", "metrics", "both"], default="traces")
    parser.add_argument(
        "--periodic",
        action="store_true",
        help="export as the SDK does by default (OTEL_BSP_SCHEDULE_DELAY, "
        "OTEL_METRIC_EXPORT_INTERVAL), not only on /_flush",
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port, port 0 picks one")
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    # Keep-alive, so each traffic thread holds one connection.
    WSGIRequestHandler.protocol_version = "HTTP/1.1"
    host, port = args.listen.rsplit(":", 1)
    server = make_server(host, int(port), build_app(args), threaded=True)
    print(f"listening on http://{host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
