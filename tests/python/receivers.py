"""Local stand-ins for the services the notifiers talk to that cannot run
here: Slack's Web API (chat.postMessage, chat.update), Grafana's
annotations API and a webhook receiver. Each checks every request against
the service's documented shape and records what a real one would keep;
anything off is a violation (answered 400, and listed for the test to
assert on). Failures can be injected: answer 503 (or 429 with
Retry-After) until told to accept.

Shapes checked (from the services' API references):
- Slack chat.postMessage: POST JSON with `Authorization: Bearer xoxb-…`;
  `channel` (string), `text` (string) and/or `blocks` (array of objects
  with `type`), optional `thread_ts` of an existing message ("1234.5678");
  answered 200 `{"ok": true, "channel": "C…", "ts": "…"}`.
- Slack chat.update: `channel` must be the channel *id* a post answered
  with, `ts` an existing message; answered `{"ok": true, "channel", "ts"}`.
- Grafana POST /api/annotations: `Authorization: Bearer …`, `time` (epoch
  ms, integer), `tags` (array of strings), `text` (string), optional
  `timeEnd` (>= time), `dashboardUID`; answered `{"id", "message"}`.
  PATCH /api/annotations/{id}: any of time, timeEnd, tags, text.
- Webhook: `X-Release-Verdict-Signature: sha256=HMAC-SHA256(secret,
  "<timestamp>.<body>")` with `X-Release-Verdict-Timestamp` within 5 min.

Badly behaved sinks, for the bounds: `/hang` reads the request and never
answers (until the receivers close); `/huge` answers 500 with a body of
`huge_bytes` (512 MiB), generated lazily in 64 KiB chunks, and notes how
much of it each request took before the client hung up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

SLACK_TOKEN = "xoxb-test-7f1c"
GRAFANA_TOKEN = "glsa_test_31d2"
WEBHOOK_SECRET = "whsec-test-0a9b"
CHANNEL_ID = "C0RELEASES1"
TS = re.compile(r"^\d+\.\d{6}$")


class _Server(ThreadingHTTPServer):
    # The daemon opens up to a batch of connections at once per sink; the
    # default listen backlog (5) would drop some SYNs, each then retried a
    # second later.
    request_queue_size = 256


@dataclass
class Message:
    ts: str
    channel: str
    text: str
    blocks: list
    thread_ts: Optional[str]
    delivery: Optional[str]
    updates: list = field(default_factory=list)  # texts of chat.update, in order
    update_blocks: list = field(default_factory=list)  # blocks of each chat.update, in order


@dataclass
class Annotation:
    id: int
    time: int
    time_end: Optional[int]
    tags: list
    text: str
    patches: int = 0


class Receivers:
    """The three receivers on one loopback port: /slack/api/…, /grafana/…, /hook."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepting = False
        self.refusals = 0  # requests answered with an injected failure
        self.violations: list[str] = []
        self.messages: list[Message] = []
        self.annotations: dict[int, Annotation] = {}
        self.hooks: list[dict] = []  # {"key", "type", "event"}
        self.incoming: list[dict] = []  # Slack incoming-webhook posts
        self.requests_by_key: dict[str, int] = {}
        self.hung = 0  # requests /hang holds
        self.huge_bytes = 512 << 20
        self.huge_sent: list[int] = []  # bytes of each /huge answer written before the client left
        self._released = threading.Event()
        self._ts = 0
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                receivers._handle(self, "POST")

            def do_PATCH(self) -> None:
                receivers._handle(self, "PATCH")

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    # --- answers -------------------------------------------------------------

    def _answer(self, h: BaseHTTPRequestHandler, status: int, body: Any, headers: dict | None = None) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _violation(self, h: BaseHTTPRequestHandler, what: str) -> None:
        with self.lock:
            self.violations.append(f"{h.command} {h.path}: {what}")
        self._answer(h, 400, {"ok": False, "error": "invalid_arguments", "detail": what})

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length", "0"))
        raw = h.rfile.read(length)
        key = h.headers.get("X-Release-Verdict-Delivery")
        if h.path == "/hang":
            return self._hang()
        if h.path == "/huge":
            return self._huge(h)
        with self.lock:
            if key:
                self.requests_by_key[key] = self.requests_by_key.get(key, 0) + 1
            accepting = self.accepting
            if not accepting:
                self.refusals += 1
                refusal = self.refusals
        if not accepting:
            # Every third refusal is a rate limit with Retry-After, as Slack
            # and Grafana send them; the rest are outages.
            if refusal % 3 == 0:
                if h.path.startswith("/slack/"):
                    return self._answer(h, 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
                return self._answer(h, 429, "too many requests", {"Retry-After": "1"})
            return self._answer(h, 503, "service unavailable")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._violation(h, "body is not JSON")
        if not h.headers.get("Content-Type", "").startswith("application/json"):
            return self._violation(h, "Content-Type is not application/json")
        if h.path == "/slack/api/chat.postMessage" and method == "POST":
            return self._post_message(h, body, key)
        if h.path == "/slack/api/chat.update" and method == "POST":
            return self._update(h, body)
        if h.path == "/grafana/api/annotations" and method == "POST":
            return self._annotate(h, body)
        m = re.fullmatch(r"/grafana/api/annotations/(\d+)", h.path)
        if m and method == "PATCH":
            return self._patch(h, int(m.group(1)), body)
        if h.path == "/hook" and method == "POST":
            return self._hook(h, raw, body, key)
        if h.path.startswith("/slack-hook/services/") and method == "POST":
            return self._incoming(h, body)
        return self._violation(h, "no such endpoint")

    # --- Slack ---------------------------------------------------------------

    def _slack_auth(self, h: BaseHTTPRequestHandler) -> bool:
        return h.headers.get("Authorization") == f"Bearer {SLACK_TOKEN}"

    def _check_message(self, body: Any) -> Optional[str]:
        if not isinstance(body, dict):
            return "body is not an object"
        if not isinstance(body.get("channel"), str) or not body["channel"]:
            return "channel missing"
        if not isinstance(body.get("text"), str) and not isinstance(body.get("blocks"), list):
            return "neither text nor blocks"
        for b in body.get("blocks") or []:
            if not isinstance(b, dict) or not isinstance(b.get("type"), str):
                return "a block without a type"
            if b["type"] == "header" and len(b["text"]["text"]) > 150:
                return "header text over 150 characters"
            if b["type"] == "section" and "text" in b and len(b["text"]["text"]) > 3000:
                return "section text over 3000 characters"
            # Block Kit: a section has at most 10 fields of 2000 characters,
            # a context at most 10 elements (text of 3000).
            fields = b.get("fields") or []
            if len(fields) > 10 or any(len(f.get("text", "")) > 2000 for f in fields):
                return "section fields over 10, or one over 2000 characters"
            elements = b.get("elements") or []
            if b["type"] == "context" and (len(elements) > 10 or any(len(e.get("text", "")) > 3000 for e in elements)):
                return "context elements over 10, or one over 3000 characters"
        return None

    def _post_message(self, h: BaseHTTPRequestHandler, body: Any, key: Optional[str]) -> None:
        if not self._slack_auth(h):
            return self._answer(h, 200, {"ok": False, "error": "invalid_auth"})
        problem = self._check_message(body)
        if problem:
            return self._violation(h, problem)
        thread_ts = body.get("thread_ts")
        with self.lock:
            if thread_ts is not None:
                if not (isinstance(thread_ts, str) and TS.match(thread_ts)):
                    problem = f"thread_ts {thread_ts!r} is not a message ts"
                elif not any(m.ts == thread_ts and m.thread_ts is None for m in self.messages):
                    problem = f"thread_ts {thread_ts} names no message"
            if not problem:
                self._ts += 1
                ts = f"{int(time.time())}.{self._ts:06d}"
                delivery = (body.get("metadata") or {}).get("event_payload", {}).get("delivery_key")
                self.messages.append(
                    Message(ts, CHANNEL_ID, body.get("text", ""), body.get("blocks") or [], thread_ts, delivery)
                )
        if problem:
            return self._violation(h, problem)
        self._answer(h, 200, {"ok": True, "channel": CHANNEL_ID, "ts": ts, "message": {"text": body.get("text", "")}})

    def _update(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        if not self._slack_auth(h):
            return self._answer(h, 200, {"ok": False, "error": "invalid_auth"})
        problem = self._check_message(body)
        if problem:
            return self._violation(h, problem)
        if body["channel"] != CHANNEL_ID:
            return self._answer(h, 200, {"ok": False, "error": "channel_not_found"})
        with self.lock:
            target = next((m for m in self.messages if m.ts == body.get("ts")), None)
            if target:
                target.updates.append(body.get("text", ""))
                target.update_blocks.append(body.get("blocks") or [])
        if not target:
            return self._answer(h, 200, {"ok": False, "error": "message_not_found"})
        self._answer(h, 200, {"ok": True, "channel": CHANNEL_ID, "ts": target.ts, "text": body.get("text", "")})

    # --- Grafana -------------------------------------------------------------

    def _annotate(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        if h.headers.get("Authorization") != f"Bearer {GRAFANA_TOKEN}":
            return self._answer(h, 401, {"message": "Unauthorized"})
        if not isinstance(body, dict) or not isinstance(body.get("time"), int):
            return self._violation(h, "time must be epoch milliseconds (an integer)")
        if not isinstance(body.get("tags"), list) or not all(isinstance(t, str) for t in body["tags"]):
            return self._violation(h, "tags must be an array of strings")
        if not isinstance(body.get("text"), str):
            return self._violation(h, "text must be a string")
        end = body.get("timeEnd")
        if end is not None and (not isinstance(end, int) or end < body["time"]):
            return self._violation(h, "timeEnd must be an integer >= time")
        unknown = set(body) - {"time", "timeEnd", "tags", "text", "dashboardUID", "panelId"}
        if unknown:
            return self._violation(h, f"unknown fields {sorted(unknown)}")
        with self.lock:
            n = len(self.annotations) + 1
            self.annotations[n] = Annotation(n, body["time"], end, body["tags"], body["text"])
        self._answer(h, 200, {"id": n, "message": "Annotation added"})

    def _patch(self, h: BaseHTTPRequestHandler, n: int, body: Any) -> None:
        if h.headers.get("Authorization") != f"Bearer {GRAFANA_TOKEN}":
            return self._answer(h, 401, {"message": "Unauthorized"})
        if not isinstance(body, dict) or set(body) - {"time", "timeEnd", "tags", "text"}:
            return self._violation(h, "a patch takes time, timeEnd, tags, text")
        with self.lock:
            a = self.annotations.get(n)
            if a:
                a.time = body.get("time", a.time)
                a.time_end = body.get("timeEnd", a.time_end)
                a.tags = body.get("tags", a.tags)
                a.text = body.get("text", a.text)
                a.patches += 1
        if not a:
            return self._answer(h, 404, {"message": "Annotation not found"})
        if a.time_end is not None and a.time_end < a.time:
            return self._violation(h, "timeEnd before time")
        self._answer(h, 200, {"message": "Annotation patched"})

    def _incoming(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        # An incoming webhook takes text and/or blocks; no channel, no thread.
        body = dict(body or {}, channel="(the webhook's)")
        problem = self._check_message(body)
        if problem:
            return self._violation(h, problem)
        if "thread_ts" in body:
            return self._violation(h, "incoming webhooks cannot post in a thread")
        with self.lock:
            self.incoming.append(body)
        self._answer(h, 200, "ok")

    # --- webhook -------------------------------------------------------------

    def _hook(self, h: BaseHTTPRequestHandler, raw: bytes, body: Any, key: Optional[str]) -> None:
        stamp = h.headers.get("X-Release-Verdict-Timestamp", "")
        signature = h.headers.get("X-Release-Verdict-Signature", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
            return self._violation(h, "timestamp missing or stale")
        want = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, signature):
            return self._violation(h, "bad signature")
        if not key:
            return self._violation(h, "no delivery key")
        if h.headers.get("X-Release-Verdict-Event") != body.get("type"):
            return self._violation(h, "event header and body disagree")
        with self.lock:
            self.hooks.append({"key": key, "type": body["type"], "event": body})
        self._answer(h, 200, {"received": True})

    # --- badly behaved sinks -------------------------------------------------

    def _hang(self) -> None:
        with self.lock:
            self.hung += 1
        self._released.wait()

    def _huge(self, h: BaseHTTPRequestHandler) -> None:
        chunk = b"x" * 65536
        sent = 0
        h.send_response(500)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(self.huge_bytes))
        h.end_headers()
        try:
            while sent < self.huge_bytes:
                part = chunk[: self.huge_bytes - sent]
                h.wfile.write(part)
                sent += len(part)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
        with self.lock:
            self.huge_sent.append(sent)

    # --- views ---------------------------------------------------------------

    def thread_of(self, deployment_id: str) -> tuple[Optional[Message], list[Message]]:
        """The opening message naming a release, and the replies in its thread."""
        with self.lock:
            opening = next(
                (m for m in self.messages if m.thread_ts is None and deployment_id in m.text), None
            )
            replies = [m for m in self.messages if opening and m.thread_ts == opening.ts]
        return opening, replies
