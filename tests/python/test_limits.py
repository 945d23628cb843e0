"""The release cap: a burst of 100,000 distinct deployment ids over OTLP/HTTP
protobuf. The first 10,000 (the default `limits.max_releases`) are tracked,
the other 90,000 are refused through OTLP partial success and counted, and
the daemon stays healthy and keeps serving the releases it tracks.

benches/burst_releases.py sends the same burst to the release build and
reports peak RSS.
"""

from __future__ import annotations

import time

import requests

from harness import burst_requests, counts, kv, poll, poll_release, send_burst

TOTAL = 100_000
PER_REQUEST = 1_000
CAP = 10_000  # the default limits.max_releases


def test_release_burst_is_capped_refused_and_counted(daemon_factory):
    # A daemon of its own (every default but the per-service cap: the burst
    # is one service) so that the counters and the gauge start from zero.
    d = daemon_factory("[limits]\nmax_releases_per_service = 1000000\n")
    bodies = burst_requests(TOTAL, PER_REQUEST, prefix="burst-")
    assert len(bodies) == TOTAL // PER_REQUEST

    result = send_burst(d.http_addr, bodies)
    print(f"burst: {result.requests} requests in {result.seconds:.1f}s, {result.rejected_spans} spans rejected")

    assert result.rejected_spans == TOTAL - CAP
    # Every request after the cap filled up said why.
    assert len(result.messages) == (TOTAL - CAP) // PER_REQUEST
    assert all("limit of 10000 tracked releases" in m for m in result.messages), result.messages[:3]

    m = d.metrics()
    assert m.get("release_verdict_releases_tracked", None) == CAP
    assert m.get("release_verdict_releases_refused_total", None) == TOTAL - CAP
    assert m.get("release_verdict_items_refused_total", None, signal="spans", transport="http", reason="release_limit") == TOTAL - CAP
    assert m.get("release_verdict_items_accepted_total", None, signal="spans", transport="http") == CAP

    # Healthy, and a tracked release keeps counting while a new one is refused.
    assert requests.get(f"{d.http_url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{d.http_url}/readyz", timeout=5).status_code == 200
    assert counts(d.get_release("burst-0").json()) == (1, 0)
    again = send_burst(d.http_addr, burst_requests(1, 1, prefix="burst-"))
    assert again.rejected_spans == 0
    poll_release(d, "burst-0", lambda v: counts(v) == (2, 0))
    # Refused whole, with an answer the exporter retries later.
    fresh = send_burst(d.http_addr, burst_requests(1, 1, prefix="one-more-"))
    assert fresh.rejected_spans == 1 and fresh.messages
    assert d.get_release("one-more-0").status_code == 404
    assert d.get_release(f"burst-{TOTAL - 1}").status_code == 404

    # (Not GET /api/v1/releases: listing 10,000 releases of one service is
    # quadratic in the daemon today and takes seconds; see the bench.)
    assert d.metrics().get("release_verdict_releases_tracked", None) == CAP


def test_junk_ids_under_one_service_do_not_lock_out_the_others(daemon_factory):
    """The security review's flood: 10,000 junk deployment ids used to fill
    the whole table for 15 minutes. Now they fill their own service's share."""
    d = daemon_factory("[limits]\nmax_releases_per_service = 50\n")
    junk = send_burst(d.http_addr, burst_requests(2_000, 100, prefix="junk-", service="flood"))
    assert junk.rejected_spans == 2_000 - 50
    assert all("limit of 50 tracked releases of service" in m for m in junk.messages), junk.messages[:2]
    legit = send_burst(d.http_addr, burst_requests(1, 1, prefix="shop-canary-", service="shop"))
    assert legit.rejected_spans == 0
    poll_release(d, "shop-canary-0", lambda v: counts(v) == (1, 0))


def junk_services(total: int, per_request: int) -> list[bytes]:
    """Requests naming `total` services of one release each, one span each:
    the security review's flood of junk service names."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    now = time.time_ns()
    bodies = []
    for start in range(0, total, per_request):
        req = ExportTraceServiceRequest()
        for i in range(start, min(start + per_request, total)):
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(
                [kv("service.name", f"junk-{i}"), kv("deployment.id", f"junk-{i}"), kv("git.sha", "c" * 40)]
            )
            rs.scope_spans.add().spans.append(
                Span(
                    trace_id=(i + 1).to_bytes(16, "big"),
                    span_id=(i + 1).to_bytes(8, "big"),
                    name="GET /",
                    kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=now,
                    end_time_unix_nano=now + 1_000_000,
                )
            )
        bodies.append(req.SerializeToString())
    return bodies


def test_junk_service_names_do_not_keep_a_judged_canary_out(daemon_factory):
    """The security review's flood of junk service names filled the release
    table and new legitimate releases got 503 for the 15 minutes of the idle
    expiry. Junk (a release of at most 10 requests with no baseline) now
    makes room for a canary its service's baseline would judge."""
    d = daemon_factory('[limits]\nmax_releases = 100\n[baseline]\nsettle = "500ms"\n')
    stable = burst_requests(1, 1, prefix="shop-stable-", service="shop")[0]
    probe = burst_requests(1, 1, prefix="shop-probe-", service="shop")[0]
    # The stable serves (ten times the probe's traffic) until shop has a
    # baseline, which the probe release shows.
    poll(
        lambda: (send_burst(d.http_addr, [stable] * 10 + [probe]), d.get_release("shop-probe-0").json())[1],
        lambda v: (v.get("baseline") or {}).get("deployment_id") == "shop-stable-0",
        timeout=30,
        interval=0.2,
        what="shop's baseline chosen",
    )
    flood = send_burst(d.http_addr, junk_services(2_000, 100))
    assert flood.rejected_spans == 2_000 - 98, flood.rejected_spans
    assert d.metrics().get("release_verdict_releases_tracked") == 100

    # A canary of shop: judged against shop's baseline, so junk makes room.
    canary = send_burst(d.http_addr, burst_requests(1, 1, prefix="shop-canary-", service="shop") * 5)
    assert canary.rejected_spans == 0, canary.messages
    v = poll_release(d, "shop-canary-0", lambda v: counts(v) == (5, 0), timeout=10)
    assert v["baseline"]["deployment_id"] == "shop-stable-0", v
    m = d.metrics()
    assert m.get("release_verdict_releases_evicted_total") == 1
    assert m.get("release_verdict_releases_tracked") == 100
    # A new service's first release is not judged yet: it waits for junk
    # idle a minute (or the idle expiry), refused with a retryable answer.
    other = send_burst(d.http_addr, burst_requests(1, 1, prefix="new-svc-", service="new-svc"))
    assert other.rejected_spans == 1 and other.messages, other
