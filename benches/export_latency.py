#!/usr/bin/env python3
"""Export latency while 10,000 releases are listed in a loop.

Starts the release build with the default configuration, makes 10,000
releases (5,000 services, a baseline and a canary each, over OTLP/HTTP
protobuf), then sends small exports (10 spans of one release, one at a
time, on a kept-alive connection) and times each answer: first alone, then
while other processes loop GET /api/v1/releases and GET /metrics as fast
as the daemon answers them. Prints p50/p99/max export latency in both
phases and how long the listings took.

    cargo build --release
    tests/run                      # once, to create .venv with the SDK
    .venv/bin/python benches/export_latency.py [--bin PATH] [--services N] [--exports N] [--nice-listers]

The listers are processes, not threads, so that reading 10,000 releases
does not take the GIL from the exporter's clock. Needs Linux. It talks only
to the daemon it starts, on 127.0.0.1, and stops it with SIGTERM.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import requests  # noqa: E402

from harness import start_daemon  # noqa: E402


def fleet_requests(services: int, per_request: int, spans: int) -> list[bytes]:
    """ExportTraceServiceRequests for `services` services, `per_request`
    services a request, a baseline and a canary each with `spans` spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    now = time.time_ns()
    bodies = []
    n = 0
    for first in range(0, services, per_request):
        req = ExportTraceServiceRequest()
        for s in range(first, min(first + per_request, services)):
            for role in ("baseline", "canary"):
                rs = req.resource_spans.add()
                rs.resource.attributes.extend(
                    [
                        kv("service.name", f"svc-{s}"),
                        kv("deployment.environment.name", "prod"),
                        kv("deployment.id", f"svc-{s}-{role}"),
                        kv("git.sha", f"{s:07x}{role[0]}"),
                        kv("deployment.role", role),
                    ]
                )
                ss = rs.scope_spans.add()
                for _ in range(spans):
                    n += 1
                    ss.spans.append(
                        Span(
                            trace_id=n.to_bytes(16, "big"),
                            span_id=n.to_bytes(8, "big"),
                            name="GET /api/v1/orders",
                            kind=Span.SPAN_KIND_SERVER,
                            start_time_unix_nano=now,
                            end_time_unix_nano=now + 20_000_000,
                            attributes=[kv("http.route", "/api/v1/orders"), kv("http.request.method", "GET")],
                        )
                    )
        bodies.append(req.SerializeToString())
    return bodies


def post(session: requests.Session, url: str, body: bytes) -> None:
    r = session.post(url, data=body, headers={"content-type": "application/x-protobuf"}, timeout=30)
    r.raise_for_status()


def lister(url: str, stop, times, nice: bool) -> None:
    """Loops GET `url` until `stop` is set, reading each body whole (not
    parsed), and appends each answer's seconds to `times`. At the lowest
    priority with --nice-listers: in production the listers run elsewhere,
    and on a small machine their own reading of megabytes would otherwise
    take the cores from the exporter's clock and the daemon alike."""
    if nice:
        os.nice(19)
    s = requests.Session()
    while not stop.is_set():
        t = time.monotonic()
        r = s.get(url, timeout=60)
        r.raise_for_status()
        _ = r.content
        times.append(time.monotonic() - t)


def exports(session: requests.Session, url: str, body: bytes, n: int, gap: float) -> list[float]:
    """Sends `body` `n` times, one after another `gap` seconds apart, and
    returns each answer's latency in seconds."""
    out = []
    for _ in range(n):
        t = time.monotonic()
        post(session, url, body)
        out.append(time.monotonic() - t)
        time.sleep(gap)
    return out


def summary(name: str, xs: list[float]) -> str:
    xs = sorted(xs)
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return (
        f"{name}: {len(xs)} exports, p50 {p(0.5) * 1e3:.2f} ms, p99 {p(0.99) * 1e3:.2f} ms,"
        f" max {xs[-1] * 1e3:.2f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "release-verdict")
    ap.add_argument("--services", type=int, default=5_000, help="services, a baseline and a canary each")
    ap.add_argument("--exports", type=int, default=1_000, help="small exports timed in each phase")
    ap.add_argument("--gap", type=float, default=0.005, help="seconds between two timed exports")
    ap.add_argument("--listers", type=int, default=1, help="processes looping GET /api/v1/releases")
    ap.add_argument("--nice-listers", action="store_true", help="run the listing processes at nice 19")
    args = ap.parse_args()
    if not args.bin.is_file():
        print(f"{args.bin} not found: run `cargo build --release`", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="export-latency-") as tmp:
        d = start_daemon(Path(tmp), binary=args.bin)
        traces = f"{d.http_url}/v1/traces"
        try:
            session = requests.Session()
            t = time.monotonic()
            for body in fleet_requests(args.services, 100, 4):
                post(session, traces, body)
            tracked = d.metrics().get("release_verdict_releases_tracked")
            print(f"{tracked:.0f} releases tracked after {time.monotonic() - t:.1f}s")

            small = fleet_requests(1, 1, 5)[0]  # svc-0's baseline and canary, 10 spans
            exports(session, traces, small, 50, args.gap)  # warm the connection
            alone = exports(session, traces, small, args.exports, args.gap)

            ctx = multiprocessing.get_context("spawn")
            stop = ctx.Event()
            manager = ctx.Manager()
            listings, scrapes = manager.list(), manager.list()
            procs = [
                ctx.Process(target=lister, args=(f"{d.http_url}/api/v1/releases", stop, listings, args.nice_listers))
                for _ in range(args.listers)
            ]
            procs.append(ctx.Process(target=lister, args=(f"{d.http_url}/metrics", stop, scrapes, args.nice_listers)))
            for p in procs:
                p.start()
            while len(listings) < 2:  # the listers are answered: the loop is on
                time.sleep(0.05)
            listed = exports(session, traces, small, args.exports, args.gap)
            stop.set()
            for p in procs:
                p.join()

            print(summary("exports alone", alone))
            print(summary("exports while listing", listed))
            print(
                f"GET /api/v1/releases: {len(listings)} answers, median {statistics.median(listings) * 1e3:.0f} ms;"
                f" GET /metrics: {len(scrapes)} answers, median {statistics.median(scrapes) * 1e3:.0f} ms"
            )
        finally:
            code = d.stop()
        print(f"daemon exited {code} after SIGTERM")
        return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
