"""Starting the real release-verdict binary and talking to it.

Shared by conftest.py (the pytest fixtures) and benches/burst_releases.py, so
that the tests and the benchmark start the daemon the same way. Nothing here
sleeps to wait for a result: every wait polls until a condition holds or a
deadline passes, and says what it last saw when the deadline passes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "release-verdict"

# `INFO release_verdict::server: release-verdict listening grpc_addr=127.0.0.1:1 http_addr=127.0.0.1:2`
LISTENING = re.compile(r"release-verdict listening grpc_addr=(\S+) http_addr=(\S+)")


def daemon_binary() -> Path:
    """The binary under test: $RELEASE_VERDICT_BIN, else target/debug/release-verdict."""
    return Path(os.environ.get("RELEASE_VERDICT_BIN", DEFAULT_BIN)).resolve()


@dataclasses.dataclass
class Daemon:
    """A running daemon: its addresses, its process and its log file."""

    grpc_addr: str  # host:port, as the OTLP/gRPC exporter wants it
    http_addr: str  # host:port
    proc: subprocess.Popen
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://{self.http_addr}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # --- the JSON API -----------------------------------------------------

    def get_release(self, deployment_id: str, **params: str) -> requests.Response:
        quoted = requests.utils.quote(deployment_id, safe="")
        return requests.get(f"{self.http_url}/api/v1/releases/{quoted}", params=params, timeout=5)

    def releases(self, **params: str) -> list[dict]:
        r = requests.get(f"{self.http_url}/api/v1/releases", params=params, timeout=30)
        r.raise_for_status()
        return r.json()["releases"]

    def metrics(self) -> "Scrape":
        r = requests.get(f"{self.http_url}/metrics", timeout=5)
        r.raise_for_status()
        return Scrape.parse(r.text)

    # --- lifecycle ----------------------------------------------------------

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for the drain, return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"daemon did not exit within {timeout}s of SIGTERM; log:\n{self.log()}"
                )
        return self.proc.returncode


def start_daemon(
    workdir: Path,
    config: str = "",
    binary: Optional[Path] = None,
    startup_timeout: float = 15.0,
    env: Optional[dict[str, str]] = None,
    grpc_listen: str = "127.0.0.1:0",
    http_listen: str = "127.0.0.1:0",
) -> Daemon:
    """Writes `config` to workdir/config.toml, starts `serve` (on port 0
    unless told the addresses, as a restart on the same ports is) and
    waits for the log line that names the bound addresses."""
    binary = binary or daemon_binary()
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} does not exist; run `cargo build` first")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.toml"
    config_path.write_text(config)
    log_path = workdir / "release-verdict.log"
    log = open(log_path, "wb")
    proc_env = dict(os.environ)
    proc_env.setdefault("RUST_LOG", "info")
    proc_env.update(env or {})
    proc = subprocess.Popen(
        [
            str(binary),
            "serve",
            "--config",
            str(config_path),
            "--grpc-listen",
            grpc_listen,
            "--http-listen",
            http_listen,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=proc_env,
        # Relative paths in the config (the ledger's) stay inside workdir.
        cwd=workdir,
    )
    log.close()
    deadline = time.monotonic() + startup_timeout
    while True:
        text = log_path.read_text(errors="replace")
        m = LISTENING.search(text)
        if m:
            return Daemon(grpc_addr=m.group(1), http_addr=m.group(2), proc=proc, log_path=log_path)
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before listening:\n{text}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"no 'listening' line within {startup_timeout}s:\n{text}")
        time.sleep(0.02)


def poll(
    fetch: Callable[[], Any],
    condition: Callable[[Any], bool],
    timeout: float = 2.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Calls `fetch` until `condition(result)` holds; returns that result.
    Raises AssertionError with the last result once `timeout` has passed."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fetch()
            if condition(last):
                return last
        except requests.RequestException as e:  # daemon busy or restarting: keep polling
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s; last seen: {last!r}")
        time.sleep(interval)


def poll_release(
    daemon: Daemon,
    deployment_id: str,
    condition: Callable[[dict], bool],
    timeout: float = 2.0,
    **params: str,
) -> dict:
    """Polls GET /api/v1/releases/{id} until it answers 200 and `condition`
    holds on the verdict object; returns the verdict."""

    def fetch() -> Optional[dict]:
        r = daemon.get_release(deployment_id, **params)
        return r.json() if r.status_code == 200 else {"status": r.status_code, "body": r.text}

    def ok(v: Optional[dict]) -> bool:
        return v is not None and "status" not in v and condition(v)

    return poll(fetch, ok, timeout=timeout, what=f"release {deployment_id!r}")


def counts(verdict: dict) -> tuple[int, int]:
    """(requests, errors) of a verdict's canary cohort."""
    return verdict["canary"]["requests"], verdict["canary"]["errors"]


