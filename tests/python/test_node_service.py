"""Two versions of a real Express service (tests/node/service.js), started
under the upstream Node.js zero-code instrumentation from npm
(`node --require @opentelemetry/auto-instrumentations-node/register`) and
configured only by the OTEL_* variables the README's "First five minutes"
gives a user: `http/protobuf` to the daemon's HTTP port, the release on the
resource, the metric interval shortened. Traces and metrics are both on, the
SDK's default. Issue 30's test: the Node SDK as test_real_services.py runs
Flask.

Neither version reports `deployment.role`: the daemon finds the baseline by
traffic. A rollout, from the load client below at fixed rates:

- shop-v1 (the old version) serves alone for SOLO seconds, longer than the
  daemon's `[baseline] settle`, then on: GET /api/items 30/s and
  POST /api/checkout 30/s, 0.5% of checkouts answering 500;
- then shop-v2 (the new version) comes: GET /api/items 8/s and
  POST /api/checkout 8/s, 15% of checkouts answering 500.

The new version must go red within RED_WITHIN seconds of its first request,
its endpoint table failing POST /api/checkout and not GET /api/items; the
old version is not red. Then the traffic stops, both services get SIGTERM
(the SDK's shutdown exports what is left), and what the daemon counted is
what the load client sent: each release's requests and errors, the new
version's per endpoint, and the old one's as the new one's baseline. A
request is counted once though its span and its histogram point both
arrive.

Every wait polls with a deadline and says what it last saw.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest
import requests

from harness import REPO_ROOT, Daemon, Process, launch, poll

NODE_DIR = REPO_ROOT / "tests" / "node"
REGISTER = "@opentelemetry/auto-instrumentations-node/register"
PACKAGES = ("express", "@opentelemetry/api", "@opentelemetry/auto-instrumentations-node")
SHAS = {"v1": "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "v2": "2b5d9af0c1d2e3f405162738495a6b7c8d9e0f1a"}

ITEMS, CHECKOUT = "GET /api/items", "POST /api/checkout"  # the daemon's endpoint names
PATHS = {ITEMS: ("get", "/api/items"), CHECKOUT: ("post", "/api/checkout")}
# Requests per second by endpoint, and the share of checkouts answering 500.
RATES = {"v1": {ITEMS: 30.0, CHECKOUT: 30.0}, "v2": {ITEMS: 8.0, CHECKOUT: 8.0}}
CHECKOUT_ERRORS = {"v1": 0.005, "v2": 0.15}

# Exports as the SDK makes them by default, only sooner (ms).
EXPORT_EVERY = {"OTEL_METRIC_EXPORT_INTERVAL": "2000", "OTEL_BSP_SCHEDULE_DELAY": "200"}

# Seconds the old version serves alone: the daemon's `[baseline] settle`
# (10 s) and a tick or two, so the baseline is chosen as the new version
# comes and the new version is judged from its first request.
SOLO = 13.0
# Seconds from the new version's first request to red with the checkout
# endpoint failing (measured: 7-8.5 s).
# The aggregate, 7.5% failing at 16 requests/s against 0.25%, is red in a
# handful of seconds; the endpoint, 15% of 8 requests/s against 0.5%, is
# held to the red level split 20 ways (`[checks.endpoints] top`) and needs
# 20 requests in each cohort (`min_requests`). Telemetry is late by at
# most the metric interval (2 s; spans 0.2 s) and a tick (1 s). 45 s is
# four times what it takes, and keeps the test under 90 s.
RED_WITHIN = 45.0
# Traffic stops by itself after this long, whatever the test does.
TRAFFIC_LIMIT = SOLO + RED_WITHIN + 15.0
# The new version's comparison, and with it the baseline cohort's counts in
# its endpoint table, begins with the batch of the tick (1 s) that first
# holds the new version's spans (exported 0.2 s after the request): the old
# version's requests of about a tick either side of the new version's first
# request may be in or out (measured: 14-19 more than sent since it, of
# some 230). 2 s of the old version's traffic bounds them; a request counted
# twice would be hundreds out.
COMPARISON_STARTS_WITHIN = 2.0

SERVICE_LISTENING = re.compile(r"listening on (http://\S+)")


# --- the services ------------------------------------------------------------


def require_node() -> str:
    """The node binary. Fails (does not skip) when node or the npm packages
    are missing, naming what installs them."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: run tests/setup (it installs Debian's nodejs and npm)")
    missing = [p for p in PACKAGES if not (NODE_DIR / "node_modules" / p / "package.json").is_file()]
    if missing:
        pytest.fail(f"npm packages missing from {NODE_DIR / 'node_modules'}: {missing}; run tests/setup (npm ci there)")
    return node


