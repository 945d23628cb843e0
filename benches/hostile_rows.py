#!/usr/bin/env python3
"""Issue 28's remaining hostile rows under load, against the release build
with the default configuration (plus what a row needs: a ledger, a write
token). For each row: the daemon's RSS before, its peak while the attack
runs, and 12 s after it stops; an honest exporter's latency on 127.0.0.1
throughout (10-span OTLP/HTTP exports, one every 5 ms); what the attacker
was answered.

Rows (`--row`, default all):
- `http-bodies`: 17 connections from 127.0.0.2, each a POST declaring
  16 MiB and sending 15.9 MiB of it, never finishing (the bodies' budget
  is 256 MiB, a peer's share 64 MiB).
- `streams`: one sender (127.0.0.2) exporting 25,000 cumulative
  request-duration histograms of 4,095 bounds (64 KiB a point), 50 a
  request, 1,000 a resource (25 resources).
- `events`: a write-token holder posting batches of 1,000 events for 10 s
  to a ledger capped at 4 MiB (`ledger.max_bytes`), every tenth batch
  stamped in the year 2200. `--batches 18` posts just enough to fill the
  ledger to its cap, with no flood: the memory that state costs after,
  to compare.

    cargo build --release
    tests/run                      # once, to create .venv
    .venv/bin/python benches/hostile_rows.py [--row NAME] [--bin PATH] [--batches N]

Targets (issue 28): RSS under 512 MiB, the honest exporter's p99 ≤ 50 ms,
RSS back within 20% after. It talks only to the daemon it starts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))

import requests  # noqa: E402

from export_latency import fleet_requests, summary  # noqa: E402
from harness import proc_status_kb, start_daemon  # noqa: E402
from hostile import field, kv, varint  # noqa: E402

MIB = 1 << 20
TOKEN = "bench-write-token"


def rss(pid: int) -> float:
    return proc_status_kb(pid, "VmRSS") / 1024


class Honest:
    """Small exports from 127.0.0.1, one every 5 ms, timed, until stopped."""

    def __init__(self, url: str):
        self.url = url
        self.body = fleet_requests(1, 1, 10)[0]
        self.times: list[float] = []
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                r = session.post(self.url, data=self.body, headers={"content-type": "application/x-protobuf"}, timeout=30)
                ok = r.status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                self.times.append(time.monotonic() - t)
            else:
                self.failed += 1
            time.sleep(0.005)


def http_bodies(d, answers: list[str]) -> None:
    """17 connections from 127.0.0.2 declaring 16 MiB, sending 15.9 MiB."""
    host, port = d.http_addr.rsplit(":", 1)
    chunk = b"\x00" * (1 << 16)

    def one() -> None:
        s = socket.create_connection((host, int(port)), source_address=("127.0.0.2", 0))
        s.settimeout(30)
        try:
            s.sendall(
                f"POST /v1/traces HTTP/1.1\r\nHost: {d.http_addr}\r\nContent-Type: application/x-protobuf\r\n"
                f"Content-Length: {16 * MIB - 1}\r\n\r\n".encode()
            )
            sent = 0
            while sent < 16 * MIB - 100 * 1024:
                s.sendall(chunk)
                sent += len(chunk)
            answers.append(s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace"))
        except OSError as e:
            answers.append(f"{type(e).__name__}")
        finally:
            s.close()

    threads = [threading.Thread(target=one) for _ in range(17)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def streams(d, answers: list[str]) -> None:
    """25,000 cumulative histograms of 4,095 bounds from 127.0.0.2."""
    bounds = field(7, struct.pack("<4095d", *[(i + 1) * 0.001 for i in range(4095)]))
    counts = field(6, struct.pack("<4096Q", *([1] * 4096)))
    start = time.time_ns() - 60 * 10**9
    head = varint(2 << 3 | 1) + struct.pack("<Q", start) + varint(3 << 3 | 1) + struct.pack("<Q", time.time_ns())
    head += varint(4 << 3 | 1) + struct.pack("<Q", 4096)
    session = requests.Session()
    session.mount("http://", SourceAdapter("127.0.0.2"))
    url = f"{d.http_url}/v1/metrics"
    per_request = 50
    for r in range(25_000 // per_request):
        # 1,000 streams a resource (its quota): 25 resources, so the
        # streams' byte budget is what holds.
        k = r * per_request // 1_000
        resource = field(1, kv("service.name", f"streams-{k}")) + field(1, kv("deployment.id", f"streams-{k}-1"))
        points = b"".join(
            field(1, head + field(9, kv("http.route", f"/r{r * per_request + i}")) + counts + bounds)
            for i in range(per_request)
        )
        histogram = points + b"\x10\x02"  # cumulative
        metric = field(1, b"http.server.request.duration") + field(3, b"s") + field(9, histogram)
        body = field(1, field(1, resource) + field(2, field(2, metric)))
        resp = session.post(url, data=body, headers={"content-type": "application/x-protobuf"}, timeout=60)
        answers.append(str(resp.status_code) + (" partial" if resp.status_code == 200 and resp.content else ""))


def events(d, answers: list[str], batches: int = sys.maxsize) -> None:
    """Batches of 1,000 posted events for 10 s (or `--batches` of them),
    every tenth batch stamped in 2200 (refused whole, 400)."""
    session = requests.Session()
    session.mount("http://", SourceAdapter("127.0.0.2"))
    url = f"{d.http_url}/api/v1/events"
    deadline = time.monotonic() + 10
    n = 0
    for b in range(batches):
        if time.monotonic() >= deadline:
            break
        now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
        future = b % 10 == 9
        batch = []
        for i in range(1_000):
            ts = dt.datetime(2200, 1, 1, tzinfo=dt.timezone.utc) if future else now
            batch.append({
                "type": "deploy_started", "service": f"junk-{n % 50}", "environment": "prod",
                "deployment_id": f"junk-{n}", "event_id": f"junk-{n}",
                "ts": ts.isoformat().replace("+00:00", "Z"),
            })
            n += 1
        resp = session.post(url, json={"events": batch}, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
        answers.append(str(resp.status_code))


class SourceAdapter(requests.adapters.HTTPAdapter):
    """Connections from a given local address (another peer than the
    honest exporter's 127.0.0.1)."""

    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


ROWS = {"http-bodies": http_bodies, "streams": streams, "events": events}


def ledger_bytes(path: Path) -> int:
    """The ledger's files: the database, its WAL and shared memory."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def ledger_used(path: Path) -> tuple[int, int]:
    """The bytes the ledger's pages in use take (what `ledger.max_bytes`
    caps; freed pages stay in the file until vacuumed), and its events."""
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages, free, size = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size"))
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        return (pages - free) * size, events
    finally:
        db.close()


def run(row: str, binary: Path, batches: int) -> None:
    with tempfile.TemporaryDirectory(prefix=f"hostile-{row}-") as tmp:
        config = ""
        ledger = Path(tmp) / "ledger.db"
        if row == "events":
            tokens = Path(tmp) / "write-tokens"
            tokens.write_text(TOKEN + "\n")
            config = f'[ledger]\npath = "{ledger}"\nmax_bytes = {4 * MIB}\n[auth]\nwrite_tokens_file = "{tokens}"\n'
        d = start_daemon(Path(tmp), config=config, binary=binary)
        pid = d.proc.pid
        try:
            honest = Honest(f"{d.http_url}/v1/traces")
            honest.thread.start()
            time.sleep(1)
            before = rss(pid)
            peak = [before]
            biggest_ledger = [0]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    peak[0] = max(peak[0], rss(pid))
                    if row == "events":
                        biggest_ledger[0] = max(biggest_ledger[0], ledger_bytes(ledger))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            answers: list[str] = []
            honest.times.clear()
            started = time.monotonic()
            if row == "events":
                events(d, answers, batches)
            else:
                ROWS[row](d, answers)
            took = time.monotonic() - started
            during = list(honest.times)
            honest.stop.set()
            honest.thread.join()
            time.sleep(12)
            after = rss(pid)
            sampling.set()
            sampler.join()
            tally: dict[str, int] = {}
            for a in answers:
                tally[a] = tally.get(a, 0) + 1
            print(f"[{row}] attack {took:.1f} s; answers {dict(sorted(tally.items()))}")
            print(
                f"[{row}] RSS {before:.0f} MiB before, peak {peak[0]:.0f} MiB (+{peak[0] - before:.0f}),"
                f" {after:.0f} MiB 12 s after ({(after / before - 1) * 100:+.0f}%)"
            )
            print(f"[{row}] " + summary("honest exporter during the attack", during) + f", {honest.failed} failed")
            if row == "events":
                used, kept = ledger_used(ledger)
                print(
                    f"[{row}] ledger: pages in use {used / MIB:.1f} MiB at the end (cap 4 MiB), {kept} events kept;"
                    f" files (database, WAL) at most {biggest_ledger[0] / MIB:.1f} MiB, {ledger_bytes(ledger) / MIB:.1f} MiB at the end"
                )
            m = d.metrics()
            print(f"[{row}] refused: " + ", ".join(
                f"{reason} {m.get('release_verdict_export_requests_refused_total', 0, signal=s, transport='http', reason=reason):.0f}"
                for s, reason in (("spans", "overloaded"), ("spans", "slow_body"), ("points", "overloaded"))
            ))
        finally:
            d.proc.terminate()
            d.proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "release-verdict")
    ap.add_argument("--row", choices=sorted(ROWS), action="append")
    ap.add_argument(
        "--batches", type=int, default=sys.maxsize,
        help="events row: stop after this many batches (18 leaves a ledger at its cap with no flood, to compare)",
    )
    args = ap.parse_args()
    if not args.bin.is_file():
        print(f"{args.bin} not found: run `cargo build --release`", file=sys.stderr)
        return 2
    os.environ.setdefault("NO_PROXY", "127.0.0.1,127.0.0.2,localhost")
    for row in args.row or list(ROWS):
        run(row, args.bin, args.batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
