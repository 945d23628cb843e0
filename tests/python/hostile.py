"""Hostile peers for the tests and the benches: a raw HTTP/2 client (PyPI's
h2) that opens gRPC export streams, declares large messages and sends only
part of each, recording what the daemon answers on every stream."""

from __future__ import annotations

import socket
import struct
import time
import urllib.parse
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

MIB = 1 << 20
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Stream:
    declared: int
    to_send: int
    sent: int = 0
    status: int | None = None
    message: str = ""
    closed: bool = False


@dataclass
class Attack:
    """A raw HTTP/2 connection from `source` with `streams` export streams,
    each declaring `declared` bytes and sending `to_send` of them."""

    addr: str
    source: str
    streams: int
    declared: int
    to_send: int
    by_id: dict[int, Stream] = field(default_factory=dict)

    def run(self, deadline: float) -> None:
        host, port = self.addr.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), source_address=(self.source, 0))
        sock.settimeout(0.005)
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        for _ in range(self.streams):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", TRACES),
                    (":authority", self.addr),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            conn.send_data(sid, b"\x00" + struct.pack(">I", self.declared))
            self.by_id[sid] = Stream(self.declared, self.to_send)
        sock.sendall(conn.data_to_send())
        chunk = b"\x00" * 16384
        try:
            while time.monotonic() < deadline and not all(s.closed for s in self.by_id.values()):
                # Send what the windows allow, then read what came back.
                for sid, s in self.by_id.items():
                    if s.closed or s.sent >= s.to_send:
                        continue
                    try:
                        room = min(conn.local_flow_control_window(sid), s.to_send - s.sent, len(chunk))
                        if room > 0:
                            conn.send_data(sid, chunk[:room])
                            s.sent += room
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        s.closed = True
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                for event in conn.receive_data(data):
                    self.on(event)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        finally:
            sock.close()

    def on(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        s = self.by_id.get(sid) if sid else None
        if s is None:
            return
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            headers = dict(event.headers)
            if "grpc-status" in headers:
                s.status = int(headers["grpc-status"])
                s.message = urllib.parse.unquote(headers.get("grpc-message", ""))
        if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            s.closed = True


WATCH = "/release_verdict.v1.VerdictService/WatchVerdicts"
# The largest window HTTP/2 allows (RFC 9113, 6.9.1).
MAX_WINDOW = (1 << 31) - 1


def open_watches(addr: str, streams: int) -> socket.socket:
    """A raw HTTP/2 connection that opens `streams` WatchVerdicts streams
    with the largest windows HTTP/2 allows and then never reads: the daemon
    may send each stream as much as it likes, and whatever it queues waits
    behind a full socket. Returns the socket, to close."""
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: MAX_WINDOW}
    )
    conn.initiate_connection()
    conn.increment_flow_control_window(MAX_WINDOW - 65535)
    for _ in range(streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", WATCH),
                (":authority", addr),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )
        # An empty WatchVerdictsRequest: every release.
        conn.send_data(sid, b"\x00" + struct.pack(">I", 0), end_stream=True)
    sock.sendall(conn.data_to_send())
    return sock


def varint(n: int) -> bytes:
    """A protobuf varint."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: bodies built byte by byte, as a
    hostile sender would, with no model that would refuse them."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def kv(key: str, value: str) -> bytes:
    """An OTLP KeyValue with a string value, encoded."""
    return field(1, key.encode()) + field(2, field(1, value.encode()))
