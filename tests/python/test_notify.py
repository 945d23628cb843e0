"""Telling people, end to end: a loadgen canary rolls out beside its stable
version and goes red and, with no human action, a Slack thread (opening message, replies in the thread, the
opening message updated to RED), a Grafana annotation region and signed
webhooks arrive at local receivers that check each request against the
real APIs' documented shapes (receivers.py). The receivers first refuse
everything (503, 429 with Retry-After), the daemon is killed with SIGKILL
while the deliveries wait, and the restarted daemon delivers every one,
none under two idempotency keys. Pending and dead deliveries are metrics.

Sinks are bounded: a webhook that never answers delays only itself (each
sink has its own lane), and one answering 500 with a huge body costs the
daemon no more than the 64 KiB it reads of it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness import Daemon, daemon_binary, poll, proc_status_kb
from otel import CHECKOUT, RolloutTraffic
from receivers import GRAFANA_TOKEN, SLACK_TOKEN, WEBHOOK_SECRET, Receivers

CANARY = "loadgen-0-canary"
STABLE = "loadgen-0-stable"


@pytest.fixture
def receivers():
    r = Receivers()
    yield r
    r.close()


def config(r: Receivers, tmp: Path) -> str:
    (tmp / "slack.token").write_text(SLACK_TOKEN + "\n")
    (tmp / "grafana.token").write_text(GRAFANA_TOKEN + "\n")
    return f"""
