#!/usr/bin/env python3
"""Burst of distinct releases against the release build: is memory bounded?

Sends 100,000 distinct deployment ids (1,000 per OTLP/HTTP protobuf request,
one SERVER span each, all of one service) to a fresh daemon with the default
configuration but no per-service cap, then
a second burst of 100,000 other ids, and prints the daemon's peak RSS
(VmHWM from /proc/PID/status) before and after each burst, the spans refused
through OTLP partial success, the self metrics, and how long the JSON API
takes to answer with the table full.

This is a standalone script, not a test (tests/python/test_limits.py checks
the same burst's counts against the debug build). Use:

    cargo build --release
    tests/run                      # once, to create .venv with the SDK
    .venv/bin/python benches/burst_releases.py [--bin PATH] [--total N] [--per-request N]

or pass --build to run `cargo build --release` first. Needs Linux (/proc).
It talks only to the daemon it starts, on 127.0.0.1, and stops it with
SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import requests  # noqa: E402

from harness import burst_requests, proc_status_kb, send_burst, start_daemon  # noqa: E402


def mib(kb: int) -> str:
    return f"{kb / 1024:.1f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "release-verdict")
    ap.add_argument("--total", type=int, default=100_000, help="distinct deployment ids per burst")
    ap.add_argument("--per-request", type=int, default=1_000, help="deployment ids (spans) per export request")
    ap.add_argument("--build", action="store_true", help="run `cargo build --release` first")
    args = ap.parse_args()

    if args.build:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    if not args.bin.is_file():
        print(f"{args.bin} not found: run `cargo build --release` (or pass --build)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="burst-releases-") as tmp:
        d = start_daemon(Path(tmp), config="[limits]\nmax_releases_per_service = 1000000\n", binary=args.bin)
        pid = d.proc.pid
        try:
            print(f"daemon {args.bin} pid {pid}, http {d.http_addr}")
            print(f"peak RSS at start:          {mib(proc_status_kb(pid, 'VmHWM'))} (RSS {mib(proc_status_kb(pid, 'VmRSS'))})")

            for n, prefix in enumerate(["burst-a-", "burst-b-"], start=1):
                bodies = burst_requests(args.total, args.per_request, prefix=prefix)
                result = send_burst(d.http_addr, bodies)
                rate = args.total / result.seconds if result.seconds else float("inf")
                print(
                    f"burst {n}: {args.total} ids in {result.requests} requests, {result.seconds:.2f}s"
                    f" ({rate:,.0f} spans/s); rejected_spans {result.rejected_spans}"
                )
                if result.messages:
                    print(f"  partial_success message: {result.messages[-1]!r}")
                print(f"peak RSS after burst {n}:     {mib(proc_status_kb(pid, 'VmHWM'))} (RSS {mib(proc_status_kb(pid, 'VmRSS'))})")

            m = d.metrics()
            for name, labels in [
                ("release_verdict_releases_tracked", {}),
                ("release_verdict_releases_refused_total", {}),
                ("release_verdict_items_refused_total", {"signal": "spans", "transport": "http", "reason": "release_limit"}),
                ("release_verdict_items_accepted_total", {"signal": "spans", "transport": "http"}),
            ]:
                shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
                print(f"  {name}{{{shown}}} {m.get(name, None, **labels)}")

            # The read API with the table full, and an export sent while it runs.
            t = time.monotonic()
            r = requests.get(f"{d.http_url}/api/v1/releases/burst-a-0", timeout=120)
            print(f"GET /api/v1/releases/burst-a-0: {r.status_code} in {time.monotonic() - t:.3f}s")
            listing: dict = {}

            def list_all() -> None:
                t0 = time.monotonic()
                resp = requests.get(f"{d.http_url}/api/v1/releases", timeout=600)
                listing.update(status=resp.status_code, n=len(resp.json()["releases"]), s=time.monotonic() - t0)

            lister = threading.Thread(target=list_all)
            lister.start()
            time.sleep(0.05)  # let the listing start first (this only shapes the measurement)
            t = time.monotonic()
            one = send_burst(d.http_addr, burst_requests(1, 1, prefix="burst-a-"))
            export_s = time.monotonic() - t
            lister.join()
            print(f"GET /api/v1/releases: {listing['status']}, {listing['n']} releases in {listing['s']:.2f}s")
            print(f"one export sent during that listing answered in {export_s:.2f}s (rejected {one.rejected_spans})")
            print(f"peak RSS at the end:        {mib(proc_status_kb(pid, 'VmHWM'))}")
        finally:
            code = d.stop()
        print(f"daemon exited {code} after SIGTERM")
        return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
