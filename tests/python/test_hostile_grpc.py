"""A peer that opens gRPC export streams, declares large messages, sends
most of each and never finishes: the daemon holds at most that peer's share
of the bodies' budget, refuses the rest at once (RESOURCE_EXHAUSTED with
RetryInfo), times out what it holds (DEADLINE_EXCEEDED), and an honest
exporter on another address is served throughout, every span counted.

Before the gRPC messages were budgeted, tonic buffered every stream's
partial message for as long as the stream stayed open: 40 streams of
3.9 MiB here held ~160 MB, none was answered, and with the default 16 MiB
limit one connection of 100 streams held 1.69 GB.

The peer is a raw HTTP/2 client (PyPI's h2) on 127.0.0.2; the honest
exporter is the OpenTelemetry SDK's gRPC exporter on 127.0.0.1.
benches/hostile_grpc.py runs the same attack at the default limits.
"""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.trace.export import SpanExportResult

from harness import counts, poll, poll_release, proc_status_kb
from hostile import MIB, Attack
from otel import export_server_spans, release_resource, span_exporter

CONFIG = f"""
[server]
max_request_bytes = {4 * MIB}
max_buffered_bytes = {32 * MIB}
max_buffered_bytes_per_peer = {8 * MIB}
body_read_timeout = "3s"
"""


def rss_kb(d) -> int:
    return proc_status_kb(d.proc.pid, "VmRSS")


def test_partial_grpc_messages_hold_only_the_peers_share(daemon_factory, unique):
    d = daemon_factory(CONFIG)
    honest = unique("honest")
    before = rss_kb(d)

    # 40 streams declaring 4 MiB and sending 3.9 MiB each: 156 MiB offered.
    attack = Attack(d.grpc_addr, "127.0.0.2", streams=40, declared=4 * MIB, to_send=4 * MIB - 100 * 1024)
    # And one declaring more than max_request_bytes.
    too_big = Attack(d.grpc_addr, "127.0.0.3", streams=1, declared=64 * MIB, to_send=1024)
    peak = [before]
    held = [0.0]
    running = threading.Event()
    running.set()

    def watch_rss() -> None:
        while running.is_set():
            peak[0] = max(peak[0], rss_kb(d))
            held[0] = max(held[0], d.metrics().get("release_verdict_request_body_bytes_buffered"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_rss, daemon=True)
    watcher.start()
    attackers = [threading.Thread(target=a.run, args=(time.monotonic() + 30,)) for a in (attack, too_big)]
    for t in attackers:
        t.start()

    # The honest exporter, meanwhile, from its own address: every export succeeds.
    exporter = span_exporter(d, "grpc")
    results = export_server_spans(exporter, release_resource("honest", honest), 20, "hostile-test")
    for t in attackers:
        t.join(timeout=40)
    running.clear()
    watcher.join()

    assert results and all(r == SpanExportResult.SUCCESS for r in results), results
    poll_release(d, honest, lambda v: counts(v) == (20, 0))

    statuses = [s.status for s in attack.by_id.values()]
    refused = [s for s in attack.by_id.values() if s.status == 8]
    timed_out = [s for s in attack.by_id.values() if s.status == 4]
    # Every stream was answered: the ones over the share at once, the ones
    # within it when body_read_timeout ran out.
    assert len(refused) + len(timed_out) == len(statuses), statuses
    assert refused and all("max_buffered_bytes_per_peer" in s.message for s in refused), [s.message for s in refused][:3]
    assert timed_out and all("body_read_timeout" in s.message for s in timed_out), [s.message for s in timed_out][:3]
    # At most the peer's share was held at once (the bodies' gauge, scraped
    # throughout; the honest exports are a few hundred bytes).
    assert 0 < held[0] <= 8 * MIB + 64 * 1024, held[0]
    (big,) = too_big.by_id.values()
    assert big.status == 8 and "max_request_bytes" in big.message, (big.status, big.message)

    # Memory: the peer's share and the daemon's working room, never the
    # 156 MiB offered.
    added_mib = (peak[0] - before) / 1024
    print(f"RSS {before / 1024:.0f} MiB before, peak {peak[0] / 1024:.0f} MiB (+{added_mib:.0f} MiB)")
    assert added_mib < 32, f"RSS grew by {added_mib:.0f} MiB"

    m = d.metrics()
    assert m.get("release_verdict_export_requests_refused_total", signal="spans", transport="grpc", reason="overloaded") == len(refused)
    assert m.get("release_verdict_export_requests_refused_total", signal="spans", transport="grpc", reason="slow_body") == len(timed_out)
    assert m.get("release_verdict_export_requests_refused_total", signal="spans", transport="grpc", reason="too_large") == 1
    # Nothing of them is still held.
    poll(
        lambda: d.metrics().get("release_verdict_request_body_bytes_buffered"),
        lambda held: held == 0,
        timeout=10,
        what="the budget freed",
    )


def test_memory_a_flood_held_is_given_back_once_it_ends(daemon_factory):
    """Two peers each fill their 64 MiB share with 16 MiB messages they never
    finish (the default limits). Once the streams are answered the daemon is
    idle, and what it held goes back to the system within seconds: mimalloc
    returns freed memory only when some thread next frees a page, so an idle
    daemon kept the ~130 MiB, in some runs for as long as it stayed idle,
    until `serve` asked for it every second."""
    d = daemon_factory('[server]\nbody_read_timeout = "3s"\n')
    before = rss_kb(d) / 1024
    attacks = [
        Attack(d.grpc_addr, source, streams=20, declared=16 * MIB, to_send=15 * MIB)
        for source in ("127.0.0.2", "127.0.0.3")
    ]
    peak = [before]
    running = threading.Event()
    running.set()

    def watch_rss() -> None:
        while running.is_set():
            peak[0] = max(peak[0], rss_kb(d) / 1024)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_rss, daemon=True)
    watcher.start()
    attackers = [threading.Thread(target=a.run, args=(time.monotonic() + 30,)) for a in attacks]
    for t in attackers:
        t.start()
    for t in attackers:
        t.join(timeout=40)
    running.clear()
    watcher.join()
    answered = [s.status for a in attacks for s in a.by_id.values()]
    assert all(s in (4, 8) for s in answered), answered
    assert peak[0] - before > 64, f"the flood held only {peak[0] - before:.0f} MiB: nothing to give back"

    # Watched from /proc alone: a request to the daemon would make the
    # allocator work, and give memory back on its own account.
    bound = before + max(0.2 * before, 16)
    after = poll(
        lambda: rss_kb(d) / 1024,
        lambda mib: mib <= bound,
        timeout=10,
        interval=0.5,
        what=f"RSS back within {bound:.0f} MiB (from a peak of {peak[0]:.0f} MiB, {before:.0f} before)",
    )
    print(f"RSS {before:.0f} MiB before, peak {peak[0]:.0f} MiB, {after:.0f} MiB after")
    assert d.metrics().get("release_verdict_request_body_bytes_buffered") == 0
