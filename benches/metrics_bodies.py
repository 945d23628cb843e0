#!/usr/bin/env python3
"""Peak RSS while the daemon reads OTLP/HTTP metrics bodies made of many
minimal request-duration histogram points: one bounded bucket each, the
most points (and bucket entries) per wire byte a sender can send.

Starts the release build with the default configuration. --senders
threads each post the same body (--points points, every bucket holding
--count requests) --rounds times. Prints the body's size, the daemon's RSS
before and its peak (VmHWM), and the answers. With --count 1 every bucket
is one latency entry; from 8 on a bucket is spread over 8 (see
`model::spread_bucket`), so the two show what the spreading costs.

    cargo build --release
    tests/run                      # once, to create .venv with the SDK
    .venv/bin/python benches/metrics_bodies.py --bin $PWD/target/release/release-verdict \\
        [--points 280000] [--count 8] [--senders 4] [--rounds 3]

It talks only to the daemon it starts, on 127.0.0.1, and stops it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import requests  # noqa: E402
from harness import proc_status_kb, start_daemon  # noqa: E402
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # noqa: E402
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.metrics.v1.metrics_pb2 import (  # noqa: E402
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource  # noqa: E402


def body(points: int, count: int) -> bytes:
    """One release's request-duration histogram, `points` delta points of
    one bucket (0, 100 ms] holding `count` requests."""

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    now = time.time_ns()
    point = HistogramDataPoint(
        start_time_unix_nano=now - 10**9,
        time_unix_nano=now,
        count=count,
        bucket_counts=[count, 0],
        explicit_bounds=[0.1],
    )
    metric = Metric(
        name="http.server.request.duration",
        unit="s",
        histogram=Histogram(
            aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA,
            data_points=[point] * points,
        ),
    )
    resource = Resource(attributes=[kv("service.name", "bodies"), kv("deployment.id", "bodies-1")])
    req = ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[ScopeMetrics(metrics=[metric])])]
    )
    return req.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "release-verdict")
    ap.add_argument("--points", type=int, default=280_000)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    data = body(a.points, a.count)
    print(f"body {len(data) / 2**20:.1f} MiB, {a.points} points of {a.count} requests")
    with tempfile.TemporaryDirectory() as d:
        daemon = start_daemon(Path(d), binary=a.bin)
        try:
            url = f"http://{daemon.http_addr}/v1/metrics"
            before = proc_status_kb(daemon.proc.pid, "VmRSS")
            answers: list[int] = []

            def send() -> None:
                for _ in range(a.rounds):
                    r = requests.post(
                        url, data=data, headers={"Content-Type": "application/x-protobuf"}, timeout=120
                    )
                    answers.append(r.status_code)

            threads = [threading.Thread(target=send) for _ in range(a.senders)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            peak = proc_status_kb(daemon.proc.pid, "VmHWM")
            print(
                f"RSS before {before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB "
                f"(+{(peak - before) / 1024:.0f}); answers {sorted(set(answers))} x{len(answers)}"
            )
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
