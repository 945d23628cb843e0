#!/usr/bin/env python3
"""gRPC partial messages at the default limits: RSS and an honest exporter's
export latency while peers hold streams open with unfinished messages.

Starts the release build with the default configuration (16 MiB messages,
256 MiB of bodies being read, 64 MiB of them per peer, 10 s to receive a
message). Then --peers processes, each on an address of its own
(127.0.0.2, .3, ...), open one HTTP/2 connection with --streams export
streams declaring 16 MiB and sending --send-mib of each, never finishing;
meanwhile an honest exporter on 127.0.0.1 sends small gRPC exports (10
spans, one at a time) and times each answer. Prints the daemon's RSS
before, at its peak and after the attack, how the attack's streams were
answered, and the honest exports' p50/p99/max.

    cargo build --release
    tests/run                      # once, to create .venv with the SDK and h2
    .venv/bin/python benches/hostile_grpc.py [--bin PATH] [--peers N] [--streams N] [--send-mib M]

The attackers are processes, not threads, so that pushing their bytes does
not take the GIL from the exporter's clock. Needs Linux. It talks only to
the daemon it starts, on 127.0.0.x, and stops it with SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from harness import proc_status_kb, start_daemon  # noqa: E402
from hostile import MIB, Attack  # noqa: E402


def attacker(addr: str, source: str, streams: int, send: int, seconds: float, out) -> None:
    attack = Attack(addr, source, streams=streams, declared=16 * MIB, to_send=send)
    attack.run(time.monotonic() + seconds)
    out.put(dict(collections.Counter(s.status for s in attack.by_id.values())))


def small_request() -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(
        [kv("service.name", "honest"), kv("deployment.id", "honest-1"), kv("git.sha", "1234567")]
    )
    ss = rs.scope_spans.add()
    now = time.time_ns()
    for i in range(10):
        ss.spans.append(
            Span(
                trace_id=(i + 1).to_bytes(16, "big"),
                span_id=(i + 1).to_bytes(8, "big"),
                name="GET /",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=now,
                end_time_unix_nano=now + 1_000_000,
            )
        )
    return req.SerializeToString()


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return f"{len(xs)} exports, p50 {p(0.5) * 1e3:.2f} ms, p99 {p(0.99) * 1e3:.2f} ms, max {xs[-1] * 1e3:.2f} ms"


def main() -> int:
    import grpc

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "release-verdict")
    ap.add_argument("--peers", type=int, default=3, help="attacking addresses, one connection each")
    ap.add_argument("--streams", type=int, default=100, help="streams per connection")
    ap.add_argument("--send-mib", type=int, default=15, help="MiB of each declared 16 MiB sent")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the attack lasts")
    args = ap.parse_args()
    if not args.bin.is_file():
        print(f"{args.bin} not found: run `cargo build --release`", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="hostile-grpc-") as tmp:
        d = start_daemon(Path(tmp), binary=args.bin)
        try:
            channel = grpc.insecure_channel(d.grpc_addr)
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            body = small_request()
            for _ in range(50):  # warm the connection
                export(body, timeout=10)
            time.sleep(1)
            before = proc_status_kb(d.proc.pid, "VmRSS")

            ctx = multiprocessing.get_context("spawn")
            out = ctx.Queue()
            procs = [
                ctx.Process(
                    target=attacker,
                    args=(d.grpc_addr, f"127.0.0.{2 + i}", args.streams, args.send_mib * MIB, args.seconds, out),
                )
                for i in range(args.peers)
            ]
            peak = [before]
            watching = threading.Event()
            watching.set()

            def watch() -> None:
                while watching.is_set():
                    peak[0] = max(peak[0], proc_status_kb(d.proc.pid, "VmRSS"))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            for p in procs:
                p.start()
            latencies, failures = [], 0
            while any(p.is_alive() for p in procs):
                t = time.monotonic()
                try:
                    export(body, timeout=10)
                    latencies.append(time.monotonic() - t)
                except grpc.RpcError:
                    failures += 1
                time.sleep(0.01)
            answers = collections.Counter()
            for p in procs:
                p.join()
                answers.update(out.get(timeout=5))
            watching.clear()
            watcher.join()
            time.sleep(2)
            after = proc_status_kb(d.proc.pid, "VmRSS")
            # A little traffic afterwards, then again: freed memory goes back
            # to the system as the allocator gets round to it.
            for _ in range(200):
                export(body, timeout=10)
                time.sleep(0.05)
            later = proc_status_kb(d.proc.pid, "VmRSS")
            m = d.metrics()

            names = {8: "RESOURCE_EXHAUSTED", 4: "DEADLINE_EXCEEDED", None: "no answer"}
            print(
                f"attack: {args.peers} peers x {args.streams} streams, 16 MiB declared, "
                f"{args.send_mib} MiB sent each, {args.seconds:.0f} s"
            )
            print("streams answered: " + ", ".join(f"{names.get(k, k)} {v}" for k, v in sorted(answers.items(), key=str)))
            print(
                f"RSS: {before / 1024:.0f} MiB before, peak {peak[0] / 1024:.0f} MiB "
                f"(+{(peak[0] - before) / 1024:.0f} MiB), {after / 1024:.0f} MiB 2 s after,"
                f" {later / 1024:.0f} MiB 12 s after"
            )
            print(f"honest exporter during the attack: {summary(latencies)}, {failures} failed")
            refused = sum(
                m.get("release_verdict_export_requests_refused_total", signal="spans", transport="grpc", reason=r) or 0
                for r in ("overloaded", "slow_body", "too_large")
            )
            print(f"refusals counted by the daemon: {refused:.0f}")
        finally:
            code = d.stop()
        print(f"daemon exited {code} after SIGTERM")
        return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
