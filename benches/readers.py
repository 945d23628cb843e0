#!/usr/bin/env python3
"""Verdict streams at scale: memory and export latency with 500 SSE clients
and 500 gRPC watches on 10,000 releases (issue 28, item 3).

Starts the release build, makes 10,000 releases (5,000 services, a
baseline and a canary each, as benches/export_latency.py does), then opens
`--sse` server-sent-event streams (`--sse-reading` of them read everything,
the rest never read) and `--watches` gRPC WatchVerdicts streams that never
read, all from other processes, while small exports are timed one after
another. Prints the daemon's RSS before, its highest while the streams are
open, and after they close; export p50/p99/max alone and while the streams
open and stay open; and the stream self metrics.

    cargo build --release
    tests/run                      # once, to create .venv
    .venv/bin/python benches/readers.py [--bin PATH] [--sse N] [--sse-reading N] [--watches N] [--snapshot-mib N]

Needs Linux (/proc). It talks only to the daemon it starts, on 127.0.0.1,
and stops it with SIGTERM.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import selectors
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))

import requests  # noqa: E402

from export_latency import exports, fleet_requests, post, summary  # noqa: E402
from harness import poll, proc_status_kb, start_daemon  # noqa: E402


def sse_clients(http_addr: str, total: int, reading: int, hold, opened) -> None:
    """Opens `total` SSE streams, reads `reading` of them to the end of
    whatever comes (in one thread, with a selector), holds the rest
    unread, until `hold` is set."""
    os.nice(19)
    host, port = http_addr.rsplit(":", 1)
    socks = []
    for _ in range(total):
        s = socket.create_connection((host, int(port)))
        s.sendall(
            f"GET /api/v1/releases/stream HTTP/1.1\r\nHost: {http_addr}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        socks.append(s)
    opened.set()
    sel = selectors.DefaultSelector()
    for s in socks[:reading]:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    while not hold.is_set():
        for key, _ in sel.select(timeout=0.2):
            try:
                if not key.fileobj.recv(1 << 20):
                    sel.unregister(key.fileobj)
            except BlockingIOError:
                pass
    for s in socks:
        s.close()


def watch_clients(grpc_addr: str, total: int, hold, opened) -> None:
    """Opens `total` WatchVerdicts streams that are never read, until
    `hold` is set."""
    os.nice(19)
    sys.path.insert(0, str(ROOT / "tests" / "python"))
    import grpc

    from outputs_support import generate_stubs

    with tempfile.TemporaryDirectory(prefix="readers-stubs-") as tmp:
        pb2, pb2_grpc = generate_stubs(Path(tmp))
        # 100 streams a connection: the server allows 200 at once on one.
        channels = [
            grpc.insecure_channel(grpc_addr, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range((total + 99) // 100)
        ]
        calls = [
            pb2_grpc.VerdictServiceStub(channels[i // 100]).WatchVerdicts(pb2.WatchVerdictsRequest(), timeout=3600)
            for i in range(total)
        ]
        opened.set()
        hold.wait()
        for c in calls:
            c.cancel()
        for ch in channels:
            ch.close()


def mib(pid: int) -> float:
    return proc_status_kb(pid, "VmRSS") / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "release-verdict")
    ap.add_argument("--services", type=int, default=5_000, help="services, a baseline and a canary each")
    ap.add_argument("--sse", type=int, default=500, help="SSE streams")
    ap.add_argument("--sse-reading", type=int, default=250, help="of which read everything sent")
    ap.add_argument("--watches", type=int, default=500, help="gRPC watch streams, never read")
    ap.add_argument("--exports", type=int, default=1_000, help="small exports timed in each phase")
    ap.add_argument("--gap", type=float, default=0.005, help="seconds between two timed exports")
    ap.add_argument("--hold", type=float, default=35.0, help="seconds the streams stay open")
    ap.add_argument(
        "--snapshot-mib", type=int, default=64,
        help="server.max_stream_snapshot_bytes in MiB (a large value: no budget, to compare)",
    )
    args = ap.parse_args()
    if not args.bin.is_file():
        print(f"{args.bin} not found: run `cargo build --release`", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="readers-") as tmp:
        config = (
            f"[server]\nmax_streams = {max(1000, args.sse + args.watches)}\n"
            f"max_stream_snapshot_bytes = {args.snapshot_mib << 20}\n"
        )
        d = start_daemon(Path(tmp), config=config, binary=args.bin)
        pid = d.proc.pid
        traces = f"{d.http_url}/v1/traces"
        try:
            session = requests.Session()
            for body in fleet_requests(args.services, 100, 4):
                post(session, traces, body)
            tracked = d.metrics().get("release_verdict_releases_tracked")
            snapshot = len(requests.get(f"{d.http_url}/api/v1/releases", timeout=60).content)
            print(f"{tracked:.0f} releases tracked; the listing is {snapshot / 2**20:.1f} MiB of JSON")
            small = fleet_requests(1, 1, 5)[0]
            exports(session, traces, small, 50, args.gap)
            alone = exports(session, traces, small, args.exports, args.gap)
            time.sleep(1)
            before = mib(pid)

            peak = [before]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    peak[0] = max(peak[0], mib(pid))
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            ctx = multiprocessing.get_context("spawn")
            hold = ctx.Event()
            sse_open, watch_open = ctx.Event(), ctx.Event()
            procs = [
                ctx.Process(target=sse_clients, args=(d.http_addr, args.sse, args.sse_reading, hold, sse_open)),
                ctx.Process(target=watch_clients, args=(d.grpc_addr, args.watches, hold, watch_open)),
            ]
            started = time.monotonic()
            for p in procs:
                p.start()
            during = exports(session, traces, small, args.exports, args.gap)
            sse_open.wait(60)
            watch_open.wait(60)
            poll(
                lambda: d.metrics().get("release_verdict_streams_open"),
                lambda n: n >= args.sse + args.watches,
                timeout=60,
                what="every stream open",
            )
            # Held past stream_snapshot_timeout (30 s), exports timed on.
            while time.monotonic() - started < args.hold:
                during += exports(session, traces, small, 100, args.gap)
            held = d.metrics()
            open_rss = mib(pid)
            hold.set()
            for p in procs:
                p.join()
            poll(
                lambda: d.metrics().get("release_verdict_streams_open"),
                lambda n: n == 0,
                timeout=60,
                what="every stream closed",
            )
            time.sleep(10)
            after = mib(pid)
            sampling.set()
            sampler.join()

            print(f"streams: {args.sse} SSE ({args.sse_reading} reading), {args.watches} watches (not reading)")
            print(
                f"RSS: {before:.0f} MiB before, peak {peak[0]:.0f} MiB (+{peak[0] - before:.0f}),"
                f" {open_rss:.0f} MiB at the end of the hold (+{open_rss - before:.0f}),"
                f" {after:.0f} MiB 10 s after they closed ({(after / before - 1) * 100:+.0f}%)"
            )
            print(summary("exports alone", alone))
            print(summary("exports while the streams open and stay open", during))
            dropped = {
                r: held.get("release_verdict_streams_dropped_total", reason=r) for r in ("stalled", "lagged")
            }
            print(f"streams dropped during the hold: {dropped}")
        finally:
            code = d.stop()
        print(f"daemon exited {code} after SIGTERM")
        return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
