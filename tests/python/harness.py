"""Starting the real release-verdict binary and talking to it.

Shared by conftest.py (the pytest fixtures), every test module and the
benches in benches/, so that they start the daemon the same way: `Process`
is any server a test starts (one `stop`), `Daemon` the release-verdict one,
and `Daemons` the one launch path of the tests, which checks every daemon
when it stops (exit code 0 after SIGTERM, no panic in its log). Also here:
free ports, the JSON API, /metrics parsing and OTLP protobuf bursts. Nothing
here sleeps to wait for a result: every wait polls until a condition holds
or a deadline passes, and says what it last saw when the deadline passes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
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


# --- processes ------------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port free at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Process:
    """A server process the tests started (see `launch`): its log, and a
    stop that waits for it."""

    proc: subprocess.Popen
    log_path: Path

    @property
    def workdir(self) -> Path:
        """The directory it runs in, which holds its log."""
        return self.log_path.parent

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for it to exit, return the exit code. One that
        outlives `timeout` is killed and fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"{self.log_path.stem} did not exit within {timeout}s of SIGTERM; log:\n{self.log()}"
                )
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL, as a crash would; returns once it is gone."""
        self.proc.kill()
        return self.proc.wait(timeout=10)

    def await_log(self, pattern: re.Pattern, timeout: float, interval: float = 0.02) -> re.Match:
        """Polls the log until `pattern` matches and returns the match. Fails
        if the process exits first; kills it if the deadline passes."""

        def seen() -> Optional[re.Match]:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.log_path.stem} exited with {self.proc.returncode}:\n{self.log()}")
            return pattern.search(self.log())

        try:
            return poll(seen, bool, timeout=timeout, interval=interval, what=f"{self.log_path.stem} logging {pattern.pattern!r}")
        except AssertionError as e:
            if self.proc.poll() is not None:
                raise  # it exited: `seen` said so, with the log
            self.kill()
            raise AssertionError(f"{e}; log:\n{self.log()}") from None


def launch(
    workdir: Path, name: str, argv: list[str], env: Optional[dict[str, str]] = None
) -> tuple[subprocess.Popen, Path]:
    """Starts `argv` in `workdir` (with `env`, else this process's
    environment), its output to `workdir/<name>.log` (`<name>.2.log` and so
    on for a restart in the same directory, so that each process keeps its
    own log); returns the process and the log's path, to build a `Process`
    (or a subclass) from."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    n = 1
    while log_path.exists():
        n += 1
        log_path = workdir / f"{name}.{n}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=workdir)
    return proc, log_path


# --- the daemon ------------------------------------------------------------------


@dataclasses.dataclass
class Daemon(Process):
    """A running daemon: its addresses, its process and its log file."""

    grpc_addr: str  # host:port, as the OTLP/gRPC exporter wants it
    http_addr: str  # host:port
    # Set by `kill`: the test crashed it on purpose, so no exit code is due.
    killed: bool = False

    @property
    def http_url(self) -> str:
        return f"http://{self.http_addr}"

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

    def kill(self) -> int:
        """SIGKILL on purpose (a crash test): `stop_and_check` then expects
        no exit code, only a log without a panic."""
        self.killed = True
        return super().kill()

    def stop_and_check(self) -> None:
        """Stops the daemon (SIGTERM) and fails unless it exited 0 (any code
        after `kill`) and its log has no panic."""
        code = self.stop()
        if not self.killed:
            assert code == 0, f"daemon exited {code} after SIGTERM; log:\n{self.log()}"
        assert "panicked" not in self.log(), f"daemon panicked; log:\n{self.log()}"


def start_daemon(
    workdir: Path,
    config: str = "",
    binary: Optional[Path] = None,
    startup_timeout: float = 15.0,
    env: Optional[dict[str, str]] = None,
    grpc_listen: Optional[str] = "127.0.0.1:0",
    http_listen: Optional[str] = "127.0.0.1:0",
) -> Daemon:
    """Writes `config` to workdir/config.toml, starts `serve` (on port 0
    unless told the addresses, as a restart on the same ports is; None
    passes no flag, so the config's [server] addresses hold) and waits for
    the log line that names the bound addresses.

    Tests start daemons through `Daemons` (conftest's fixtures), which
    checks each one when it stops; the benches call this directly."""
    binary = binary or daemon_binary()
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} does not exist; run `cargo build` first")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.toml"
    config_path.write_text(config)
    proc_env = dict(os.environ)
    proc_env.setdefault("RUST_LOG", "info")
    proc_env.update(env or {})
    argv = [str(binary), "serve", "--config", str(config_path)]
    if grpc_listen is not None:
        argv += ["--grpc-listen", grpc_listen]
    if http_listen is not None:
        argv += ["--http-listen", http_listen]
    # Relative paths in the config (the ledger's) stay inside workdir.
    proc, log_path = launch(workdir, "release-verdict", argv, env=proc_env)
    starting = Process(proc, log_path)
    m = starting.await_log(LISTENING, timeout=startup_timeout)
    return Daemon(proc=proc, log_path=log_path, grpc_addr=m.group(1), http_addr=m.group(2))


class Daemons:
    """The one way tests start the daemon: each `start` launches one, and
    `close` (or leaving `with`) stops every one started and checks it (see
    `Daemon.stop_and_check`), stopping the others even when one fails."""

    def __init__(self, root: Path):
        self.root = root
        self.started: list[Daemon] = []

    def start(self, config: str = "", *, workdir: Optional[Path] = None, **kwargs: Any) -> Daemon:
        """A daemon in `workdir` (a restart passes the earlier one's, to
        keep its ledger), else in a fresh directory under the root.
        `kwargs` go to `start_daemon` (env, grpc_listen, http_listen)."""
        workdir = workdir or self.root / f"daemon{len(self.started)}"
        d = start_daemon(workdir, config=config, **kwargs)
        self.started.append(d)
        return d

    def close(self) -> None:
        problems = []
        for d in self.started:
            try:
                d.stop_and_check()
            except AssertionError as e:
                problems.append(str(e))
        self.started.clear()
        assert not problems, "\n\n".join(problems)

    def __enter__(self) -> "Daemons":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


# --- OTLP protobuf ----------------------------------------------------------


def kv(key: str, value: str) -> Any:
    """A string attribute: an OTLP KeyValue."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    return KeyValue(key=key, value=AnyValue(string_value=value))


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
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

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
