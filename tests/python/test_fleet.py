"""Several daemons sharing one PostgreSQL ledger (a real server, started
for the session; see postgres_server.py), each judging its own services as
the Collector's loadbalancing exporter would route them.

Asserted: every notification of the fleet reaches the local webhook
receiver exactly once although both replicas' notifiers work the one
outbox, and both take part; each replica answers for the whole fleet's
events and DORA; a release judged by one replica is answered by the other
from the ledger (`"live": false`, the same verdict and red_since).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
import requests
from opentelemetry.trace import SpanKind

from harness import Daemon, poll, poll_release
from otel import release_resource, send_spans
from receivers import WEBHOOK_SECRET, Receivers


@pytest.fixture
def receivers():
    r = Receivers()
    yield r
    r.close()


def config(url: str, replica: str, receivers: Receivers) -> str:
    return f"""
[ledger]
url = "{url}"
replica = "{replica}"
checkpoint_interval = "500ms"
[baseline]
settle = "1s"
[notify]
backoff_initial = "100ms"
backoff_max = "1s"
max_attempts = 100
[[notify.sinks]]
name = "audit"
kind = "webhook"
url = "{receivers.url}/hook"
secret_env = "RV_TEST_WEBHOOK_SECRET"
"""


def post_releases(d: Daemon, service: str, releases: int) -> int:
    """Each release's deploy_started and promoted, posted to `d`."""
    now = dt.datetime.now(dt.timezone.utc)
    events = [
        {"type": kind, "service": service, "environment": "prod",
         "deployment_id": f"{service}-r{r}", "event_id": f"{service}-r{r}-{kind}",
         "ts": (now + dt.timedelta(milliseconds=2 * r + k)).isoformat().replace("+00:00", "Z")}
        for r in range(releases) for k, kind in enumerate(["deploy_started", "promoted"])
    ]
    resp = requests.post(f"{d.http_url}/api/v1/events", json={"events": events}, timeout=30)
    assert resp.status_code == 200, resp.text
    return len(events)


def pending(d: Daemon) -> float:
    return d.metrics().get("release_verdict_notifications_pending", 0.0, sink="audit")


def delivered(d: Daemon) -> float:
    return d.metrics().get("release_verdict_notifications_total", 0.0, sink="audit", result="delivered")


def test_two_replicas_on_one_postgres_ledger_speak_once(daemon_factory, postgres, receivers, unique):
    receivers.accepting = True
    url = postgres.database("fleet")
    env = {"RV_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    a = daemon_factory(config(url, "replica-a", receivers), env=env)
    b = daemon_factory(config(url, "replica-b", receivers), env=env)
    east, west = unique("east"), unique("west")
    sent = post_releases(a, east, 150) + post_releases(b, west, 150)

    # Every message arrives; then neither outbox has anything left to send.
    poll(lambda: len({h["key"] for h in receivers.hooks}), lambda n: n >= sent, timeout=60, interval=0.2,
         what=f"all {sent} deliveries at the webhook")
    poll(lambda: (pending(a), pending(b)), lambda p: p == (0.0, 0.0), timeout=30, what="both outboxes drained")
    keys = Counter(h["key"] for h in receivers.hooks)
    twice = {k: n for k, n in keys.items() if n > 1}
    assert not twice, f"{len(twice)} delivered more than once, e.g. {sorted(twice.items())[:5]}"
    assert len(keys) == sent
    assert receivers.violations == [], receivers.violations
    by_a, by_b = delivered(a), delivered(b)
    assert by_a + by_b == sent, (by_a, by_b)
    assert by_a > 0 and by_b > 0, f"one replica sent everything: {by_a}, {by_b}"

    # Either replica reads the whole fleet's events and DORA.
    for d in (a, b):
        for service in (east, west):
            r = requests.get(f"{d.http_url}/api/v1/events", params={"service": service, "limit": "1000"}, timeout=10)
            assert len(r.json()["events"]) == 300, (d.workdir, service)
        dora = requests.get(f"{d.http_url}/api/v1/dora", timeout=10).json()["dora"]
        deployments = {r["service"]: r["deployments"] for r in dora}
        assert deployments.get(east) == 150 and deployments.get(west) == 150, deployments


def test_a_release_judged_by_one_replica_is_answered_by_the_other(daemon_factory, postgres, receivers, unique):
    url = postgres.database("fleet")
    env = {"RV_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    a = daemon_factory(config(url, "replica-a", receivers), env=env)
    b = daemon_factory(config(url, "replica-b", receivers), env=env)
    service = unique("checkout")
    stable, canary = unique("stable"), unique("canary")
    ok, failed = (SpanKind.SERVER, "ok"), (SpanKind.SERVER, "http_500")

    def traffic(_=None) -> dict:
        send_spans(a, "grpc", release_resource(service, stable), [ok] * 100)
        send_spans(a, "grpc", release_resource(service, canary), [ok] * 10 + [failed] * 10)
        return a.get_release(canary).json()

    red = poll(traffic, lambda v: v.get("verdict") == "red", timeout=30, interval=0.2, what="red on replica a")
    # Recorded off the judge's path: replica b answers once it is written.
    other = poll_release(b, canary, lambda v: v.get("verdict") == "red", timeout=15)
    assert other["live"] is False, other
    assert other["red_since"] == red["red_since"], (other, red)
    assert other["baseline"]["deployment_id"] == stable, other