[ledger]
path = "ledger.db"
checkpoint_interval = "500ms"
[baseline]
settle = "1s"
[notify]
backoff_initial = "100ms"
backoff_max = "1s"
max_attempts = 50
page_url = "https://release-verdict.example.com"
[[notify.sinks]]
name = "releases"
kind = "slack"
url = "{r.url}/slack/api"
token_file = "{tmp / 'slack.token'}"
channel = "#releases"
services = ["loadgen-0"]
[[notify.sinks]]
name = "grafana"
kind = "grafana"
url = "{r.url}/grafana"
token_file = "{tmp / 'grafana.token'}"
services = ["loadgen-0"]
[[notify.sinks]]
name = "audit"
kind = "webhook"
url = "{r.url}/hook"
secret_env = "RV_TEST_WEBHOOK_SECRET"
services = ["loadgen-0"]
"""


def loadgen(d: Daemon, seconds: int, canary_weight: float = 0.1, canary_error: float = 0.08) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(daemon_binary()), "loadgen", "--target", f"grpc://{d.grpc_addr}", "--services", "1",
         "--rate", "3000", "--spans-per-request", "100", "--canary-error", str(canary_error),
         "--canary-weight", str(canary_weight), "--duration", f"{seconds}s"],
        capture_output=True, text=True, timeout=seconds + 60,
    )


def events(d: Daemon) -> list[dict]:
    r = requests.get(f"{d.http_url}/api/v1/events", params={"limit": "1000", "service": "loadgen-0"}, timeout=5)
    r.raise_for_status()
    return r.json()["events"]


def start(daemon_factory, text: str, receivers: Receivers | None = None, workdir: Path | None = None) -> Daemon:
    """A daemon (from conftest's `daemon_factory`, in `workdir` for a
    restart) with the secrets the config names in its environment."""
    env = {"RV_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    if receivers:
        env["RV_TEST_SLACK_WEBHOOK_URL"] = f"{receivers.url}/slack-hook/services/T0001/B0001/secretpart"
    return daemon_factory(text, workdir=workdir, env=env)


def test_a_red_canary_reaches_slack_grafana_and_webhooks_through_a_crash(daemon_factory, tmp_path: Path, receivers: Receivers):
    text = config(receivers, tmp_path)
    d = start(daemon_factory, text)
    # The stable version serves alone, then the canary rolls out: as
    # healthy as the stable at first (yellow, too young to judge), then
    # failing 8% of its requests.
    assert loadgen(d, 3, canary_weight=0.0).returncode == 0
    assert loadgen(d, 2, canary_error=0.005).returncode == 0
    lg = loadgen(d, 12)
    assert lg.returncode == 0, lg.stderr
    canary_failed = poll(
        lambda: [e for e in events(d) if e["type"] == "canary_failed" and e["deployment_id"] == CANARY],
        bool, timeout=30, interval=0.2, what="the canary turning red",
    )
    assert canary_failed
    poll(lambda: receivers.refusals, lambda n: n >= 5, timeout=20, what="refused tries")
    metrics = d.metrics()
    pending = {s: metrics.get("release_verdict_notifications_pending", None, sink=s) for s in ("releases", "grafana", "audit")}
    assert all(v and v > 0 for v in pending.values()), pending
    assert metrics.get("release_verdict_notifications_total", None, sink="audit", result="retried") > 0
    recorded = events(d)
    d.kill()

    receivers.accepting = True
    # The same directory: the same ledger file, and its outbox.
    again = start(daemon_factory, text, workdir=d.workdir)
    # Every event routed to the webhook arrives, signed.
    want = {e["id"] for e in recorded}
    poll(lambda: {h["event"]["id"] for h in receivers.hooks}, lambda got: want <= got,
         timeout=60, interval=0.2, what="every event at the webhook")

    # Slack: the thread opened, replies in it, the opening now says RED.
    def thread():
        return receivers.thread_of(CANARY)

    opening, replies = poll(thread, lambda t: t[0] is not None and t[0].updates and "RED" in t[0].updates[-1],
                            timeout=60, interval=0.2, what="the opening message updated to RED")
    assert opening.text.startswith("YELLOW: loadgen-0 loadgen-0-canary"), opening.text
    assert receivers.thread_of(STABLE)[0] is None, "no thread for the stable version"
    assert any("RED" in m.text for m in replies), [m.text for m in replies]
    assert opening.channel == "C0RELEASES1"
    assert "release-verdict.example.com/#/release/loadgen-0/prod/loadgen-0-canary" in str(opening.blocks)

    # Grafana: one annotation for the canary, a region ending at red.
    def canary_annotations():
        return [a for a in receivers.annotations.values() if CANARY in a.tags]

    marks = poll(canary_annotations, lambda a: a and a[0].time_end is not None and "verdict:red" in a[0].tags,
                 timeout=60, interval=0.2, what="the annotation region")
    assert len(marks) == 1, marks
    assert not [a for a in receivers.annotations.values() if STABLE in a.tags], "no marker for the stable version"
    region = marks[0]
    assert {"deploy", "loadgen-0", CANARY}.issubset(region.tags)
    assert region.time_end >= region.time

    # At least once, never under two keys: each event id has one key,
    # and every key the receivers saw twice carried the same event.
    keys_by_event: dict[int, set[str]] = {}
    for h in receivers.hooks:
        keys_by_event.setdefault(h["event"]["id"], set()).add(h["key"])
    assert all(len(k) == 1 for k in keys_by_event.values()), keys_by_event
    slack_keys = [m.delivery for m in receivers.messages]
    assert all(slack_keys), "every Slack message carries its delivery key"
    assert receivers.violations == [], receivers.violations

    # Nothing left pending or dead.
    def backlog():
        m = again.metrics()
        return [m.get(name, 0.0, sink=s) for name in ("release_verdict_notifications_pending",
                                                      "release_verdict_notifications_dead")
                for s in ("releases", "grafana", "audit")]

    poll(backlog, lambda b: b == [0.0] * 6, timeout=30, interval=0.2, what="an empty outbox")
    code = again.stop()
    assert code == 0, again.log()
    assert SLACK_TOKEN not in again.log() and WEBHOOK_SECRET not in again.log(), "a secret was logged"


def test_incoming_webhooks_post_each_event_and_a_refusal_is_dead_lettered(daemon_factory, tmp_path: Path, receivers: Receivers):
    receivers.accepting = True
    (tmp_path / "wrong.token").write_text("xoxb-revoked\n")
    d = start(daemon_factory, f"""
