"""The verdict outputs, each checked by the real consumer or its reference
parser: promtool and a real Prometheus scraping the daemon (every PromQL
expression in examples/ returns data), Argo Rollouts' web-provider logic on
the real JSON, Python gRPC stubs generated from proto/ against the HTTP JSON,
health and reflection, and the `gate` command's exit codes.

One daemon (judging every 100 ms) carries three releases, each in its own
service with a stable deployment as baseline: a green canary, a red one,
and a yellow one with too little traffic. Every wait polls with a deadline.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import subprocess
import threading
import time
import urllib.parse
import uuid
from typing import Iterator

import grpc
import pytest
import requests
import yaml

from harness import Daemon, Daemons, daemon_binary, free_port, poll, poll_release
from outputs_support import (
    EXAMPLES,
    FAST_CONFIG,
    SHA_STABLE,
    Prometheus,
    argo_phase,
    argo_prometheus_template,
    dashboard_exprs,
    dashboard_variable_queries,
    differences,
    flagger_template,
    generate_stubs,
    invalid_span_request,
    json_path,
    post_spans,
    proto_json,
    rule_exprs,
    spans_request,
    start_prometheus,
    substitute,
    without,
)

ENV = "test"
SERVICE_NAME = "release_verdict.v1.VerdictService"


@dataclasses.dataclass
class Release:
    service: str
    stable: str
    canary: str


@dataclasses.dataclass
class World:
    daemon: Daemon
    green: Release
    yellow: Release
    red: Release
    # ids are user input: one with every character the exposition escapes
    odd: Release


def _drive(daemon: Daemon, session: requests.Session, releases: dict[str, Release], error_every: dict[str, int]) -> None:
    """Sends stable and canary traffic to each release until its canary's
    verdict is the key's color (for "green", "red"), 30 s at most."""
    pending = set(error_every)
    deadline = time.monotonic() + 30
    seq = 1
    last = {}
    while pending:
        for color in sorted(pending):
            r = releases[color]
            post_spans(session, daemon, spans_request(r.service, ENV, r.stable, 180, sha=SHA_STABLE, seq=seq))
            post_spans(session, daemon, spans_request(r.service, ENV, r.canary, 60, error_every[color], seq=seq))
            resp = daemon.get_release(r.canary)
            last[color] = resp.json()
            if resp.status_code == 200 and last[color]["verdict"] == color:
                pending.discard(color)
        seq += 1
        assert time.monotonic() < deadline, f"never {pending}; last: {last}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with Daemons(tmp_path_factory.mktemp("outputs")) as daemons:
        d = daemons.start(FAST_CONFIG)
        tag = uuid.uuid4().hex[:8]
        rel = {
            c: Release(service=f"shop-{c}-{tag}", stable=f"shop-{c}-stable-{tag}", canary=f"shop-{c}-canary-{tag}")
            for c in ("green", "yellow", "red")
        }
        with requests.Session() as s:
            # The stable deployments serve first, so each canary gets one as baseline.
            for r in rel.values():
                post_spans(s, d, spans_request(r.service, ENV, r.stable, 200, sha=SHA_STABLE))
            for r in rel.values():
                poll_release(d, r.stable, lambda v: v["canary"]["requests"] >= 200)
            # Yellow: a canary with far fewer requests than min_requests.
            post_spans(s, d, spans_request(rel["yellow"].service, ENV, rel["yellow"].canary, 20))
            odd = Release(service=f'odd "svc" \\{tag}', stable="", canary=f'odd"id\\{tag}\nü{{}}=,')
            post_spans(s, d, spans_request(odd.service, ENV, odd.canary, 5))
            poll_release(d, odd.canary, lambda v: v["service"] == odd.service)
            _drive(d, s, rel, {"green": 0, "red": 3})
        y = poll_release(d, rel["yellow"].canary, lambda v: v["baseline"] is not None)
        assert y["verdict"] == "yellow", y
        yield World(daemon=d, odd=odd, **rel)


# --- Prometheus -------------------------------------------------------------------


def _promtool_check_metrics(world: World) -> subprocess.CompletedProcess:
    text = requests.get(f"{world.daemon.http_url}/metrics", timeout=5).text
    for r in (world.green, world.yellow, world.red):
        assert f'deployment_id="{r.canary}"' in text
    assert 'cohort="baseline"' in text
    escaped = world.odd.canary.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    assert f'deployment_id="{escaped}"' in text
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)