@dataclasses.dataclass
class Service(Process):
    """One running version of the Express service."""

    version: str
    url: str

    @property
    def deployment_id(self) -> str:
        return f"shop-{self.version}"


def launch_service(workdir: Path, node: str, version: str, http_addr: str) -> Process:
    """Starts one version without waiting for it, configured as a user
    would configure it: OTEL_* variables only, none inherited from here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(EXPORT_EVERY)
    env.update(
        {
            "OTEL_SERVICE_NAME": "shop",
            "OTEL_RESOURCE_ATTRIBUTES": (
                f"deployment.id=shop-{version},git.sha={SHAS[version]},deployment.environment.name=test"
            ),
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{http_addr}",
            # `--require` is resolved from the working directory, which is
            # the test's: the packages are found in tests/node.
            "NODE_PATH": str(NODE_DIR / "node_modules"),
            "CHECKOUT_ERROR_RATE": str(CHECKOUT_ERRORS[version]),
        }
    )
    argv = [node, "--require", REGISTER, str(NODE_DIR / "service.js")]
    return Process(*launch(workdir, f"shop-{version}", argv, env=env))


@pytest.fixture
def shop(tmp_path: Path) -> Iterator:
    """start(http_addr) -> (old, new): both versions, up and idle. Each is
    stopped after the test if the test did not stop it."""
    launched: list[Process] = []

    def start(http_addr: str) -> tuple[Service, Service]:
        node = require_node()  # in the test, so that it fails rather than errs
        for version in ("v1", "v2"):
            launched.append(launch_service(tmp_path, node, version, http_addr))

        def up(version: str, p: Process) -> Service:
            url = p.await_log(SERVICE_LISTENING, timeout=30, interval=0.05).group(1)
            return Service(proc=p.proc, log_path=p.log_path, version=version, url=url)

        return up("v1", launched[0]), up("v2", launched[1])

    yield start
    for p in launched:
        p.stop()


# --- traffic -----------------------------------------------------------------


class Load:
    """Requests to one version at its endpoints' rates, a thread per
    endpoint, from `with` until `stop` or TRAFFIC_LIMIT seconds; counts what
    was sent and what answered 5xx, by endpoint. A request that got no
    answer is a problem: the service may or may not have counted it."""

    def __init__(self, service: Service):
        self.service = service
        self.rates = RATES[service.version]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sent = {e: 0 for e in self.rates}
        self.failed = {e: 0 for e in self.rates}  # answered 5xx
        self.problems: list[str] = []
        self.started = 0.0

    def __enter__(self) -> "Load":
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._requests, args=er, daemon=True) for er in self.rates.items()]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops sending; returns once every answer is counted."""
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=15)
            assert not t.is_alive(), f"a load thread did not stop: {self}"

    def _running(self) -> bool:
        return not self.stopping.is_set() and time.monotonic() - self.started < TRAFFIC_LIMIT

    def _problem(self, what: str) -> None:
        with self.lock:
            if len(self.problems) < 10:
                self.problems.append(what)

    def _requests(self, endpoint: str, rate: float) -> None:
        """Request i goes at started + i/rate: a thread that falls behind
        catches up rather than lowering the rate."""
        method, path = PATHS[endpoint]
        with requests.Session() as session:
            i = 0
            while self._running():
                delay = self.started + i / rate - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    return
                i += 1
                try:
                    status = session.request(method, f"{self.service.url}{path}", json={}, timeout=5).status_code
                except requests.RequestException as e:
                    self._problem(f"{endpoint}: {e!r}")
                    continue
                with self.lock:
                    self.sent[endpoint] += 1
                    self.failed[endpoint] += status >= 500
                if status not in (200, 500):
                    self._problem(f"{endpoint} answered {status}")

    def counts(self) -> dict[str, tuple[int, int]]:
        """(sent, answered 5xx) by endpoint, and "all"."""
        with self.lock:
            by = {e: (self.sent[e], self.failed[e]) for e in self.rates}
        by["all"] = (sum(n for n, _ in by.values()), sum(f for _, f in by.values()))
        return by

    def __str__(self) -> str:
        c = self.counts()
        sent = ", ".join(f"{e} {n} ({f} 5xx)" for e, (n, f) in c.items())
        return f"{self.service.deployment_id} after {time.monotonic() - self.started:.1f}s: {sent}; problems: {self.problems}"


