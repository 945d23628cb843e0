"""Two versions of a real Flask service (flask_service.py, instrumented with
the upstream OpenTelemetry instrumentation from PyPI) export OTLP/gRPC
straight to the real daemon: the reproductions of issue 15.

Neither version reports `deployment.role`, so the daemon has to tell the
baseline from the canary by itself. Both versions are up and idle first;
then traffic starts, as when a canary gets its share of a service:

- the old version, shop-v1: 90 requests/s, 0.5% of them answer 500;
- the new version, shop-v2: 10 requests/s, 8% of them answer 500;

and in every flush round the new version's exporter flushes first, so the
daemon hears of the new version before the old one. The new version must
still be judged against the old one, and go red within a minute of the
traffic's start; the old version's own verdict says it is the new one's
baseline and asks for nothing.

Every wait polls with a deadline and says what it last saw; traffic is
bounded in time and stops by itself.

And issue 26's: one version exporting as the SDK does by default, traces
and metrics both on (the auto-instrumentations' default) or metrics only,
is counted once, at every export: the daemon's requests and errors are
what the load client sent.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
import requests

from harness import Daemon, Process, free_port, launch, poll

SERVICE_SCRIPT = Path(__file__).with_name("flask_service.py")
SHAS = {"v1": "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "v2": "2b5d9af0c1d2e3f405162738495a6b7c8d9e0f1a"}

OLD_RATE, OLD_ERRORS = 90.0, 0.005
NEW_RATE, NEW_ERRORS = 10.0, 0.08
FLUSH_EVERY = 1.0  # seconds between flush rounds
RED_WITHIN = 60.0  # seconds from the start of traffic
# Traffic stops by itself after this long, whatever the test does.
TRAFFIC_LIMIT = 90.0

SERVICE_LISTENING = re.compile(r"listening on (http://\S+)")


# --- the services -------------------------------------------------------------


@dataclasses.dataclass
class Service(Process):
    """One running version of the Flask service."""

    version: str
    url: str

    @property
    def deployment_id(self) -> str:
        return f"shop-{self.version}"

    def flush(self, session: requests.Session) -> None:
        """Exports what the service recorded; returns once it was exported."""
        session.post(f"{self.url}/_flush", timeout=30).raise_for_status()


def launch_service(
    workdir: Path,
    version: str,
    error_rate: float,
    otlp: str,
    signals: str,
    semconv: Optional[str],
    periodic: Optional[dict[str, str]] = None,
) -> Process:
    """Starts one version without waiting for it. With `periodic` (OTEL_*
    settings), it exports as the SDK does by default, not on /_flush."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if semconv:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = semconv
    env.update(periodic or {})
    argv = [
        sys.executable,
        str(SERVICE_SCRIPT),
        f"--version={version}",
        f"--sha={SHAS[version]}",
        f"--otlp={otlp}",
        f"--error-rate={error_rate}",
        f"--signals={signals}",
    ] + (["--periodic"] if periodic is not None else [])
    return Process(*launch(workdir, f"shop-{version}", argv, env=env))


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Callable[..., tuple[Service, Service]]]:
    """start(otlp, signals="traces", semconv=None) -> (old, new): both
    versions of the service, up and idle. Stopped after the test."""
    launched: list[Process] = []

    def start(otlp: str, signals: str = "traces", semconv: Optional[str] = None) -> tuple[Service, Service]:
        old = launch_service(tmp_path, "v1", OLD_ERRORS, otlp, signals, semconv)
        launched.append(old)
        new = launch_service(tmp_path, "v2", NEW_ERRORS, otlp, signals, semconv)
        launched.append(new)

        def up(version: str, p: Process) -> Service:
            url = p.await_log(SERVICE_LISTENING, timeout=30, interval=0.05).group(1)
            return Service(proc=p.proc, log_path=p.log_path, version=version, url=url)

        return up("v1", old), up("v2", new)

    yield start
    for p in launched:
        p.stop()


# --- traffic --------------------------------------------------------------------