def test_promtool_parses_the_exposition(world):
    # promtool exits 1 when the text does not parse, 3 for lint problems only.
    p = _promtool_check_metrics(world)
    assert p.returncode in (0, 3), f"promtool check metrics: {p.stdout}{p.stderr}"


def test_promtool_lint_is_clean(world):
    p = _promtool_check_metrics(world)
    assert p.returncode == 0, f"promtool check metrics: {p.stdout}{p.stderr}"


def test_promtool_accepts_the_rules():
    p = subprocess.run(
        ["promtool", "check", "rules", str(EXAMPLES / "prometheus-rules.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0, f"promtool check rules: {p.stdout}{p.stderr}"


@pytest.fixture(scope="module")
def prometheus(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = start_prometheus(
        tmp_path_factory.mktemp("prometheus"),
        target=world.daemon.http_addr,
        rule_files=[EXAMPLES / "prometheus-rules.yaml"],
    )
    try:
        red = f'release_verdict{{deployment_id="{world.red.canary}"}}'
        try:
            poll(lambda: prom.query(red), lambda s: len(s) == 1, timeout=15, interval=0.2, what="first scrape")
        except AssertionError:
            raise AssertionError(f"targets: {prom.api('targets')}\nlog:\n{prom.log()}")
        yield prom
    finally:
        prom.stop()


def _values(world: World) -> dict[str, str]:
    """Template variables of the examples, set to the red release."""
    return {
        "args.deployment-id": world.red.canary,  # Argo
        "target": world.red.service,  # Flagger
        "namespace": ENV,
        "service": world.red.service,  # Grafana
        "environment": ENV,
        "deployment_id": world.red.canary,
        "__rate_interval": "30s",
    }


def _returns_data(prom: Prometheus, where: str, expr: str, timeout: float = 10) -> list[dict]:
    return poll(lambda: prom.query(expr), lambda s: len(s) > 0, timeout=timeout, interval=0.25, what=f"{where}: {expr}")


def test_prometheus_scrapes_the_daemon(world, prometheus):
    up = prometheus.query('up{job="release-verdict"}')
    assert [s["value"][1] for s in up] == ["1"], prometheus.api("targets")
    got = {
        s["metric"]["deployment_id"]: s["value"][1]
        for s in prometheus.query(f'release_verdict{{service=~"shop-.*",environment="{ENV}"}}')
    }
    # green and yellow may still be on their way in the first scrape or two
    want = {world.green.canary: "0", world.yellow.canary: "1", world.red.canary: "2"}
    poll(
        lambda: {
            s["metric"]["deployment_id"]: s["value"][1]
            for s in prometheus.query(f'release_verdict{{environment="{ENV}"}}')
        },
        lambda g: all(g.get(k) == v for k, v in want.items()),
        timeout=10,
        what=f"verdicts in Prometheus (first: {got})",
    )
    # the escaped label values arrive intact
    odd = [x["metric"] for x in prometheus.query("release_verdict") if x["metric"]["deployment_id"] == world.odd.canary]
    assert [m["service"] for m in odd] == [world.odd.service], prometheus.query("release_verdict")


def test_argo_prometheus_template_green_yellow_red(world, prometheus):
    metric = argo_prometheus_template()["spec"]["metrics"][0]
    query = metric["provider"]["prometheus"]["query"]
    want = {world.green.canary: "Successful", world.yellow.canary: "Inconclusive", world.red.canary: "Failed"}
    for deployment_id, phase in want.items():
        expr = substitute(query, {"args.deployment-id": deployment_id})
        samples = _returns_data(prometheus, "argo prometheus template", expr)
        result = [float(s["value"][1]) for s in samples]
        assert argo_phase(metric, result) == phase, (deployment_id, result)
    # not scraped (yet): neither condition holds
    assert argo_phase(metric, []) == "Inconclusive"


def test_flagger_template_reads_the_newest_release(world, prometheus):
    expr = substitute(flagger_template()["spec"]["query"], _values(world))
    samples = _returns_data(prometheus, "flagger template", expr)
    assert [float(s["value"][1]) for s in samples] == [2.0], samples


def test_prometheus_rules_fire(world, prometheus):
    # Refused items: one before and one after a scrape, so the rate is positive.
    refused = f"refused-{uuid.uuid4().hex[:8]}"
    with requests.Session() as s:
        first = post_spans(s, world.daemon, invalid_span_request(refused))
        assert first.partial_success.rejected_spans == 1, first
        poll(
            lambda: prometheus.query("release_verdict_items_refused_total"),
            lambda r: len(r) > 0,
            timeout=10,
            what="refused items scraped",
        )
        post_spans(s, world.daemon, invalid_span_request(refused))
    for e in rule_exprs():
        _returns_data(prometheus, e.where, e.expr, timeout=15)
    red = _returns_data(prometheus, "red rule", rule_exprs()[0].expr)
    assert world.red.canary in {s["metric"]["deployment_id"] for s in red}
    assert not {world.green.canary, world.yellow.canary} & {s["metric"]["deployment_id"] for s in red}
    # and Prometheus itself, evaluating the file every second, raises the alert
    alerts = poll(
        lambda: prometheus.api("alerts")["alerts"],
        lambda a: any(
            x["labels"].get("alertname") == "ReleaseVerdictRed"
            and x["labels"].get("deployment_id") == world.red.canary
            and x["state"] == "firing"
            for x in a
        ),
        timeout=10,
        what="ReleaseVerdictRed firing",
    )
    assert alerts


def test_dashboard_queries_return_data(world, prometheus):
    values = _values(world)
    exprs = dashboard_exprs()
    assert len(exprs) >= 6
    for e in exprs:
        _returns_data(prometheus, e.where, substitute(e.expr, values))
    # the cohort panels show both cohorts of the red canary
    for e in exprs:
        if "cohort" in e.expr and "release_verdict_" in e.expr and "items_" not in e.expr:
            samples = _returns_data(prometheus, e.where, substitute(e.expr, values))
            cohorts = {s["metric"].get("cohort") for s in samples}
            poll(
                lambda: {s["metric"].get("cohort") for s in prometheus.query(substitute(e.expr, values))},
                lambda c: c == {"canary", "baseline"},
                timeout=10,
                what=f"{e.where}: both cohorts (first: {cohorts})",
            )
    # template variables: Grafana's label_values(selector, label)
    for name, selector, label in dashboard_variable_queries():
        sel = substitute(selector, values)
        got = poll(
            lambda: prometheus.api(f"label/{label}/values", **{"match[]": sel}),
            lambda v: values[name] in v,
            timeout=10,
            what=f"dashboard variable {name}",
        )
        assert values[name] in got


def test_dashboard_shape():
    dash = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    (stat,) = [p for p in dash["panels"] if p["title"] == "Release verdict"]
    assert stat["type"] == "stat"
    mapping = stat["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {k: (v["text"], v["color"]) for k, v in mapping.items()} == {
        "0": ("GREEN", "green"),
        "1": ("YELLOW", "yellow"),
        "2": ("RED", "red"),
    }
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"service", "environment", "deployment_id"} <= names
    (deploys,) = [a for a in dash["annotations"]["list"] if a.get("expr")]
    assert "release_verdict_first_seen_timestamp_seconds" in deploys["expr"]
    assert deploys["useValueForTime"] is True


def test_collector_config_exports_traces_and_metrics():
    text = (EXAMPLES / "otel-collector.yaml").read_text()
    config = yaml.safe_load(text)
    exporter = config["exporters"]["otlp/release-verdict"]
    assert exporter["endpoint"].endswith(":4317")
    for signal in ("traces", "metrics"):
        assert config["service"]["pipelines"][signal]["exporters"] == ["otlp/release-verdict"]
    # the scale-out path, commented out: uncommented, it is a loadbalancing
    # exporter routing by service
    lines = text.splitlines()
    first = lines.index("  # loadbalancing/release-verdict:")
    block = []
    for line in lines[first:]:
        if not line.startswith("  # "):
            break
        block.append("  " + line[4:])
    lb = yaml.safe_load("\n".join(block))["loadbalancing/release-verdict"]
    assert lb["routing_key"] == "service"
    assert "otlp" in lb["protocol"] and lb["resolver"]["dns"]["port"] == 4317


# --- Argo Rollouts web provider ------------------------------------------------------


def test_argo_web_template_green_yellow_red(world):
    template = yaml.safe_load((EXAMPLES / "argo-analysistemplate-web.yaml").read_text())
    metric = template["spec"]["metrics"][0]
    web = metric["provider"]["web"]
    assert metric["successCondition"] == 'result == "green"'
    assert metric["failureCondition"] == 'result == "red"'
    want = {world.green.canary: "Successful", world.yellow.canary: "Inconclusive", world.red.canary: "Failed"}
    for deployment_id, phase in want.items():
        url = urllib.parse.urlsplit(substitute(web["url"], {"args.deployment-id": deployment_id}))
        assert url.path == f"/api/v1/releases/{deployment_id}"
        r = requests.get(f"{world.daemon.http_url}{url.path}", timeout=5)
        assert r.status_code == 200, r.text
        assert r.headers["Cache-Control"] == "no-store"
        result = json_path(web["jsonPath"], r.json())
        assert argo_phase(metric, result) == phase, (deployment_id, result)


# --- gRPC ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory):
    return generate_stubs(tmp_path_factory.mktemp("stubs"))


@pytest.fixture(scope="module")
def channel(world: World) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(world.daemon.grpc_addr) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


def _stable_pair(fetch_http, fetch_grpc, what: str):
    """(HTTP JSON, gRPC JSON) fetched while the HTTP answer did not change
    around the gRPC call (evaluated_at aside), so both saw one state."""

    def attempt():
        before = fetch_http()
        g = fetch_grpc()
        after = fetch_http()
        return before, g, after

    before, g, _ = poll(
        attempt,
        lambda t: without(t[0], "evaluated_at") == without(t[2], "evaluated_at"),
        timeout=10,
        interval=0.05,
        what=f"{what}: a steady state",
    )
    return before, g


def test_grpc_get_verdict_equals_http(world, stubs, channel):
    pb2, pb2_grpc = stubs
    stub = pb2_grpc.VerdictServiceStub(channel)
    for r in (world.green, world.yellow, world.red):
        http, g = _stable_pair(
            lambda: world.daemon.get_release(r.canary).json(),
            lambda: proto_json(stub.GetVerdict(pb2.GetVerdictRequest(deployment_id=r.canary), timeout=5)),
            r.canary,
        )
        diff = differences(without(http, "evaluated_at"), without(g, "evaluated_at"))
        assert not diff, "\n".join(diff)
        assert g["verdict"] == http["verdict"] and g["evaluated_at"]
    with pytest.raises(grpc.RpcError) as e:
        stub.GetVerdict(pb2.GetVerdictRequest(deployment_id=f"nope-{uuid.uuid4().hex}"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # A 100 KB id: the answer quotes its start, so it stays within the
    # client's 8 KB metadata limit (it used to fail RESOURCE_EXHAUSTED).
    with pytest.raises(grpc.RpcError) as e:
        stub.GetVerdict(pb2.GetVerdictRequest(deployment_id="x" * 100_000), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value
    assert "(100000 bytes)" in e.value.details() and len(e.value.details()) < 400


def test_grpc_list_verdicts_equals_http(world, stubs, channel):
    pb2, pb2_grpc = stubs
    stub = pb2_grpc.VerdictServiceStub(channel)
    service = world.red.service

    http, g = _stable_pair(
        lambda: {"releases": world.daemon.releases(service=service)},
        lambda: proto_json(stub.ListVerdicts(pb2.ListVerdictsRequest(service=service), timeout=5)),
        "list",
    )
    assert [v["deployment_id"] for v in http["releases"]] == [world.red.stable, world.red.canary]
    strip = lambda body: [without(v, "evaluated_at") for v in body["releases"]]  # noqa: E731
    diff = differences(strip(http), strip(g))
    assert not diff, "\n".join(diff)
    red_only = stub.ListVerdicts(pb2.ListVerdictsRequest(environment=ENV, verdict="red"), timeout=5)
    assert world.red.canary in {v.deployment_id for v in red_only.releases}
    assert {v.verdict for v in red_only.releases} == {"red"}


def test_grpc_watch_delivers_a_change_within_a_second(world, stubs, channel):
    pb2, pb2_grpc = stubs
    stub = pb2_grpc.VerdictServiceStub(channel)
    d = world.daemon
    tag = uuid.uuid4().hex[:8]
    r = Release(service=f"watch-{tag}", stable=f"watch-stable-{tag}", canary=f"watch-canary-{tag}")
    seen: "queue.Queue[tuple[float, object]]" = queue.Queue()
    call = stub.WatchVerdicts(pb2.WatchVerdictsRequest(service=r.service, deployment_id=r.canary), timeout=60)

    def read() -> None:
        try:
            for msg in call:
                seen.put((time.monotonic(), msg))
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with requests.Session() as s:
            post_spans(s, d, spans_request(r.service, ENV, r.stable, 200, sha=SHA_STABLE))
            poll_release(d, r.stable, lambda v: v["canary"]["requests"] >= 200)
            http_red_at = None
            deadline = time.monotonic() + 30
            seq = 1
            while http_red_at is None:
                post_spans(s, d, spans_request(r.service, ENV, r.stable, 180, sha=SHA_STABLE, seq=seq))
                post_spans(s, d, spans_request(r.service, ENV, r.canary, 60, error_every=3, seq=seq))
                seq += 1
                # poll the HTTP API closely between sends
                for _ in range(5):
                    v = d.get_release(r.canary)
                    if v.status_code == 200 and v.json()["verdict"] == "red":
                        http_red_at = time.monotonic()
                        break
                    time.sleep(0.02)
                assert time.monotonic() < deadline, f"never red: {v.text}"
        verdicts = []
        while True:
            at, msg = seen.get(timeout=max(0.01, http_red_at + 1.0 - time.monotonic()))
            verdicts.append(msg.verdict)
            assert msg.deployment_id == r.canary and msg.service == r.service
            if msg.verdict == "red":
                break
        assert at <= http_red_at + 1.0, f"watch delivered red {at - http_red_at:.3f}s after the HTTP API showed it"
        assert msg.reason and msg.red_since, msg
    except queue.Empty:
        raise AssertionError(f"no red from WatchVerdicts within 1 s of the HTTP API; got {verdicts}")
    finally:
        call.cancel()
        reader.join(timeout=5)


def test_grpc_health_reports_serving(world, channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service


def test_grpc_reflection_lists_the_service(world, channel):
    # grpcio-reflection ships the v1alpha messages; v1's are the same on the
    # wire, so they serve for a raw call to the v1 service.
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests_ = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
    ]
    listed, files = list(info(iter(requests_), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert SERVICE_NAME in names, names
    protos = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in files.file_descriptor_response.file_descriptor_proto]
    methods = {
        m.name for f in protos if f.package == "release_verdict.v1" for s in f.service for m in s.method
    }
    assert methods == {"GetVerdict", "ListVerdicts", "WatchVerdicts"}, methods


# --- gate -----------------------------------------------------------------------------


def _gate(server: str, deployment_id: str, timeout: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(daemon_binary()),
            "gate",
            "--server",
            server,
            "--deployment-id",
            deployment_id,
            "--timeout",
            timeout,
            "--interval",
            "100ms",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_gate_exit_codes(world):
    d = world.daemon
    ambiguous = f"shared-{uuid.uuid4().hex[:8]}"
    with requests.Session() as s:
        for service in (f"{ambiguous}-a", f"{ambiguous}-b"):
            post_spans(s, d, spans_request(service, ENV, ambiguous, 5))
    poll(lambda: d.get_release(ambiguous).status_code, lambda c: c == 409, what="ambiguous id")

    closed = f"http://127.0.0.1:{free_port()}"
    cases = {
        "green": (0, _gate(d.http_url, world.green.canary, "20s"), "promote"),
        "red": (1, _gate(d.http_url, world.red.canary, "20s"), "error ratio"),
        "yellow": (2, _gate(d.http_url, world.yellow.canary, "1s"), "insufficient data"),
        "unknown": (3, _gate(d.http_url, f"nope-{uuid.uuid4().hex}", "1s"), "no release with deployment id"),
        "closed port": (3, _gate(closed, world.green.canary, "1s"), "cannot connect"),
        "ambiguous": (4, _gate(d.http_url, ambiguous, "20s"), f'--service "{ambiguous}-b"'),
        "narrowed": (1, _gate(d.http_url, world.red.canary, "20s", "--service", world.red.service), "red:"),
    }
    for name, (code, proc, text) in cases.items():
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == code, f"{name}: exit {proc.returncode}, want {code}\n{out}{err}"
        assert text in out + err, f"{name}: {text!r} not in\n{out}{err}"
    # the verdict's own reason is printed
    out, _ = _gate(d.http_url, world.red.canary, "5s").communicate(timeout=30)
    assert world.daemon.get_release(world.red.canary).json()["reason"] in out
