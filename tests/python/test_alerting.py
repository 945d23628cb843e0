"""Alerts that carry the rollback, end to end with the real programs: the
daemon judges a canary red, Debian's `prometheus` scrapes it and evaluates
examples/prometheus-rules.yaml, `prometheus-alertmanager` routes the alert by
examples/alertmanager.yml, and a local HTTP server stands in for the release
on-call's webhook and Slack. What arrives must carry the release, the
baseline to go back to (previous_sha), the runbook, the rollback command and
a link to the verdict's reason.

Two canaries: one red against its stable baseline, one red on an absolute
guardrail with no baseline at all (it must page too, without previous_sha).
Every wait polls with a deadline.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from harness import Daemon, poll, poll_release
from outputs_support import (
    EXAMPLES,
    FAST_CONFIG,
    SHA_CANARY,
    SHA_STABLE,
    Server,
    post_spans,
    spans_request,
    start_prometheus,
    start_server,
)

ENV = "test"
ALERTMANAGER_EXAMPLE = EXAMPLES / "alertmanager.yml"

# A guardrail, so a canary without a baseline can be red.
CONFIG = FAST_CONFIG + """
[checks.guardrails]
max_error_ratio = 0.02
"""


# --- the stand-in receivers ---------------------------------------------------------


@dataclasses.dataclass
class Post:
    path: str
    body: dict


class Receiver:
    """An HTTP server on loopback that records every JSON POST and answers
    200 "ok" (what Slack's incoming webhooks answer)."""

    def __init__(self) -> None:
        posts: "queue.Queue[Post]" = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                posts.put(Post(path=self.path, body=json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.posts = posts
        self.received: list[Post] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def drain(self) -> list[Post]:
        """Everything received so far."""
        while True:
            try:
                self.received.append(self.posts.get_nowait())
            except queue.Empty:
                return self.received

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- a real Alertmanager --------------------------------------------------------------


def derived_config(receiver: Receiver) -> dict:
    """examples/alertmanager.yml with its URLs pointing at `receiver`
    (/default, /webhook, /slack) and the default route's group_wait
    shortened; the routing and the message templates are the example's."""
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    config["route"]["group_wait"] = "1s"
    for r in config["receivers"]:
        for w in r.get("webhook_configs", []):
            w["url"] = f"{receiver.url}/{'webhook' if r['name'] == 'release-oncall' else 'default'}"
        for s in r.get("slack_configs", []):
            s["api_url"] = f"{receiver.url}/slack"
    return config


def start_alertmanager(workdir: Path, config: dict) -> Server:
    """Debian's `prometheus-alertmanager` on a free loopback port, clustering off."""
    flags = [f"--storage.path={workdir / 'data'}", "--cluster.listen-address="]
    return start_server(Server, workdir, "prometheus-alertmanager", "alertmanager", config, flags)


# --- the world: two red canaries ---------------------------------------------------------


@dataclasses.dataclass
class World:
    daemon: Daemon
    service: str
    stable: str
    canary: str
    # red on the guardrail, alone in its service: no baseline
    lone_service: str
    lone: str


def _make_red(daemon: Daemon, world: World) -> None:
    """Sends stable and canary traffic until both canaries are red, 30 s at most."""
    pending = {world.canary, world.lone}
    deadline = time.monotonic() + 30
    seq = 1
    last: dict = {}
    with requests.Session() as s:
        while pending:
            post_spans(s, daemon, spans_request(world.service, ENV, world.stable, 180, sha=SHA_STABLE, seq=seq, role="stable"))
            post_spans(s, daemon, spans_request(world.service, ENV, world.canary, 60, error_every=3, seq=seq))
            post_spans(s, daemon, spans_request(world.lone_service, ENV, world.lone, 60, error_every=3, seq=seq, role="canary"))
            for deployment_id in sorted(pending):
                r = daemon.get_release(deployment_id)
                last[deployment_id] = r.json()
                if r.status_code == 200 and last[deployment_id]["verdict"] == "red":
                    pending.discard(deployment_id)
            seq += 1
            assert time.monotonic() < deadline, f"never red: {pending}; last: {last}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


def test_amtool_accepts_the_example():
    amtool = shutil.which("amtool")
    assert amtool, "amtool is not installed (Debian package prometheus-alertmanager)"
    p = subprocess.run([amtool, "check-config", str(ALERTMANAGER_EXAMPLE)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"amtool check-config: {p.stdout}{p.stderr}"
    assert "SUCCESS" in p.stdout


def _release_alerts(posts: list[Post], path: str) -> dict[str, list[dict]]:
    """Alerts of the webhook posts to `path`, by deployment id."""
    out: dict[str, list[dict]] = {}
    for p in posts:
        if p.path == path:
            for a in p.body["alerts"]:
                out.setdefault(a["labels"].get("deployment_id", ""), []).append(a)
    return out


def test_a_red_canary_pages_the_release_oncall_with_the_rollback(daemon_factory, tmp_path, receiver):
    tag = uuid.uuid4().hex[:8]
    am = start_alertmanager(tmp_path / "alertmanager", derived_config(receiver))
    prom = None
    try:
        daemon = daemon_factory(CONFIG)
        world = World(
            daemon=daemon,
            service=f"pay-{tag}",
            stable=f"pay-stable-{tag}",
            canary=f"pay-canary-{tag}",
            lone_service=f"lone-{tag}",
            lone=f"lone-canary-{tag}",
        )
        prom = start_prometheus(
            tmp_path / "prometheus",
            target=daemon.http_addr,
            rule_files=[EXAMPLES / "prometheus-rules.yaml"],
            alertmanager=am.addr,
        )
        with requests.Session() as s:
            post_spans(s, daemon, spans_request(world.service, ENV, world.stable, 200, sha=SHA_STABLE, role="stable"))
        poll_release(daemon, world.stable, lambda v: v["canary"]["requests"] >= 200)
        _make_red(daemon, world)
        verdict = poll_release(daemon, world.canary, lambda v: v["baseline"] is not None)
        assert verdict["baseline"]["deployment_id"] == world.stable, verdict

        # The exposition names the baseline on its own series, only for the
        # release that has one.
        text = requests.get(f"{daemon.http_url}/metrics", timeout=5).text
        info = [l for l in text.splitlines() if l.startswith("release_verdict_baseline_info{")]
        assert info == [
            f'release_verdict_baseline_info{{service="{world.service}",environment="{ENV}",'
            f'deployment_id="{world.canary}",git_sha="{SHA_CANARY}",'
            f'baseline_deployment_id="{world.stable}",previous_sha="{SHA_STABLE}"}} 1'
        ], info

        # Both canaries reach the release on-call's webhook, once each.
        want = {world.canary, world.lone}
        try:
            poll(
                lambda: _release_alerts(receiver.drain(), "/webhook"),
                lambda got: want <= got.keys(),
                timeout=30,
                interval=0.2,
                what="both red canaries posted to the release-oncall webhook",
            )
        except AssertionError as e:
            raise AssertionError(
                f"{e}\nprometheus alerts: {prom.api('alerts')}\nalertmanager log:\n{am.log()}"
            ) from None
        posts = receiver.drain()
        for p in posts:
            if p.path != "/webhook":
                continue
            # Alertmanager's documented webhook payload
            body = p.body
            assert body["version"] == "4", body
            assert body["receiver"] == "release-oncall", body
            assert body["status"] == "firing", body
            assert {"groupKey", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts"} <= body.keys()
            assert body["groupLabels"]["alertname"] == "ReleaseVerdictRed", body

        alerts = _release_alerts(posts, "/webhook")
        # One alert per release: the `or` does not add a second, baseline-less one.
        for deployment_id in want:
            assert len({json.dumps(a["labels"], sort_keys=True) for a in alerts[deployment_id]}) == 1, alerts[deployment_id]

        (red,) = {json.dumps(a, sort_keys=True): a for a in alerts[world.canary]}.values()
        labels, notes = red["labels"], red["annotations"]
        assert red["status"] == "firing"
        # Where it is red, as the daemon's evidence says (release_verdict_red_info).
        linked = requests.get(notes["verdict_url"].replace("http://release-verdict.observability.svc:4318", daemon.http_url), timeout=5).json()
        evidence = linked["red_evidence"]
        assert labels.pop("red_check") == evidence["check"], (labels, evidence)
        assert labels.pop("red_subject", None) == evidence["subject"], (labels, evidence)
        assert notes["where"].startswith(evidence["check"]), notes
        assert labels == {
            "alertname": "ReleaseVerdictRed",
            "severity": "critical",
            "scope": "release",
            "service": world.service,
            "environment": ENV,
            "deployment_id": world.canary,
            "git_sha": SHA_CANARY,
            "baseline_deployment_id": world.stable,
            "previous_sha": SHA_STABLE,
        }, labels
        assert notes["runbook_url"] == f"https://runbooks.internal/releases/{world.service}#release-verdict-red"
        assert notes["rollback"] == f"/deploy rollback {world.service} {SHA_STABLE}", notes
        assert world.stable in notes["description"], notes
        # The reason is behind the verdict link: the daemon's JSON, red.
        link = urllib.parse.urlsplit(notes["verdict_url"])
        assert link.path == f"/api/v1/releases/{world.canary}", link
        assert urllib.parse.parse_qs(link.query) == {"service": [world.service], "environment": [ENV]}, link
        linked = requests.get(f"{daemon.http_url}{link.path}?{link.query}", timeout=5).json()
        assert linked["verdict"] == "red" and linked["reason"], linked

        # Red without a baseline pages too, without a rollback target.
        lone = {json.dumps(a, sort_keys=True): a for a in alerts[world.lone]}
        (lone_alert,) = lone.values()
        assert lone_alert["labels"]["red_check"] == "guardrail_error_ratio", lone_alert
        assert lone_alert["labels"]["service"] == world.lone_service
        assert "previous_sha" not in lone_alert["labels"] and "baseline_deployment_id" not in lone_alert["labels"]
        assert lone_alert["annotations"]["rollback"].startswith("no baseline known"), lone_alert
        assert lone_alert["annotations"]["runbook_url"].endswith(f"/{world.lone_service}#release-verdict-red")

        # The Slack message the example sends carries the rollback command.
        slack = poll(
            lambda: [p.body for p in receiver.drain() if p.path == "/slack"],
            lambda got: any(world.canary in a["text"] for b in got for a in b["attachments"]),
            timeout=10,
            interval=0.2,
            what="the Slack message",
        )
        text = next(a["text"] for b in slack for a in b["attachments"] if world.canary in a["text"])
        assert f"Rollback: /deploy rollback {world.service} {SHA_STABLE}" in text, text
        assert f"Baseline: {world.stable} ({SHA_STABLE})" in text, text
        assert f"Where: {notes['where']}" in text, text
        assert f"Runbook: {notes['runbook_url']}" in text, text
        assert slack[0]["channel"] == "#prod-releases"

        # Nothing release-scoped went to the default receiver.
        assert not _release_alerts(receiver.drain(), "/default"), receiver.received
    finally:
        for p in (prom, am):
            if p is not None:
                p.stop()