# --- reading the daemon --------------------------------------------------------


def verdict(daemon: Daemon, deployment_id: str) -> dict:
    """The release's verdict, or the HTTP answer when there is none."""
    r = daemon.get_release(deployment_id)
    if r.status_code != 200:
        return {"status": r.status_code, "body": r.text[:200]}
    return r.json()


def endpoint(v: dict, name: str) -> Optional[dict]:
    """The verdict's `endpoints[]` entry called `name`, if any."""
    return next((e for e in v.get("endpoints") or [] if e["name"] == name), None)


def pair(counts: Optional[dict]) -> tuple[Optional[int], Optional[int]]:
    """(requests, errors) of a cohort's counts in a verdict."""
    counts = counts or {}
    return counts.get("requests"), counts.get("errors")


def counted(daemon: Daemon, old: Service, new: Service) -> dict[str, tuple]:
    """Each count the test holds against what was sent, by what it is."""
    v1, v2 = verdict(daemon, old.deployment_id), verdict(daemon, new.deployment_id)
    seen = {
        "v1 requests": pair(v1.get("canary")),
        "v2 requests": pair(v2.get("canary")),
        "v1 as v2's baseline": pair(v2.get("baseline")),
    }
    for name in (ITEMS, CHECKOUT):
        e = endpoint(v2, name) or {}
        seen[f"v2 {name}"] = pair(e.get("canary"))
        seen[f"v1 {name}, while v2 is judged"] = pair(e.get("baseline"))
    return seen


def within(counted: Optional[int], sent: int, slack: float) -> bool:
    return counted is not None and abs(counted - sent) <= slack


def accepted(daemon: Daemon) -> dict[str, float]:
    """Spans and metric data points the daemon accepted over OTLP/HTTP."""
    m = daemon.metrics()
    return {s: m.get("release_verdict_items_accepted_total", signal=s, transport="http") for s in ("spans", "points")}


# --- the test ------------------------------------------------------------------


