"""Readers are bounded: verdict streams that never read cost the daemon
little memory, are cut off and counted, are capped, and give their memory
back when they close (issue 28, item 3).

A daemon tracking 10,000 releases (a 6 MB snapshot, more than the kernel
buffers of a connection hold) is opened 60 server-sent-event streams and 60
gRPC watches that never read, over real sockets. Before the fix every stream built and held its own copy of every
release (about 10 MB each here); now one snapshot is built for all of them,
written a piece at a time as each connection takes it, and let go of when a
stream has not taken it within `server.stream_snapshot_timeout`.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
import pytest

from harness import burst_requests, poll, proc_status_kb, send_burst
from hostile import open_watches
from outputs_support import generate_stubs

SERVICES = 100
PER_SERVICE = 100  # the default per-service cap
RELEASES = SERVICES * PER_SERVICE
SSE = 60
WATCHES = 60
# Memory the open streams may add, all of them together. One shared
# snapshot (JSON and protobuf) is a few tens of MB at 4,000 releases in the
# debug build; a copy per stream was over a GB.
MAX_ADDED_MIB = 200

CONFIG = """
[server]
stream_snapshot_timeout = "2s"
"""


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory):
    return generate_stubs(tmp_path_factory.mktemp("stubs"))


def open_watch(stub, pb2):
    """A watch whose first answer is awaited (its status, if refused)."""
    return next(iter(stub.WatchVerdicts(pb2.WatchVerdictsRequest(), timeout=30)))


def test_streams_beyond_max_streams_are_refused_with_a_retry(daemon_factory, stubs):
    pb2, pb2_grpc = stubs
    d = daemon_factory("[server]\nmax_streams = 3\n")
    send_burst(d.http_addr, burst_requests(3, 3, prefix="cap-"))
    poll(lambda: d.metrics().get("release_verdict_releases_tracked"), lambda n: n == 3, what="releases tracked")
    channel = grpc.insecure_channel(d.grpc_addr)
    stub = pb2_grpc.VerdictServiceStub(channel)
    sse = [open_sse(d.http_addr) for _ in range(2)]
    watch = stub.WatchVerdicts(pb2.WatchVerdictsRequest(), timeout=60)
    try:
        assert next(iter(watch)).deployment_id.startswith("cap-")
        poll(lambda: d.metrics().get("release_verdict_streams_open"), lambda n: n == 3, what="three streams open")

        # One stream more is refused, SSE and watch alike, with an answer
        # clients retry.
        extra = open_sse(d.http_addr)
        refused = read_to_end(extra, timeout=10).decode(errors="replace")
        extra.close()
        head = refused.split("\r\n\r\n", 1)[0].lower()
        assert head.startswith("http/1.1 503"), refused[:300]
        assert "retry-after: 1" in head, head
        assert "max_streams" in refused, refused
        with pytest.raises(grpc.RpcError) as e:
            open_watch(stub, pb2)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert "max_streams" in e.value.details(), e.value.details()
        trailers = dict(e.value.trailing_metadata() or ())
        assert "grpc-status-details-bin" in trailers, "no RetryInfo in the refusal"
        assert d.metrics().get("release_verdict_streams_refused_total") == 2

        # A stream that closes gives its place back.
        sse.pop().close()
        poll(lambda: d.metrics().get("release_verdict_streams_open"), lambda n: n == 2, what="a place free")
        assert open_watch(stub, pb2).deployment_id.startswith("cap-")
    finally:
        for s in sse:
            s.close()
        watch.cancel()
        channel.close()


def rss_mib(pid: int) -> float:
    return proc_status_kb(pid, "VmRSS") / 1024


def open_sse(http_addr: str) -> socket.socket:
    """An SSE request on a socket with a tiny receive buffer that is then
    never read: the snapshot cannot fit in the kernel's buffers."""
    host, port = http_addr.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    s.sendall(
        (
            f"GET /api/v1/releases/stream HTTP/1.1\r\nHost: {http_addr}\r\n"
            "Accept: text/event-stream\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    return s


def read_to_end(s: socket.socket, timeout: float) -> bytes:
    """Everything the daemon sends until it closes the connection."""
    s.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(1 << 16)
        except socket.timeout:
            break
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"the stream did not end within {timeout}s; got {sum(map(len, chunks))} bytes")


def test_streams_that_never_read_are_bounded_cut_off_capped_and_let_go(daemon_factory, stubs, tmp_path: Path):
    pb2, pb2_grpc = stubs
    d = daemon_factory(CONFIG)
    pid = d.proc.pid
    track_releases(d, "r")
    # A listing of every release once, so the allocator has already grown
    # for one; the baseline is taken after it.
    listing = len(d.releases())
    assert listing == RELEASES
    before = rss_mib(pid)

    sse = [open_sse(d.http_addr) for _ in range(SSE)]
    channel = grpc.insecure_channel(d.grpc_addr)
    stub = pb2_grpc.VerdictServiceStub(channel)
    # Watches that are never iterated: grpcio reads nothing for them.
    watches = [stub.WatchVerdicts(pb2.WatchVerdictsRequest(), timeout=120) for _ in range(WATCHES)]
    try:
        poll(
            lambda: d.metrics().get("release_verdict_streams_open"),
            lambda n: n == SSE + WATCHES,
            timeout=20,
            what="every stream open",
        )

        # The SSE streams cannot take their snapshot through a 4 KB window:
        # after stream_snapshot_timeout each is let go of and counted.
        poll(
            lambda: d.metrics().get("release_verdict_streams_dropped_total", reason="stalled"),
            lambda n: n >= SSE,
            timeout=20,
            what="the stalled SSE streams counted",
        )
        held = rss_mib(pid)
        print(f"RSS {before:.0f} MiB before, {held:.0f} MiB with the streams open")
        assert held - before < MAX_ADDED_MIB, (
            f"{SSE} SSE streams and {WATCHES} watches that never read added {held - before:.0f} MiB "
            f"(from {before:.0f} to {held:.0f} MiB); at most {MAX_ADDED_MIB} MiB"
        )

        # A client that reads again finds its stream ended mid-snapshot: it
        # reconnects for a fresh one.
        cut = read_to_end(sse[0], timeout=10).decode(errors="replace")
        assert "event: snapshot" in cut, cut[:300]
        assert "]}\n\n" not in cut, "the whole snapshot was sent, though not read in time"
    finally:
        for s in sse:
            s.close()
        for w in watches:
            w.cancel()
        channel.close()

    poll(
        lambda: d.metrics().get("release_verdict_streams_open"),
        lambda n: n == 0,
        timeout=20,
        what="every stream closed",
    )
    # Memory returns: within 20% of where it was before the streams (or
    # 16 MiB, whichever is more, for a small daemon).
    after = poll(
        lambda: rss_mib(pid),
        lambda mib: mib <= before + max(0.2 * before, 16),
        timeout=20,
        interval=0.5,
        what=f"RSS back near {before:.0f} MiB",
    )
    assert after <= before + max(0.2 * before, 16)


def test_watches_queued_behind_a_full_socket_share_their_snapshot(daemon_factory):
    """HTTP/2 queues up to 400 KiB for each stream whose window is open
    while the connection's socket is full. 200 watches on two raw
    connections that grant the largest windows and never read: what is
    queued for them is slices of the one shared snapshot, not a copy per
    watch. Before, each watch's messages were copied into buffers of its
    own, and the 200 held some 80 MiB for as long as they stayed open."""
    d = daemon_factory('[server]\nstream_snapshot_timeout = "2s"\n')
    track_releases(d, "q")
    assert len(d.releases()) == RELEASES
    before = rss_mib(d.proc.pid)

    conns = [open_watches(d.grpc_addr, 100) for _ in range(2)]
    try:
        poll(lambda: d.metrics().get("release_verdict_streams_open"), lambda n: n == 200, timeout=20, what="200 watches open")
        # A watch lets go of its snapshot once it has sent it all, or 2 s
        # after it got it (`stalled`): by then the daemon has queued all it
        # will for it. A socket's kernel buffers take a few MB, so the
        # first watches on a connection may finish.
        def snapshots() -> tuple[float, float]:
            m = d.metrics()
            return m.get("release_verdict_streams_dropped_total", reason="stalled"), m.get(
                "release_verdict_stream_snapshot_bytes"
            )

        poll(
            snapshots,
            lambda s: s[0] >= 190 and s[1] == 0,
            timeout=30,
            what="every watch's snapshot let go, nearly all of them stalled",
        )
        held = rss_mib(d.proc.pid)
        print(f"RSS {before:.0f} MiB before, {held:.0f} MiB with 200 watches queued")
        assert held - before < MAX_QUEUED_MIB, (
            f"200 watches queued behind full sockets added {held - before:.0f} MiB"
            f" (from {before:.0f} to {held:.0f}); at most {MAX_QUEUED_MIB} MiB"
        )
    finally:
        for c in conns:
            c.close()
    poll(lambda: d.metrics().get("release_verdict_streams_open"), lambda n: n == 0, timeout=20, what="every watch closed")


# What 200 watches queued behind full sockets may add: a few pieces of
# the shared snapshot and the connections' own buffers. A copy per watch
# was 200 x 400 KiB.
MAX_QUEUED_MIB = 45


def track_releases(d, prefix: str) -> None:
    """RELEASES releases on the daemon, PER_SERVICE a service."""
    for i in range(SERVICES):
        sent = send_burst(
            d.http_addr, burst_requests(PER_SERVICE, PER_SERVICE, prefix=f"{prefix}{i}-", service=f"{prefix}svc-{i}")
        )
        assert sent.rejected_spans == 0, sent.messages
    poll(
        lambda: d.metrics().get("release_verdict_releases_tracked"),
        lambda n: n == RELEASES,
        timeout=20,
        what="every release tracked",
    )


def test_snapshots_held_at_once_stay_within_their_budget(daemon_factory):
    """A stream that does not read holds its snapshot until
    stream_snapshot_timeout; streams opening meanwhile wait for room rather
    than each pinning a snapshot of its own (server.max_stream_snapshot_bytes,
    here 1 MiB: less than one snapshot, so one is held at a time). Without
    the budget a stream opening a second later got a second snapshot at
    once, and a stream of reconnects pinned one per second."""
    d = daemon_factory('[server]\nmax_stream_snapshot_bytes = 1048576\nstream_snapshot_timeout = "60s"\n')
    # 10,000 releases: a snapshot larger than the socket buffers take.
    track_releases(d, "b")
    def held() -> float:
        # /metrics writes every release's series: slow in a debug build on a
        # busy machine, so a read that times out is tried again.
        return poll(lambda: d.metrics().get("release_verdict_stream_snapshot_bytes"), lambda b: True, timeout=60)

    assert held() == 0

    stalled = open_sse(d.http_addr)
    one = poll(held, lambda b: b > 0, timeout=20, what="the first stream's snapshot held")
    assert one > 1 << 20, f"a snapshot of 10,000 releases is over the 1 MiB budget: {one} bytes"
    waiting = open_sse(d.http_addr)
    waiting.setblocking(False)
    try:
        # The second stream is open, and gets no snapshot while the first
        # holds one: the bytes held stay one snapshot's.
        poll(lambda: d.metrics().get("release_verdict_streams_open"), lambda n: n == 2, timeout=10, what="both open")
        highest, got = one, b""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            highest = max(highest, held())
            try:
                got += waiting.recv(1 << 16)
            except BlockingIOError:
                pass
        assert highest == one, f"{highest} bytes of snapshots held, one is {one}"
        assert b"event: snapshot" not in got, got[:200]

        # Once the first lets go of its snapshot, the second gets one.
        stalled.close()
        waiting.setblocking(True)
        waiting.settimeout(30)
        while b"event: snapshot" not in got:
            chunk = waiting.recv(1 << 16)
            assert chunk, "the stream ended without a snapshot"
            got += chunk
    finally:
        stalled.close()
        waiting.close()
    poll(held, lambda b: b == 0, timeout=60, what="every snapshot let go")
