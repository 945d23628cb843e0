"""Several daemons sharing one PostgreSQL ledger (a real server, started
for the session; see postgres_server.py), each judging its own services as
the Collector's loadbalancing exporter would route them.

Asserted: every notification of the fleet reaches the local webhook
receiver exactly once although both replicas' notifiers work the one
outbox, and both take part; each replica answers for the whole fleet's
events and DORA; a release judged by one replica is answered by the other
(forwarded live, then from the ledger once its judge is dead); three
replicas behind a consistent-hash ring keep a red across a move and a kill.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import time
import zlib
from collections import Counter

import grpc
import pytest
import requests
from opentelemetry.trace import SpanKind

from harness import Daemon, counts, poll, poll_release
from otel import release_resource, send_spans
from outputs_support import generate_stubs
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
    """Each release's deploy_started and promoted, posted to `d`, stamped
    a second ago: stamped a few milliseconds ahead, a DORA read right
    after could come before the last of them and leave it out of its
    window."""
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
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


def test_a_release_judged_by_one_replica_is_answered_by_the_other(daemon_factory, postgres, receivers, unique, tmp_path):
    """Replica b forwards reads of a's releases to a (live): the JSON API,
    the chart's series, and the gRPC service's get and list. Once a is
    killed, b answers from the ledger (`"live": false`), the same verdict
    and red_since, having waited for the dead peer at most once."""
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
    # b learns who judges the service at a's next checkpoint.
    forwarded = poll(lambda: b.get_release(canary), lambda r: r.headers.get(REPLICA) == "replica-a",
                     timeout=15, what="b forwarding to a")
    other = forwarded.json()
    assert "live" not in other, other
    assert (other["verdict"], other["red_since"]) == ("red", red["red_since"]), (other, red)
    assert counts(other)[0] >= counts(red)[0] and counts(other)[1] >= counts(red)[1], (other, red)
    listed = {v["deployment_id"]: v for v in b.releases(service=service)}
    assert set(listed) == {stable, canary}, listed
    assert listed[canary]["red_since"] == red["red_since"]
    # The chart's points are taken every 5 s by the replica judging it.
    series = poll(lambda: requests.get(f"{b.http_url}/api/v1/releases/{canary}/series", timeout=5),
                  lambda r: r.status_code == 200, timeout=15, what="the canary's chart through b")
    assert series.headers.get(REPLICA) == "replica-a", series.headers
    assert series.json()["points"], series.json()
    # The gRPC verdict service of b answers for a's releases too.
    pb2, pb2_grpc = generate_stubs(tmp_path / "stubs")
    with grpc.insecure_channel(b.grpc_addr) as channel:
        stub = pb2_grpc.VerdictServiceStub(channel)
        got = stub.GetVerdict(pb2.GetVerdictRequest(deployment_id=canary), timeout=5)
        assert (got.verdict, got.red_since, got.HasField("live")) == ("red", red["red_since"], False), got
        listing = stub.ListVerdicts(pb2.ListVerdictsRequest(service=service), timeout=5)
        assert {v.deployment_id for v in listing.releases} == {stable, canary}, listing

    # b's event stream and gRPC watch carry a's releases: its snapshot,
    # then a's changes as a judges them.
    events = sse_events(b)
    snapshot = next_event(events, lambda kind, body: kind == "snapshot"
                          and canary in {v["deployment_id"] for v in body["releases"]})
    assert {v["deployment_id"] for v in snapshot["releases"]} >= {stable, canary}
    newcomer = unique("newcomer")
    send_spans(a, "grpc", release_resource(service, newcomer), [ok] * 10)
    change = next_event(events, lambda kind, body: kind == "verdict" and body["deployment_id"] == newcomer)
    assert change["service"] == service, change
    with grpc.insecure_channel(b.grpc_addr) as channel:
        watch = pb2_grpc.VerdictServiceStub(channel).WatchVerdicts(pb2.WatchVerdictsRequest(service=service), timeout=10)
        seen = set()
        for v in watch:
            seen.add(v.deployment_id)
            if {stable, canary, newcomer} <= seen:
                break
        watch.cancel()

    a.kill()
    # The first read after the death waits for the peer's timeout; the
    # next ones are answered by the ledger without asking it.
    answers = [b.get_release(canary) for _ in range(3)]
    for r in answers:
        assert r.status_code == 200, r.text
        v = r.json()
        assert v["live"] is False, v
        assert (v["verdict"], v["red_since"]) == ("red", red["red_since"]), v
        assert v["baseline"]["deployment_id"] == stable, v
    # The dead peer was asked once; the reads after it did not ask again.
    asked = [line for line in b.log().splitlines()
             if "did not answer a forwarded read" in line and "peer=replica-a" in line]
    assert len(asked) == 1, asked
    with grpc.insecure_channel(b.grpc_addr) as channel:
        got = pb2_grpc.VerdictServiceStub(channel).GetVerdict(pb2.GetVerdictRequest(deployment_id=canary), timeout=5)
        assert (got.verdict, got.red_since, got.live) == ("red", red["red_since"], False), got


def sse_events(d: Daemon):
    """(event, data) pairs of d's event stream, reconnecting when it ends
    (its snapshot comes again then)."""
    while True:
        with requests.get(f"{d.http_url}/api/v1/releases/stream", headers={"Accept": "text/event-stream"},
                          stream=True, timeout=(5, 30)) as r:
            kind, data = "message", []
            for line in r.iter_lines(decode_unicode=True):
                if line == "":
                    if data:
                        yield kind, json.loads("\n".join(data))
                    kind, data = "message", []
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())


def next_event(events, wanted, timeout: float = 20.0) -> dict:
    """The first event's data for which wanted(kind, data) holds; each new
    snapshot (a reconnection) is looked at too."""
    deadline = time.monotonic() + timeout
    for kind, body in events:
        if wanted(kind, body):
            return body
        assert time.monotonic() < deadline, f"no such event in {timeout}s"
    raise AssertionError("the stream ended")


# --- three daemons behind a Collector's consistent-hash ring ---------------

REPLICA = "x-release-verdict-replica"
MAX_POSITIONS = 36_000
POINTS = 100


class Ring:
    """The Collector's loadbalancing exporter's ring: each endpoint at 100
    positions (CRC32 of the endpoint and the point's number, modulo
    36,000); a routing key goes to the first position at or after its own
    CRC32 modulo 36,000, wrapping round."""

    def __init__(self, endpoints: list[str]):
        self.items = sorted(
            (zlib.crc32(e.encode() + bytes([i])) % MAX_POSITIONS, e)
            for e in endpoints for i in range(POINTS)
        )

    def owner(self, key: str) -> str:
        pos = zlib.crc32(key.encode()) % MAX_POSITIONS
        i = bisect.bisect_left(self.items, (pos, ""))
        return self.items[i % len(self.items)][1]


def ring_config(url: str, replica: str, receivers: Receivers) -> str:
    return config(url, replica, receivers).replace('settle = "1s"', 'settle = "1s"\n[judge]\ntick = "250ms"')


def test_three_replicas_keep_a_red_across_a_move_and_a_kill(daemon_factory, postgres, receivers, unique):
    """Three daemons on one PostgreSQL ledger, fed by a consistent-hash
    ring routing by service. A canary turns red on its owner; the ring
    drops that owner and the service moves; then its new owner is killed
    and it moves again. The red stays red with the same red_since at each
    owner, counted from where the last one stopped; every replica alive
    answers for every release; each notification arrives once; DORA is
    the fleet's from any replica."""
    receivers.accepting = True
    url = postgres.database("ring")
    env = {"RV_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    daemons = {name: daemon_factory(ring_config(url, name, receivers), env=env) for name in ("rv-a", "rv-b", "rv-c")}
    by_endpoint = {d.grpc_addr: name for name, d in daemons.items()}
    ok, failed = (SpanKind.SERVER, "ok"), (SpanKind.SERVER, "http_500")

    ring = Ring(list(by_endpoint))
    # Four services for each replica. The ports, and so the ring's
    # positions, differ from run to run: a dozen names drawn blindly can
    # leave one replica owning none.
    owned = {name: [] for name in daemons}
    for i in range(1000):
        s = unique(f"svc{i}")
        mine = owned[by_endpoint[ring.owner(s)]]
        if len(mine) < 4:
            mine.append(s)
        if all(len(v) == 4 for v in owned.values()):
            break
    assert all(len(v) == 4 for v in owned.values()), owned
    services = [s for v in owned.values() for s in v]
    owner = {s: by_endpoint[ring.owner(s)] for s in services}
    moved = services[0]
    first = owner[moved]
    rollouts = {s: (f"{s}-stable", f"{s}-canary") for s in services}
    sent = Counter()

    def send(service: str, to: str, bad: bool) -> None:
        stable, canary = rollouts[service]
        d = daemons[to]
        send_spans(d, "grpc", release_resource(service, stable), [ok] * 100)
        canary_spans = [ok] * 10 + ([failed] * 10 if bad else [ok] * 10)
        send_spans(d, "grpc", release_resource(service, canary), canary_spans)
        sent[service, "canary"] += len(canary_spans)
        sent[service, "errors"] += 10 if bad else 0

    def route(service: str, ring: Ring) -> str:
        return by_endpoint[ring.owner(service)]

    # 1. Every service's rollout on its owner; `moved`'s canary is bad.
    def everyone(ring: Ring):
        for s in services:
            send(s, route(s, ring), bad=(s == moved))
        return daemons[route(moved, ring)].get_release(rollouts[moved][1]).json()

    red = poll(lambda: everyone(ring), lambda v: v.get("verdict") == "red", timeout=40, interval=0.25,
               what=f"{moved}'s canary red on {first}")
    sent_to_first = sent[moved, "canary"]

    # 2. The ring drops the first owner: the service moves. Its new owner
    # answers red, same red_since, from its first answer on.
    after_move = Ring([e for e, n in by_endpoint.items() if n != first])
    second = route(moved, after_move)
    assert second != first
    # The first owner's checkpoint after its last telemetry (every 500ms).
    sent_at = time.time()
    poll(lambda: daemons[first].metrics().get("release_verdict_checkpoint_timestamp_seconds"),
         lambda t: t and t > sent_at, timeout=10, what=f"{first}'s checkpoint")
    send(moved, second, bad=True)
    mine = poll(lambda: daemons[second].get_release(rollouts[moved][1]),
                lambda r: r.status_code == 200 and REPLICA not in r.headers and "live" not in r.json(),
                timeout=10, what=f"{second} judging {moved}").json()
    assert (mine["verdict"], mine["red_since"]) == ("red", red["red_since"]), mine
    requests_, errors = counts(mine)
    assert requests_ > sent_to_first, ("carried on from the first owner's count", mine, sent_to_first)
    # The first owner, which no longer receives it, lets its stale copy go
    # and forwards reads of it to the second.
    def first_answers():
        send(moved, second, bad=True)
        return daemons[first].get_release(rollouts[moved][1])
    answer = poll(first_answers, lambda r: r.headers.get(REPLICA) == second, timeout=40, interval=0.5,
                  what=f"{first} letting go of {moved}")
    assert answer.json()["red_since"] == red["red_since"], answer.json()
    assert daemons[second].get_release(rollouts[moved][1]).json()["red_since"] == red["red_since"]

    # 3. The new owner dies (SIGKILL): the ring routes round it.
    daemons[second].kill()
    after_kill = Ring([e for e, n in by_endpoint.items() if n not in (first, second)])
    third = route(moved, after_kill)
    send(moved, third, bad=True)
    last = poll(lambda: daemons[third].get_release(rollouts[moved][1]),
                lambda r: r.status_code == 200 and REPLICA not in r.headers and "live" not in r.json(),
                timeout=10, what=f"{third} judging {moved}").json()
    assert (last["verdict"], last["red_since"]) == ("red", red["red_since"]), last
    assert sent_to_first < counts(last)[0] <= sent[moved, "canary"], (last, sent)

    # Every replica alive answers for every release, live or from the ledger.
    alive = [daemons[n] for n in daemons if n != second]
    for d in alive:
        for s in services:
            for deployment in rollouts[s]:
                r = d.get_release(deployment)
                assert r.status_code == 200, (d.workdir, deployment, r.text)
        v = d.get_release(rollouts[moved][1]).json()
        assert (v["verdict"], v["red_since"]) == ("red", red["red_since"]), v
        listed = {v["deployment_id"] for v in d.releases()}
        alive_owned = {dep for s in services if owner[s] != second for dep in rollouts[s]}
        assert alive_owned <= listed, (d.workdir, alive_owned - listed)

    # Each notification once; the fleet's DORA from any replica.
    poll(lambda: Counter(h["event"].get("type") for h in receivers.hooks)["canary_failed"],
         lambda n: n >= 1, timeout=30, what="canary_failed at the webhook")
    keys = Counter(h["key"] for h in receivers.hooks)
    assert not {k: n for k, n in keys.items() if n > 1}, keys
    failed_events = [h for h in receivers.hooks if h["type"] == "canary_failed"]
    assert len(failed_events) == 1, failed_events
    post_releases(alive[0], services[1], 3)
    post_releases(alive[1], services[2], 2)
    for d in alive:
        dora = requests.get(f"{d.http_url}/api/v1/dora", timeout=10).json()["dora"]
        deployments = {r["service"]: r["deployments"] for r in dora}
        assert (deployments.get(services[1]), deployments.get(services[2])) == (3, 2), deployments


@pytest.mark.parametrize("victim", ["replica-a", "replica-b"])
def test_an_ha_pair_speaks_once_and_survives_either_death(daemon_factory, postgres, receivers, unique, victim):
    """Two replicas fed the same telemetry (the Collector exporting to
    both) on one ledger: each event is written once and each message
    delivered once, a change of color included; killing either replica
    (SIGKILL) mid-rollout loses no event, and the other goes on judging
    and answering."""
    receivers.accepting = True
    url = postgres.database("ha")
    env = {"RV_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    pair = {name: daemon_factory(config(url, name, receivers), env=env) for name in ("replica-a", "replica-b")}
    service = unique("checkout")
    stable, canary = unique("stable"), unique("canary")
    ok, failed = (SpanKind.SERVER, "ok"), (SpanKind.SERVER, "http_500")
    sent = Counter()

    def both(bad: bool, to=pair.values()) -> None:
        for d in to:
            send_spans(d, "grpc", release_resource(service, stable), [ok] * 100)
            send_spans(d, "grpc", release_resource(service, canary), [ok] * 20 + ([failed] * 20 if bad else []))
        sent["canary"] += 40 if bad else 20

    # A healthy start: both judge the canary (its first verdicts).
    poll(lambda: both(bad=False) or [d.get_release(canary) for d in pair.values()],
         lambda rs: all(r.status_code == 200 and "live" not in r.json() for r in rs),
         timeout=20, interval=0.2, what="both replicas judging the canary")
    # Mid-rollout, one dies; the survivor is fed alone and turns red.
    pair[victim].kill()
    survivor = next(d for name, d in pair.items() if name != victim)
    red = poll(lambda: both(bad=True, to=[survivor]) or survivor.get_release(canary).json(),
               lambda v: v.get("verdict") == "red", timeout=40, interval=0.2, what="red on the survivor")
    assert "live" not in red, red
    requests_, errors = counts(red)
    assert 0 < errors <= requests_ and requests_ <= sent["canary"], (red, sent)

    def events(kind: str) -> list[dict]:
        r = requests.get(f"{survivor.http_url}/api/v1/events",
                         params={"service": service, "type": kind, "limit": "1000"}, timeout=10)
        r.raise_for_status()
        return r.json()["events"]

    started = [e for e in events("release_started") if e["deployment_id"] == canary]
    assert len(started) == 1, started
    failed_events = poll(lambda: events("canary_failed"), lambda es: len(es) >= 1, timeout=10,
                         what="canary_failed recorded")
    assert len(failed_events) == 1, failed_events
    changes = [e for e in events("verdict_changed") if e["deployment_id"] == canary]
    assert changes and changes[-1]["metadata"]["to"] == "red", changes
    assert len({e["event_id"] for e in changes}) == len(changes), changes

    # Every message once, the red's included.
    poll(lambda: [h for h in receivers.hooks if h["type"] == "canary_failed"], lambda hs: len(hs) >= 1,
         timeout=30, what="canary_failed at the webhook")
    keys = Counter(h["key"] for h in receivers.hooks)
    assert not {k: n for k, n in keys.items() if n > 1}, keys
    assert len([h for h in receivers.hooks if h["type"] == "canary_failed"]) == 1
    assert receivers.violations == [], receivers.violations


def test_replicas_that_need_read_tokens_ask_each_other_with_them(daemon_factory, postgres, receivers, unique, tmp_path):
    """Reads need a token on both replicas (one shared tokens file): a
    forwarded read carries the caller's, which the judging replica checks;
    a replica follows the other's event stream with its own first read
    token, so its stream shows the other's releases."""
    tokens = tmp_path / "read-tokens"
    tokens.write_text("# the fleet's readers\nreader-tok\nother-tok\n")
    url = postgres.database("fleet-auth")
    env = {"RV_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    auth = f'\n[auth]\nread_tokens_file = "{tokens}"\n'
    a = daemon_factory(config(url, "replica-a", receivers) + auth, env=env)
    b = daemon_factory(config(url, "replica-b", receivers) + auth, env=env)
    service, canary = unique("checkout"), unique("canary")
    send_spans(a, "grpc", release_resource(service, canary), [(SpanKind.SERVER, "ok")] * 10)
    reader = {"Authorization": "Bearer other-tok"}

    def ask(headers):
        return requests.get(f"{b.http_url}/api/v1/releases/{canary}", headers=headers, timeout=5)

    answer = poll(lambda: ask(reader), lambda r: r.headers.get(REPLICA) == "replica-a", timeout=15,
                  what="b forwarding to a with the caller's token")
    assert answer.json()["deployment_id"] == canary
    assert ask({}).status_code == 401
    assert ask({"Authorization": "Bearer wrong"}).status_code == 401

    def b_streams_a() -> bool:
        with requests.get(f"{b.http_url}/api/v1/releases/stream", stream=True, timeout=(5, 10),
                          headers={"Accept": "text/event-stream", **reader}) as r:
            assert r.status_code == 200, r.text
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    return canary in line
        return False

    poll(b_streams_a, lambda ok: ok, timeout=15, interval=0.5, what="a's release on b's stream")

    # A replica whose read tokens differ is refused the others' streams:
    # it says so as a warning naming the fix, once a peer (before, only at
    # debug level, so nothing told why its stream lacked their releases).
    strangers = tmp_path / "stranger-tokens"
    strangers.write_text("stranger-tok\n")
    c = daemon_factory(config(url, "replica-c", receivers) + f'\n[auth]\nread_tokens_file = "{strangers}"\n', env=env)
    warning = "replicas sharing a ledger need the same [auth] read tokens"

    def refusals() -> list[str]:
        return [line for line in c.log().splitlines() if warning in line]

    poll(lambda: {p for p in ("replica-a", "replica-b") if any(p in line for line in refusals())},
         lambda peers: len(peers) == 2, timeout=15, interval=0.5, what="c warning that a and b refused it")
    assert all("WARN" in line and "401" in line for line in refusals()), refusals()