def test_node_sdk_canary_is_judged_and_each_request_counted_once(daemon_factory, shop):
    daemon = daemon_factory()
    old, new = shop(daemon.http_addr)
    # Never more than was sent, at any read while traffic runs: the requests
    # in flight aside (one per load thread).
    overcounts: list[str] = []

    def read(service: Service, load: Optional[Load]) -> dict:
        v = verdict(daemon, service.deployment_id)
        if load is not None:
            sent, failed = load.counts()["all"]
            requests_, errors = pair(v.get("canary"))
            if (requests_ or 0) > sent + len(load.threads) or (errors or 0) > failed + len(load.threads):
                overcounts.append(f"{service.deployment_id} counted {v.get('canary')} after {sent} sent ({failed} 5xx)")
        return v

    with Load(old) as old_load:
        poll(
            lambda: read(old, old_load),
            lambda v: (v.get("canary") or {}).get("requests", 0) > 0,
            timeout=15,
            interval=0.25,
            what=f"{old.deployment_id}'s requests counted",
        )
        # The old version serves alone for a while, as before a rollout.
        time.sleep(max(0.0, old_load.started + SOLO - time.monotonic()))
        before_new = old_load.counts()
        with Load(new) as new_load:

            def both() -> dict:
                return {new.deployment_id: read(new, new_load), old.deployment_id: read(old, old_load)}

            def red_on_checkout(seen: dict) -> bool:
                v = seen[new.deployment_id]
                return (
                    v.get("verdict") == "red"
                    and (v.get("baseline") or {}).get("deployment_id") == old.deployment_id
                    and (endpoint(v, CHECKOUT) or {}).get("result") == "fail"
                )

            try:
                seen = poll(
                    both,
                    red_on_checkout,
                    timeout=new_load.started + RED_WITHIN - time.monotonic(),
                    interval=0.25,
                    what=f"{new.deployment_id} red against {old.deployment_id}, failing {CHECKOUT}",
                )
            except AssertionError as e:
                raise AssertionError(f"{e}\ntraffic {old_load}\n{new_load}") from None
            red_after = time.monotonic() - new_load.started
            new_load.stop()
        old_load.stop()
    v2 = seen[new.deployment_id]
    print(f"{new.deployment_id} red with {CHECKOUT} failing {red_after:.1f}s after its first request")
    print(f"reason: {v2['reason']!r}")
    print(f"endpoints: {[(e['name'], e['result'], e['detail']) for e in v2['endpoints']]}")
    assert not overcounts, overcounts[:5]
    assert not old_load.problems and not new_load.problems, (old_load.problems, new_load.problems)
    # The red names where: the failing endpoint is in the reason (issue 30:
    # it quoted a pooled ratio and never said where), said once, with one
    # action; only the failing endpoint fails in the table.
    reason = v2["reason"]
    assert reason.startswith("red since ") and CHECKOUT in reason, reason
    assert reason.count("roll back") == 1, reason
    assert v2["red_evidence"]["decided_at"] == v2["red_since"], v2["red_evidence"]
    items = endpoint(v2, ITEMS)
    assert items is not None and items["result"] != "fail", v2["endpoints"]
    assert seen[old.deployment_id]["verdict"] != "red", seen[old.deployment_id]

    # SIGTERM: the register entry point shuts the SDK down, which exports
    # what is left, and the service exits 0 once it has.
    for s in (old, new):
        started = time.monotonic()
        code = s.stop(timeout=15)
        print(f"{s.deployment_id} exited {code} {time.monotonic() - started:.1f}s after SIGTERM")
        assert code == 0, s.log()

    # Both signals came; each request was counted once.
    got = accepted(daemon)
    assert got["spans"] > 0 and got["points"] > 0, got
    old_sent, new_sent = old_load.counts(), new_load.counts()
    exact = {
        "v1 requests": old_sent["all"],
        "v2 requests": new_sent["all"],
        "v1 as v2's baseline": old_sent["all"],
        f"v2 {ITEMS}": new_sent[ITEMS],
        f"v2 {CHECKOUT}": new_sent[CHECKOUT],
    }
    # The baseline cohort of the endpoint table: the old version's requests
    # since the new one is judged (see COMPARISON_STARTS_WITHIN).
    since_new = {
        f"v1 {e}, while v2 is judged": (old_sent[e][0] - before_new[e][0], old_sent[e][1] - before_new[e][1], e)
        for e in (ITEMS, CHECKOUT)
    }
    reads: list[dict] = []

    def final() -> dict:
        reads.append(counted(daemon, old, new))
        return reads[-1]

    def exact_now(c: dict) -> bool:
        return all(c[k] == v for k, v in exact.items())

    try:
        c = poll(final, exact_now, timeout=10, interval=0.25, what="the counts equal to what was sent")
    except AssertionError:
        c = reads[-1]
        print(f"not exact after the final exports: sent {exact}, counted {c}")
    for key, (n, failed) in exact.items():
        c_n, c_failed = c[key]
        # Equal, to 1% of what was sent.
        assert within(c_n, n, 0.01 * n) and within(c_failed, failed, 0.01 * failed), (
            f"{key}: sent {n} ({failed} 5xx), counted {c_n} ({c_failed}); sent {exact}; counted {c}"
        )
    for key, (n, failed, e) in since_new.items():
        c_n, c_failed = c[key]
        slack = COMPARISON_STARTS_WITHIN * RATES["v1"][e]
        error_slack = math.ceil(slack * (CHECKOUT_ERRORS["v1"] if e == CHECKOUT else 0.0))
        assert within(c_n, n, slack) and within(c_failed, failed, error_slack), (
            f"{key}: sent {n} ({failed} 5xx) since v2's first request, counted {c_n} ({c_failed}); counted {c}"
        )
    print(f"sent {exact}, {since_new}; counted {c}; accepted over HTTP {got}")

    for s in (old, new):
        v = verdict(daemon, s.deployment_id)
        assert v["requests_from"] == "spans", v
    assert verdict(daemon, old.deployment_id)["verdict"] != "red"
    assert verdict(daemon, new.deployment_id)["verdict"] == "red"