class Traffic:
    """Requests to both versions at their rates, and flush rounds in
    `flush_order`, each from its own thread, from `with` until its end or
    TRAFFIC_LIMIT seconds."""

    def __init__(self, old: Service, new: Service, flush_order: tuple[Service, ...]):
        self.rates = [(old, OLD_RATE), (new, NEW_RATE)]
        self.flush_order = flush_order
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sent = {s.deployment_id: 0 for s, _ in self.rates}
        self.failed = {s.deployment_id: 0 for s, _ in self.rates}  # answered 500
        self.flush_rounds = 0
        # Held by a flush round; `with traffic.flushes_held:` keeps them out.
        self.flushes_held = threading.Lock()
        self.problems: list[str] = []  # anything unexpected, reported on failure
        self.started = 0.0

    def __enter__(self) -> "Traffic":
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._requests, args=sr, daemon=True) for sr in self.rates]
        self.threads.append(threading.Thread(target=self._flush_rounds, daemon=True))
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=45)

    def _running(self) -> bool:
        return not self.stopping.is_set() and time.monotonic() - self.started < TRAFFIC_LIMIT

    def _problem(self, what: str) -> None:
        with self.lock:
            if len(self.problems) < 10:
                self.problems.append(what)

    def _requests(self, service: Service, rate: float) -> None:
        """Request i goes at started + i/rate: a thread that falls behind
        catches up rather than lowering the rate."""
        with requests.Session() as session:
            i = 0
            while self._running():
                delay = self.started + i / rate - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    return
                i += 1
                try:
                    status = session.get(f"{service.url}/checkout", timeout=5).status_code
                except requests.RequestException as e:
                    self._problem(f"{service.deployment_id}: {e!r}")
                    continue
                with self.lock:
                    self.sent[service.deployment_id] += 1
                    self.failed[service.deployment_id] += status == 500
                if status not in (200, 500):
                    self._problem(f"{service.deployment_id} answered {status}")

    def _flush_rounds(self) -> None:
        with requests.Session() as session:
            while not self.stopping.wait(FLUSH_EVERY) and self._running():
                with self.flushes_held:
                    try:
                        for service in self.flush_order:
                            service.flush(session)
                    except requests.RequestException as e:
                        self._problem(f"flush: {e!r}")
                with self.lock:
                    self.flush_rounds += 1

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __str__(self) -> str:
        with self.lock:
            sent = ", ".join(f"{d} {n} requests ({self.failed[d]} answered 500)" for d, n in self.sent.items())
            return f"after {self.elapsed():.1f}s: {sent}; {self.flush_rounds} flush rounds; problems: {self.problems}"


# --- verdicts ---------------------------------------------------------------------


def brief(daemon: Daemon, deployment_id: str) -> dict:
    """What a person would read first in a verdict (or the HTTP answer)."""
    r = daemon.get_release(deployment_id)
    if r.status_code != 200:
        return {"status": r.status_code, "body": r.text[:200]}
    v = r.json()
    return {
        "verdict": v["verdict"],
        "reason": v["reason"],
        "baseline": (v.get("baseline") or {}).get("deployment_id"),
        "canary": v["canary"],
    }