# --- /metrics ---------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclasses.dataclass
class Scrape:
    """Samples of one /metrics scrape, by name and label set."""

    samples: dict[tuple[str, frozenset], float]

    @classmethod
    def parse(cls, text: str) -> "Scrape":
        samples: dict[tuple[str, frozenset], float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise ValueError(f"unparseable exposition line: {line!r}")
            name, labels, value = m.groups()
            label_set = frozenset(_LABEL.findall(labels or ""))
            samples[(name, label_set)] = float(value)
        return cls(samples)

    def get(self, name: str, default: Optional[float] = 0.0, **labels: str) -> Optional[float]:
        """The sample `name` with exactly these labels (absent counters are 0)."""
        return self.samples.get((name, frozenset(labels.items())), default)


# --- reading /proc ----------------------------------------------------------


def proc_status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status, such as VmHWM (peak RSS) or VmRSS."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


# --- a burst of distinct releases -------------------------------------------


@dataclasses.dataclass
class BurstResult:
    requests: int
    rejected_spans: int
    messages: list[str]
    seconds: float


def burst_requests(total: int, per_request: int, prefix: str, service: str = "burst") -> list[bytes]:
    """Serialized ExportTraceServiceRequests naming `total` distinct deployment
    ids, `per_request` per request, one SERVER span each. The identity is on
    the span attributes, the service on the resource (as SDKs put it)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    now = time.time_ns()
    bodies = []
    for start in range(0, total, per_request):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([kv("service.name", service), kv("deployment.environment.name", "prod")])
        ss = rs.scope_spans.add()
        ss.scope.name = "burst"
        for i in range(start, min(start + per_request, total)):
            ss.spans.append(
                Span(
                    trace_id=(i + 1).to_bytes(16, "big"),
                    span_id=(i + 1).to_bytes(8, "big"),
                    name="GET /",
                    kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=now,
                    end_time_unix_nano=now + 1_000_000,
                    attributes=[kv("deployment.id", f"{prefix}{i}"), kv("git.sha", "b" * 40)],
                )
            )
        bodies.append(req.SerializeToString())
    return bodies


def send_burst(http_addr: str, bodies: list[bytes]) -> BurstResult:
    """POSTs each body to /v1/traces as protobuf and sums the refusals: the
    partial successes, and the requests refused whole for want of room (503,
    to be retried later)."""
    from google.rpc import status_pb2
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    url = f"http://{http_addr}/v1/traces"
    rejected = 0
    messages = []
    started = time.monotonic()
    with requests.Session() as s:
        for body in bodies:
            r = s.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=30)
            if r.status_code == 503 and "retry-after" in r.headers:
                req = ExportTraceServiceRequest.FromString(body)
                rejected += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
                messages.append(status_pb2.Status.FromString(r.content).message)
                continue
            if r.status_code != 200:
                raise AssertionError(f"export answered {r.status_code}: {r.content[:500]!r}")
            resp = ExportTraceServiceResponse.FromString(r.content)
            if resp.HasField("partial_success"):
                rejected += resp.partial_success.rejected_spans
                if resp.partial_success.error_message:
                    messages.append(resp.partial_success.error_message)
    return BurstResult(
        requests=len(bodies),
        rejected_spans=rejected,
        messages=messages,
        seconds=time.monotonic() - started,
    )
