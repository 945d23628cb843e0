#!/usr/bin/env python3
"""Two replicas on one PostgreSQL ledger: forwarded reads, a dead peer, and
takeover of a service the ring moved.

Starts a PostgreSQL server in a temporary directory (as the tests do) and
two daemons (the release build) sharing it, checkpointing every 500 ms.
Replica A judges `--services` services (a baseline and a canary each, over
OTLP/HTTP protobuf); one canary in four fails half its requests, so it is
red. Then:

1. Takeover: each red service's telemetry goes to replica B instead (as
   when the Collector's ring moves it). Timed from B's first export of the
   service to B's first answer of its own (no forwarding) with the same
   color and red_since as A's; the judge ticks every second.
2. Forwarded reads: GET /api/v1/releases/{canary} of A's canaries asked of
   B (forwarded to A) and of A (local), one at a time on a kept-alive
   connection: p50/p99/max.
3. A dead peer: A is killed (SIGKILL); B's first read of an A release
   (waits for the forwarding timeout once), then the next ones (the ledger
   answers, `"live": false`): p50/p99/max.

    cargo build --release
    tests/setup                    # once: .venv with the SDK, PostgreSQL
    .venv/bin/python benches/fleet.py [--bin PATH] [--services N] [--reads N]

Needs Linux and Debian's postgresql. Talks only to what it starts, on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import requests  # noqa: E402

from harness import start_daemon  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402

REPLICA = "x-release-verdict-replica"


def export(http_url: str, service: str, deployment: str, ok: int, failed: int) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(
        [kv("service.name", service), kv("deployment.environment.name", "prod"),
         kv("deployment.id", deployment), kv("git.sha", "0" * 40)]
    )
    spans = rs.scope_spans.add()
    now = time.time_ns()
    for i in range(ok + failed):
        s = spans.spans.add()
        s.trace_id = (i + 1).to_bytes(16, "big")
        s.span_id = (i + 1).to_bytes(8, "big")
        s.name = "GET /"
        s.kind = Span.SPAN_KIND_SERVER
        s.start_time_unix_nano = now - 20_000_000
        s.end_time_unix_nano = now
        if i >= ok:
            s.status.code = Status.STATUS_CODE_ERROR
            s.attributes.append(kv("http.response.status_code", "500"))
    r = requests.post(f"{http_url}/v1/traces", data=req.SerializeToString(),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    r.raise_for_status()


def config(url: str, name: str) -> str:
    return f"""
[ledger]
url = "{url}"
replica = "{name}"
checkpoint_interval = "500ms"
[baseline]
settle = "1s"
"""


def quantiles(samples: list[float]) -> str:
    ms = sorted(x * 1000 for x in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"n={len(ms)} p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=str(ROOT / "target" / "release" / "release-verdict"))
    parser.add_argument("--services", type=int, default=40)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rv-fleet-bench-"))
    # Its own directory: the server's user cannot enter root's private one.
    pg = PostgresServer(Path(tempfile.mkdtemp(prefix="rv-postgres-")))
    daemons = []
    try:
        url = pg.database("bench")
        a = start_daemon(root / "a", config(url, "a"), binary=Path(args.bin))
        b = start_daemon(root / "b", config(url, "b"), binary=Path(args.bin))
        daemons = [a, b]
        services = [f"svc-{i}" for i in range(args.services)]
        red = {s for i, s in enumerate(services) if i % 4 == 0}

        def round_of(to, which) -> None:
            for s in which:
                export(to.http_url, s, f"{s}-stable", 100, 0)
                export(to.http_url, s, f"{s}-canary", 10, 10 if s in red else 0)

        deadline = time.monotonic() + 120
        while True:
            round_of(a, services)
            verdicts = {s: a.get_release(f"{s}-canary").json() for s in red}
            if all(v.get("verdict") == "red" for v in verdicts.values()):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"no red on A: {verdicts}")
            time.sleep(0.2)
        # A's checkpoint after its last telemetry.
        time.sleep(1.2)

        # 1. Takeover of the red services by B.
        took = []
        for s in sorted(red):
            want = verdicts[s]
            start = time.monotonic()
            round_of(b, [s])
            while True:
                r = b.get_release(f"{s}-canary")
                v = r.json() if r.status_code == 200 else {}
                if REPLICA not in r.headers and "live" not in v and v.get("verdict"):
                    break
                if time.monotonic() - start > 10:
                    raise SystemExit(f"B never judged {s}: {r.status_code} {r.text[:200]}")
                time.sleep(0.01)
            same = (v["verdict"], v.get("red_since")) == ("red", want["red_since"])
            took.append((time.monotonic() - start, same, v["canary"]["requests"], want["canary"]["requests"]))
        print(f"takeover: {len(took)} services; B's own verdict after its first export: "
              f"{quantiles([t for t, *_ in took])}; same red and red_since: {sum(s for _, s, *_ in took)}/{len(took)}; "
              f"canary requests carried on: {sum(n > w for *_, n, w in took)}/{len(took)}")

        # 2. Forwarded reads (A's green canaries, asked of B) vs local.
        time.sleep(1.2)  # B knows who judges what after its next checkpoint
        green = [s for s in services if s not in red]
        with requests.Session() as sb, requests.Session() as sa:
            for who, session, d in (("forwarded (B -> A)", sb, b), ("local (A)", sa, a)):
                times = []
                for i in range(args.reads):
                    s = green[i % len(green)]
                    t = time.perf_counter()
                    r = session.get(f"{d.http_url}/api/v1/releases/{s}-canary", timeout=5)
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
                    if d is b:
                        assert r.headers.get(REPLICA) == "a", r.headers
                print(f"reads {who}: {quantiles(times)}")

            # 3. A dies.
            a.proc.kill()
            a.proc.wait()
            times, lives = [], []
            for i in range(200):
                s = green[i % len(green)]
                t = time.perf_counter()
                r = sb.get(f"{b.http_url}/api/v1/releases/{s}-canary", timeout=5)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                lives.append(r.json().get("live"))
            print(f"dead peer: first read {times[0] * 1000:.0f} ms; then {quantiles(times[1:])}; "
                  f"answered live:false {lives.count(False)}/{len(lives)}")
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.terminate()
                d.proc.wait(timeout=30)
        pg.stop()


if __name__ == "__main__":
    main()