def await_judged_red(daemon: Daemon, old: Service, new: Service, traffic: Traffic, since: Optional[float] = None) -> dict:
    """Polls until the new version is red against the old one, at most
    RED_WITHIN seconds from `since` (a time.monotonic(); by default the
    traffic's start). Returns the new version's verdict; on time out, says
    what both versions' verdicts last were."""
    since = traffic.started if since is None else since

    def both() -> dict:
        return {s.deployment_id: brief(daemon, s.deployment_id) for s in (new, old)}

    def judged_red(seen: dict) -> bool:
        v = seen[new.deployment_id]
        return v.get("verdict") == "red" and v.get("baseline") == old.deployment_id

    try:
        poll(
            both,
            judged_red,
            timeout=since + RED_WITHIN - time.monotonic(),
            interval=0.25,
            what=f"{new.deployment_id} red against {old.deployment_id}",
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\ntraffic {traffic}") from None
    v = daemon.get_release(new.deployment_id).json()
    print(f"{new.deployment_id} red {time.monotonic() - since:.1f}s in: {v['reason']}; traffic {traffic}")
    # The regression is in the errors, and the error check shows it within
    # the minute too.
    v = poll(
        lambda: daemon.get_release(new.deployment_id).json(),
        lambda v: any(c["name"] == "error_ratio" and c["result"] == "fail" for c in v["checks"]),
        timeout=max(since + RED_WITHIN - time.monotonic(), 1.0),
        interval=0.25,
        what=f"{new.deployment_id}'s error_ratio check failing",
    )
    return v


def assert_is_baseline_of(daemon: Daemon, old: Service, new: Service) -> None:
    """The old version's verdict says it is the new one's baseline and asks
    for nothing: it is not a canary to promote or roll back."""
    v = poll(
        lambda: brief(daemon, old.deployment_id),
        lambda v: "baseline" in v.get("reason", "") and new.deployment_id in v.get("reason", ""),
        timeout=5,
        interval=0.25,
        what=f"{old.deployment_id}'s reason naming it the baseline of {new.deployment_id}",
    )
    assert v["baseline"] is None, v
    assert v["verdict"] not in ("green", "red"), v
    assert "promote" not in v["reason"] and "roll back" not in v["reason"], v


# --- the tests ----------------------------------------------------------------------


def test_traces_new_version_flushing_first_is_still_the_canary(daemon_factory, shop):
    daemon = daemon_factory()
    old, new = shop(daemon.grpc_addr, signals="traces")
    with Traffic(old, new, flush_order=(new, old)) as traffic:
        await_judged_red(daemon, old, new, traffic)
        assert_is_baseline_of(daemon, old, new)


@pytest.mark.parametrize(
    "semconv",
    [
        # The instrumentation's default: http.server.duration (ms), http.status_code.
        None,
        # The stable conventions: http.server.request.duration (s), http.response.status_code.
        "http",
    ],
    ids=["default-semconv", "stable-semconv"],
)
def test_metrics_only_new_version_is_judged_against_the_old(daemon_factory, shop, semconv):
    daemon = daemon_factory()
    old, new = shop(daemon.grpc_addr, signals="metrics", semconv=semconv)
    with Traffic(old, new, flush_order=(new, old)) as traffic:
        v = await_judged_red(daemon, old, new, traffic)
    # Its latencies are buckets, and the quantiles shown say they are
    # interpolated within them, not measured.
    assert v["requests_from"] == "metrics", v
    latency = next(c for c in v["checks"] if c["name"] == "latency")
    assert "interpolated within histogram buckets" in latency["detail"], latency
    # The instrumentation's other metric is read by nothing, and /metrics says so.
    ignored = daemon.metrics().get(
        "release_verdict_metric_points_ignored_total", metric="http.server.active_requests"
    )
    assert ignored > 0, ignored


# --- a daemon restarted while both versions serve ------------------------------------


@pytest.fixture
def fixed_port_daemons(daemon_factory) -> Callable[[], Daemon]:
    """start() -> a daemon on this test's two ports, the same every call, so
    that a second daemon can take the first one's place. The ports are set
    in its config.toml and no addresses on the command line (which would
    take precedence). Each must exit 0 on SIGTERM without a panic
    (daemon_factory checks)."""
    grpc_port, http_port = free_port(), free_port()
    config = f'[server]\ngrpc_listen = "127.0.0.1:{grpc_port}"\nhttp_listen = "127.0.0.1:{http_port}"\n'
    return lambda: daemon_factory(config, grpc_listen=None, http_listen=None)


def test_daemon_restarted_while_both_serve_finds_the_same_baseline(fixed_port_daemons, shop):
    first = fixed_port_daemons()
    old, new = shop(first.grpc_addr, signals="traces")
    with Traffic(old, new, flush_order=(new, old)) as traffic:
        poll(
            lambda: {s.deployment_id: first.get_release(s.deployment_id).status_code for s in (new, old)},
            lambda codes: set(codes.values()) == {200},
            timeout=15,
            interval=0.25,
            what="both versions seen by the first daemon",
        )
        # No flush round straddles the restart: the next one, new version
        # first, is the first telemetry the second daemon hears. (A round cut
        # in two would have the old version's exporter retry into the new
        # daemon before the new version's next flush.)
        with traffic.flushes_held:
            assert first.stop() == 0, first.log()
            second = fixed_port_daemons()
        await_judged_red(second, old, new, traffic, since=time.monotonic())


# --- one request, one observation (issue 26) ----------------------------------------

# Exports as the SDK makes them by default, only sooner.
PERIODIC = {"OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_BSP_SCHEDULE_DELAY": "300"}
ROUNDS, BURST = 4, 40  # bursts of requests, each followed by exports
COUNT_ERRORS = 0.1  # of the service's requests answer 500


def accepted(daemon: Daemon, signal: str) -> float:
    """Spans or metric data points the daemon accepted over OTLP/gRPC."""
    return daemon.metrics().get("release_verdict_items_accepted_total", signal=signal, transport="grpc")


def within(counted: int, sent: int) -> bool:
    """Equal, to 1% of what was sent."""
    return abs(counted - sent) <= 0.01 * sent


@pytest.mark.parametrize(
    "signals, requests_from",
    [("both", "spans"), ("metrics", "metrics")],
    ids=["traces-and-metrics", "metrics-only"],
)
def test_every_request_is_counted_once_at_every_export(daemon_factory, tmp_path, signals, requests_from):
    daemon = daemon_factory()
    p = launch_service(tmp_path, "v2", COUNT_ERRORS, daemon.grpc_addr, signals, None, periodic=PERIODIC)
    try:
        url = p.await_log(SERVICE_LISTENING, timeout=30, interval=0.05).group(1)
        deployment = "shop-v2"
        sent = failed = 0
        seen: list[tuple] = []  # (sent, failed, counted, errors) at each read, for the failure message

        def read() -> tuple[int, int]:
            r = daemon.get_release(deployment)
            if r.status_code == 404:
                return 0, 0
            r.raise_for_status()
            c = r.json()["canary"]
            seen.append((sent, failed, c["requests"], c["errors"]))
            # Never more than was sent, whichever exports came.
            assert c["requests"] <= sent * 1.01 and c["errors"] <= failed * 1.01, seen[-8:]
            return c["requests"], c["errors"]

        with requests.Session() as session:
            for n in range(1, ROUNDS + 1):
                for _ in range(BURST):
                    status = session.get(f"{url}/checkout", timeout=5).status_code
                    assert status in (200, 500), status
                    sent += 1
                    failed += status == 500
                # Two metric exports after the burst: one whole collection
                # after its last request, at least; with traces, every span.
                points = accepted(daemon, "points")
                poll(
                    lambda: (accepted(daemon, "points"), read()),
                    lambda got: got[0] >= points + 2 * 3,  # a duration stream per status code and active_requests
                    timeout=30,
                    interval=0.1,
                    what=f"round {n}: two metric exports after the burst",
                )
                if signals == "both":
                    poll(
                        lambda: (accepted(daemon, "spans"), read()),
                        lambda got: got[0] >= sent,
                        timeout=30,
                        interval=0.1,
                        what=f"round {n}: the spans of {sent} requests",
                    )
                counted = poll(
                    read,
                    lambda c: within(c[0], sent) and within(c[1], failed),
                    timeout=5,
                    interval=0.1,
                    what=f"round {n}: {sent} requests ({failed} answered 500) counted; reads {seen[-8:]}",
                )
                print(f"round {n}: sent {sent} ({failed} failed), counted {counted}")
        v = daemon.get_release(deployment).json()
        assert v["requests_from"] == requests_from, v
    finally:
        p.stop()