[ledger]
path = "ledger.db"
[[notify.sinks]]
name = "team-hook"
kind = "slack_webhook"
url_env = "RV_TEST_SLACK_WEBHOOK_URL"
[[notify.sinks]]
name = "revoked"
kind = "slack"
url = "{receivers.url}/slack/api"
token_file = "{tmp_path / 'wrong.token'}"
channel = "#releases"
""", receivers)
    for kind in ("deploy_started", "incident_started"):
        out = subprocess.run(
            [str(daemon_binary()), "event", "--server", d.http_url, "--type", kind, "--service", "search",
             "--environment", "prod", "--deployment-id", "search-77aa01b", "--meta", "title=p99 over SLO"],
            capture_output=True, text=True, timeout=30,
        )
        assert out.returncode == 0, out.stderr
    posted = poll(lambda: list(receivers.incoming), lambda m: len(m) == 2, timeout=20, interval=0.1,
                  what="two incoming-webhook posts")
    assert posted[0]["text"].startswith("DEPLOYING: search search-77aa01b"), posted[0]
    assert posted[1]["text"] == "Incident opened: p99 over SLO", posted[1]
    # invalid_auth is not retried: both deliveries are dead at once.
    dead = poll(lambda: d.metrics().get("release_verdict_notifications_dead", 0.0, sink="revoked"),
                lambda n: n == 2, timeout=20, interval=0.1, what="dead-lettered deliveries")
    assert dead == 2
    assert d.metrics().get("release_verdict_notifications_total", 0.0, sink="revoked", result="retried") == 0
    assert receivers.violations == [], receivers.violations
    assert d.stop() == 0, d.log()
    assert "/slack-hook/services/" not in d.log(), "the webhook URL (a secret) was logged"


def post_events(d: Daemon, service: str, releases: int, per_release: int) -> int:
    """Posts `releases` × `per_release` (at most 3) events in one call:
    each release's deploy_started, promoted, then rolled_back; returns how
    many."""
    kinds = ["deploy_started", "promoted", "rolled_back"][:per_release]
    now = dt.datetime.now(dt.timezone.utc)
    events = [
        {"type": kind, "service": service, "environment": "prod",
         "deployment_id": f"{service}-r{r}", "event_id": f"{service}-r{r}-{k}",
         "ts": (now + dt.timedelta(milliseconds=r * per_release + k)).isoformat().replace("+00:00", "Z")}
        for r in range(releases) for k, kind in enumerate(kinds)
    ]
    resp = requests.post(f"{d.http_url}/api/v1/events", json={"events": events}, timeout=30)
    assert resp.status_code == 200, resp.text
    return len(events)


def webhooks(receivers: Receivers, *sinks: tuple[str, str], timeout: str) -> str:
    hooks = "".join(f"""
[[notify.sinks]]
name = "{name}"
kind = "webhook"
url = "{receivers.url}{path}"
secret_env = "RV_TEST_WEBHOOK_SECRET"
""" for name, path in sinks)
    return f"""
[ledger]
path = "ledger.db"
[notify]
backoff_initial = "100ms"
backoff_max = "1s"
max_attempts = 1000
timeout = "{timeout}"
{hooks}"""


def test_a_webhook_that_never_answers_delays_only_itself(daemon_factory, receivers: Receivers):
    receivers.accepting = True
    # The hanging sink's requests time out after 30 s: before lanes, each
    # batch of due deliveries (both sinks mixed) waited that long.
    d = start(daemon_factory, webhooks(receivers, ("stuck", "/hang"), ("healthy", "/hook"), timeout="30s"))
    sent = post_events(d, "lanes", releases=100, per_release=2)
    started = time.monotonic()
    got = poll(lambda: len(receivers.hooks), lambda n: n >= sent, timeout=15, interval=0.1,
               what=f"all {sent} deliveries at the healthy webhook while the other hangs")
    elapsed = time.monotonic() - started
    assert got == sent
    assert receivers.hung >= 1, "the hanging sink was tried"
    assert elapsed < 15
    assert receivers.violations == [], receivers.violations
    m = d.metrics()
    assert m.get("release_verdict_notifications_total", 0.0, sink="healthy", result="delivered") == sent
    assert m.get("release_verdict_notifications_total", 0.0, sink="stuck", result="delivered") == 0
    # Stopping does not wait for the hanging requests.
    stopping = time.monotonic()
    assert d.stop() == 0, d.log()
    assert time.monotonic() - stopping < 10


def test_a_huge_error_answer_is_read_only_in_part(daemon_factory, receivers: Receivers):
    """A webhook answering 500 with 512 MiB: the daemon's peak RSS stays
    within 100 MiB of what it was before, while the delivery is retried."""
    bound_kib = 100 * 1024
    d = start(daemon_factory, webhooks(receivers, ("huge", "/huge"), timeout="20s"))
    pid = d.proc.pid
    before = proc_status_kb(pid, "VmRSS")
    post_events(d, "bodies", releases=1, per_release=1)
    poll(lambda: d.metrics().get("release_verdict_notifications_total", 0.0, sink="huge", result="retried"),
         lambda n: n >= 3, timeout=60, interval=0.2, what="three failed tries of the huge answer")
    peak = proc_status_kb(pid, "VmHWM")
    print(f"VmRSS before {before} KiB, peak (VmHWM) {peak} KiB, +{peak - before} KiB; "
          f"bytes of the answer written per try: {receivers.huge_sent}")
    assert peak - before < bound_kib, f"peak RSS {peak} KiB, {peak - before} KiB over {before} KiB"
    # Each try took a small part of the answer and hung up.
    assert receivers.huge_sent and max(receivers.huge_sent) < receivers.huge_bytes // 4, receivers.huge_sent
    m = d.metrics()
    assert m.get("release_verdict_notifications_total", 0.0, sink="huge", result="delivered") == 0
    poll(lambda: d.metrics().get("release_verdict_notifications_pending", 0.0, sink="huge"), lambda n: n == 1,
         timeout=10, interval=0.2, what="the delivery still pending")
    assert d.stop() == 0, d.log()


def test_a_red_on_one_endpoint_names_it_and_links_its_traces(daemon_factory, tmp_path: Path, receivers: Receivers):
    """Issue 30: Slack and webhooks say where a red is (the endpoint, the
    kind of error) and link up to three of its requests, through
    `[judge] trace_url_template` only; every message within Block Kit's
    limits (the receiver checks them)."""
    (tmp_path / "slack.token").write_text(SLACK_TOKEN + "\n")
    traces = "https://traces.example.com/trace/"
    text = f"""
