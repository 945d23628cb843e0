"""The release ledger survives a crash: the real daemon is killed with
SIGKILL mid-rollout and started again on the same ledger, each test on both
databases (a SQLite file, and a real PostgreSQL).

Before the kill: a canary is red against its baseline, a second canary is
still yellow (too little traffic yet), and the daemon has written events
and a checkpoint. After the restart, the first answer once /readyz says
ready is red for the red canary (the same red_since), every event written
before the crash is still there, and the yellow canary carries on from its
evidence instead of starting again.
"""

from __future__ import annotations

import time

import pytest
import requests
from opentelemetry.trace import SpanKind

from harness import Daemon, poll, poll_release
from otel import release_resource, send_spans

CONFIG = """
[ledger]
path = "ledger.db"
checkpoint_interval = "500ms"
[baseline]
settle = "1s"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def config(request) -> str:
    """CONFIG on each database: the file, or a fresh PostgreSQL database
    (the same for every daemon of the test, as the file is)."""
    if request.param == "sqlite":
        return CONFIG
    url = request.getfixturevalue("postgres").database("crash")
    return CONFIG.replace('path = "ledger.db"', f'url = "{url}"')


def events(daemon: Daemon) -> list[dict]:
    r = requests.get(f"{daemon.http_url}/api/v1/events", params={"limit": "1000"}, timeout=5)
    r.raise_for_status()
    return r.json()["events"]


def checkpointed_at(daemon: Daemon) -> float:
    return daemon.metrics().get("release_verdict_checkpoint_timestamp_seconds")


def test_a_kill_9_forgets_nothing_that_was_checkpointed(daemon_factory, unique, config):
    service = unique("payments")
    stable, red, yellow = unique("stable"), unique("red"), unique("slow-starter")
    d = daemon_factory(config)
    ok, failed = (SpanKind.SERVER, "ok"), (SpanKind.SERVER, "http_500")

    def round_of_traffic(_=None):
        send_spans(d, "grpc", release_resource(service, stable), [ok] * 100)
        send_spans(d, "grpc", release_resource(service, red), [ok] * 10 + [failed] * 10)
        send_spans(d, "grpc", release_resource(service, yellow), [ok] * 2)
        return d.get_release(red).json()

    before = poll(round_of_traffic, lambda v: v.get("verdict") == "red", timeout=30, interval=0.2, what="the red canary")
    slow = poll_release(d, yellow, lambda v: v["baseline"] is not None and v["verdict"] == "yellow", timeout=10)
    # Everything up to now is committed and checkpointed before the kill
    # (the ledger writes off the judge's path: its canary_failed follows).
    written = poll(
        lambda: events(d),
        lambda es: (red, "canary_failed") in {(e["deployment_id"], e["type"]) for e in es},
        timeout=10,
        what="canary_failed in the ledger",
    )
    red_at = before["red_since"]
    poll(lambda: checkpointed_at(d), lambda t: t and t > 0 and len(events(d)) >= len(written), timeout=10, what="a checkpoint")
    mark = checkpointed_at(d)
    poll(lambda: checkpointed_at(d), lambda t: t > mark, timeout=10, what="a checkpoint after the last traffic")

    d.kill()

    # The same directory: the same ledger file.
    again = daemon_factory(config, workdir=d.workdir)
    poll(lambda: requests.get(f"{again.http_url}/readyz", timeout=5).status_code, lambda s: s == 200, what="ready")
    first = again.get_release(red)
    assert first.status_code == 200, first.text
    v = first.json()
    assert v["verdict"] == "red", v
    assert v["red_since"] == red_at
    assert v["baseline"]["deployment_id"] == stable
    after = {e["id"] for e in events(again)}
    assert {e["id"] for e in written} <= after, "events written before the crash were lost"
    # The yellow canary carries on from its evidence: its totals keep counting.
    resumed = again.get_release(yellow).json()
    assert resumed["canary"]["requests"] >= slow["canary"]["requests"], (slow, resumed)
    assert resumed["first_seen_at"] == slow["first_seen_at"]
    send_spans(again, "grpc", release_resource(service, stable), [ok] * 100)
    send_spans(again, "grpc", release_resource(service, yellow), [ok] * 3)
    poll_release(
        again,
        yellow,
        lambda r: r["canary"]["requests"] == resumed["canary"]["requests"] + 3,
        timeout=10,
    )


def failed_events(daemon: Daemon, deployment_id: str) -> list[dict]:
    return [e for e in events(daemon) if e["deployment_id"] == deployment_id and e["type"] == "canary_failed"]


@pytest.mark.parametrize("delay", [0.0, 0.5, 2.0])
def test_a_red_after_the_last_checkpoint_survives_a_kill_9(daemon_factory, unique, delay, config):
    """The ledger recorded a red the checkpoint does not hold (the daemon
    was killed `delay` seconds after the red reached the ledger, before the
    next checkpoint): after the restart both reds are red with the same
    red_since, the one the checkpoint held as yellow from the first
    answer, the one first seen after it from its first telemetry, and
    neither is reported red a second time."""
    config = config.replace('checkpoint_interval = "500ms"', 'checkpoint_interval = "1h"')
    service = unique("checkout")
    stable, canary, late = unique("stable"), unique("canary"), unique("late")
    ok, failed = (SpanKind.SERVER, "ok"), (SpanKind.SERVER, "http_500")

    # 1. The canary is yellow with its baseline; a SIGTERM checkpoints that.
    first = daemon_factory(config)

    def healthy(d: Daemon) -> dict:
        send_spans(d, "grpc", release_resource(service, stable), [ok] * 100)
        send_spans(d, "grpc", release_resource(service, canary), [ok] * 10)
        return d.get_release(canary).json()

    poll(lambda: healthy(first), lambda v: v.get("baseline") and v["verdict"] == "yellow", timeout=30, interval=0.2, what="a yellow canary")
    assert first.stop() == 0

    # 2. On the same ledger, both canaries go red; the ledger records it.
    second = daemon_factory(config, workdir=first.workdir)
    poll(lambda: requests.get(f"{second.http_url}/readyz", timeout=5).status_code, lambda s: s == 200, what="ready")

    def failing(d: Daemon) -> tuple[dict, dict]:
        send_spans(d, "grpc", release_resource(service, stable), [ok] * 100)
        send_spans(d, "grpc", release_resource(service, canary), [ok] * 10 + [failed] * 10)
        send_spans(d, "grpc", release_resource(service, late), [ok] * 10 + [failed] * 10)
        return d.get_release(canary).json(), d.get_release(late).json()

    reds = poll(lambda: failing(second), lambda vs: all(v.get("verdict") == "red" for v in vs), timeout=30, interval=0.2, what="two red canaries")
    red_since = {v["deployment_id"]: v["red_since"] for v in reds}
    poll(lambda: [failed_events(second, i) for i in (canary, late)], lambda fs: all(fs), timeout=10, what="canary_failed in the ledger")
    time.sleep(delay)
    second.kill()

    # 3. The restart answers red, the same red_since, from the first answer.
    third = daemon_factory(config, workdir=first.workdir)
    poll(lambda: requests.get(f"{third.http_url}/readyz", timeout=5).status_code, lambda s: s == 200, what="ready")
    v = third.get_release(canary).json()
    assert (v["verdict"], v.get("red_since")) == ("red", red_since[canary]), v
    assert v.get("live", True), v  # judged live, restored from the checkpoint
    assert v["baseline"]["deployment_id"] == stable, v
    # The late canary: the ledger answers until it reports again, then it
    # is judged live and red from its first telemetry.
    gone = third.get_release(late).json()
    assert (gone["verdict"], gone.get("red_since")) == ("red", red_since[late]), gone
    send_spans(third, "grpc", release_resource(service, stable), [ok] * 100)
    send_spans(third, "grpc", release_resource(service, canary), [ok] * 10)
    send_spans(third, "grpc", release_resource(service, late), [ok] * 10)
    back = poll_release(third, late, lambda r: r.get("live", True) and r["canary"]["requests"] >= 10, timeout=10)
    assert (back["verdict"], back.get("red_since")) == ("red", red_since[late]), back
    assert back["canary"]["requests"] == 10, back  # counted afresh, not double
    # Red again is not news: one canary_failed each.
    poll(lambda: third.metrics().get("release_verdict_releases_tracked"), lambda n: n == 3, what="three releases")
    for deployment_id in (canary, late):
        assert len(failed_events(third, deployment_id)) == 1, failed_events(third, deployment_id)