[ledger]
path = "ledger.db"
[baseline]
settle = "1s"
[judge]
min_duration = "5s"
trace_url_template = "{traces}{{trace_id}}"
[notify]
backoff_initial = "100ms"
[[notify.sinks]]
name = "releases"
kind = "slack"
url = "{receivers.url}/slack/api"
token_file = "{tmp_path / 'slack.token'}"
channel = "#releases"
services = ["cart"]
[[notify.sinks]]
name = "audit"
kind = "webhook"
url = "{receivers.url}/hook"
secret_env = "RV_TEST_WEBHOOK_SECRET"
services = ["cart"]
"""
    receivers.accepting = True
    d = start(daemon_factory, text)
    traffic = RolloutTraffic(d, 40.0)
    try:
        hook = poll(
            lambda: [h["event"] for h in receivers.hooks
                     if h["event"]["type"] == "canary_failed" and h["event"]["deployment_id"] == "cart-v2"],
            bool, timeout=60, interval=0.2, what="canary_failed at the webhook",
        )[0]
    finally:
        traffic.stop()
    meta = hook["metadata"]
    red = d.get_release("cart-v2").json()
    assert meta["red_evidence"]["check"] == red["red_evidence"]["check"], (meta, red["red_evidence"])
    # Where: the endpoint, whether the red was decided on it or on the
    # pooled error ratio (then it is the worst endpoint); and the new kind.
    assert meta["red_evidence"]["endpoint"] == CHECKOUT, meta
    assert CHECKOUT in meta["reason"], meta
    exemplars = meta["exemplars"]
    assert 1 <= len(exemplars) <= 3, exemplars
    assert all(x["url"] == traces + x["trace_id"] for x in exemplars), exemplars
    assert all(x["failed"] for x in exemplars), exemplars

    # Slack: the opening message as it reads now (posted RED when the first
    # verdict is red, else rewritten to RED) and the reply saying it turned
    # red, if there is one, both name the endpoint and link the traces.
    def latest(m):
        """The opening message as it reads now: (text, blocks)."""
        return (m.updates[-1], m.update_blocks[-1]) if m.updates else (m.text, m.blocks)

    opening, replies = poll(
        lambda: receivers.thread_of("cart-v2"),
        lambda t: t[0] is not None and latest(t[0])[0].startswith("RED"),
        timeout=30, interval=0.2, what="the opening message RED",
    )
    opened = json.dumps(latest(opening)[1])
    assert "*Where*\\n" in opened and f"endpoint {CHECKOUT}" in opened, opened
    turned = [json.dumps(m.blocks) for m in replies if "→ RED" in m.text]
    for blocks in [opened, *turned]:
        assert CHECKOUT in blocks, blocks
        links = re.findall(r"<(https://traces\.example\.com/trace/[0-9a-f]{32})\|", blocks)
        assert links and len(links) <= 3, blocks
        assert {traces + x["trace_id"] for x in exemplars} >= set(links), (links, exemplars)
    assert receivers.violations == [], receivers.violations
