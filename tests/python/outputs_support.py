"""Support for test_outputs.py and test_alerting.py: test traffic, a real
Prometheus (and any Prometheus-style server) on loopback, Python gRPC stubs
generated from proto/, and small evaluators for what Argo Rollouts, Flagger
and Grafana do with the files in examples/.

Nothing here sleeps to wait for a result: waits poll until a condition
holds or a deadline passes (harness.poll).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from harness import REPO_ROOT, Daemon, Process, free_port, kv, launch, poll

EXAMPLES = REPO_ROOT / "examples"

# Verdicts within seconds: judge every 100 ms, green after 1 s and 300
# requests per cohort (the settings tests/live_verdict.rs uses).
FAST_CONFIG = """
[judge]
tick = "100ms"
epoch = "1s"
min_duration = "1s"
min_requests = 300
"""

SHA_STABLE = "1a2b3c4d5e6f1a2b3c4d5e6f1a2b3c4d5e6f1a2b"
SHA_CANARY = "2b5d9af02b5d9af02b5d9af02b5d9af02b5d9af0"


# --- OTLP test traffic ----------------------------------------------------------


def spans_request(
    service: str,
    environment: str,
    deployment_id: str,
    n: int,
    error_every: int = 0,
    sha: str = SHA_CANARY,
    seq: int = 0,
    role: str | None = None,
) -> bytes:
    """A serialized ExportTraceServiceRequest: `n` SERVER spans of one
    release, latencies 10..59 ms, every `error_every`-th with status ERROR;
    with `role`, the resource declares `deployment.role`."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(
        [
            kv("service.name", service),
            kv("deployment.environment.name", environment),
            kv("deployment.id", deployment_id),
            kv("git.sha", sha),
        ]
    )
    if role:
        rs.resource.attributes.append(kv("deployment.role", role))
    ss = rs.scope_spans.add()
    ss.scope.name = "release-verdict-tests"
    now = time.time_ns()
    for i in range(n):
        failed = error_every > 0 and i % error_every == 0
        ident = seq * 1_000_000 + i + 1
        ss.spans.append(
            Span(
                trace_id=ident.to_bytes(16, "big"),
                span_id=ident.to_bytes(8, "big"),
                name="GET /checkout",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=now,
                end_time_unix_nano=now + (10 + i % 50) * 1_000_000,
                status=Status(code=Status.STATUS_CODE_ERROR, message="boom") if failed else None,
            )
        )
    return req.SerializeToString()


def post_spans(session: requests.Session, daemon: Daemon, body: bytes) -> Any:
    """POSTs one protobuf export to /v1/traces; returns the decoded response."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    r = session.post(
        f"{daemon.http_url}/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert r.status_code == 200, f"export answered {r.status_code}: {r.content[:300]!r}"
    return ExportTraceServiceResponse.FromString(r.content)


def invalid_span_request(service: str) -> bytes:
    """A good span and one that ends before it starts: the second is refused
    through partial success (a request of bad spans only answers 400)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", service), kv("deployment.id", f"{service}-bad")])
    now = time.time_ns()
    for i, end in enumerate([now + 1_000_000, now - 1_000_000]):
        rs.scope_spans.add().spans.append(
            Span(
                trace_id=bytes([1, i + 1]) * 8,
                span_id=bytes([1, i + 1]) * 4,
                name="GET /",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=now,
                end_time_unix_nano=end,
            )
        )
    return req.SerializeToString()


# --- a real Prometheus ----------------------------------------------------------


def wait_ready(server: Process, ready_url: str, name: str) -> None:
    """Polls `ready_url` until 200; stops the server and fails if it exits or never is."""

    def ready() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"{name} exited {server.proc.returncode}:\n{server.log()}")
        return requests.get(ready_url, timeout=2).status_code == 200

    try:
        poll(ready, bool, timeout=20, interval=0.1, what=f"{name} ready")
    except BaseException:
        server.stop()
        raise


@dataclasses.dataclass
class Server(Process):
    """A Prometheus-style server (Prometheus, Alertmanager) on loopback."""

    addr: str  # host:port


def start_server(cls: type, workdir: Path, program: str, name: str, config: dict, flags: list[str]) -> Any:
    """Starts Debian's `program` in `workdir` on a free loopback port, with
    `config` as workdir/<name>.yml and `flags`, and waits for its
    /-/ready; returns it as a `cls` (a `Server`)."""
    binary = shutil.which(program)
    assert binary, f"{program} is not installed (tests/setup installs it)"
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{name}.yml"
    config_path.write_text(yaml.safe_dump(config))
    addr = f"127.0.0.1:{free_port()}"
    argv = [binary, f"--config.file={config_path}", f"--web.listen-address={addr}", *flags]
    proc, log_path = launch(workdir, name, argv)
    server = cls(proc=proc, log_path=log_path, addr=addr)
    wait_ready(server, f"http://{addr}/-/ready", name)
    return server


@dataclasses.dataclass
class Prometheus(Server):
    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def api(self, path: str, **params: Any) -> Any:
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {r.status_code} {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's samples (a vector; a scalar as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "vector":
            return data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        raise AssertionError(f"{expr}: unexpected result type {data['resultType']}")


def start_prometheus(
    workdir: Path, target: str, rule_files: list[Path], alertmanager: str | None = None
) -> Prometheus:
    """Starts Debian's `prometheus` on a free loopback port, scraping `target`
    every second and evaluating `rule_files` every second; alerts go to the
    Alertmanager at `alertmanager` (host:port) when given."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": "release-verdict", "static_configs": [{"targets": [target]}]},
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    flags = [f"--storage.tsdb.path={workdir / 'data'}", "--web.enable-lifecycle"]
    return start_server(Prometheus, workdir, "prometheus", "prometheus", config, flags)


# --- PromQL in examples/ ----------------------------------------------------------


@dataclasses.dataclass
class Expr:
    where: str  # which file and place, for messages
    expr: str


def substitute(text: str, values: dict[str, str]) -> str:
    """Replaces Argo `{{args.x}}`, Flagger `{{ x }}` and Grafana `$x` /
    `${x}` placeholders by `values`; fails on one left over."""
    for key, value in values.items():
        text = re.sub(r"\{\{\s*" + re.escape(key) + r"\s*\}\}", value, text)
        text = text.replace("${" + key + "}", value)
        text = re.sub(r"\$" + re.escape(key) + r"\b", value, text)
    leftover = re.search(r"\{\{[^}]*\}\}|\$\{?[A-Za-z_]\w*", text)
    assert not leftover, f"unsubstituted placeholder {leftover.group(0)!r} in {text!r}"
    return text


def argo_prometheus_template() -> dict:
    return yaml.safe_load((EXAMPLES / "argo-analysistemplate-prometheus.yaml").read_text())


def flagger_template() -> dict:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "flagger-metrictemplate.yaml").read_text()) if d]
    (template,) = [d for d in docs if d.get("kind") == "MetricTemplate"]
    return template


def rule_exprs() -> list[Expr]:
    rules = yaml.safe_load((EXAMPLES / "prometheus-rules.yaml").read_text())
    return [
        Expr(f"prometheus-rules.yaml {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def dashboard() -> dict:
    return json.loads((EXAMPLES / "grafana-dashboard.json").read_text())


def dashboard_exprs() -> list[Expr]:
    """Every panel target and annotation query of the dashboard."""
    d = dashboard()
    out = []
    for panel in d["panels"]:
        for t in panel.get("targets", []):
            out.append(Expr(f"dashboard panel {panel['title']!r} {t['refId']}", t["expr"]))
    for a in d["annotations"]["list"]:
        if "expr" in a:
            out.append(Expr(f"dashboard annotation {a['name']!r}", a["expr"]))
    return out


def dashboard_variable_queries() -> list[tuple[str, str, str]]:
    """(variable, metric selector, label) of each `label_values(sel, label)`."""
    out = []
    for v in dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
        assert m, f"variable {v['name']}: unexpected query {q!r}"
        out.append((v["name"], m.group(1), m.group(2)))
    return out


# --- Argo Rollouts' evaluation of a measurement ------------------------------------


def json_path(expr: str, document: Any) -> Any:
    """The k8s JSONPath subset Argo's web provider templates use: `{$.a.b}`."""
    m = re.fullmatch(r"\{\$((?:\.[A-Za-z_][\w-]*)*)\}", expr.strip())
    assert m, f"unsupported jsonPath {expr!r}"
    value = document
    for key in filter(None, m.group(1).split(".")):
        value = value[key]
    return value


def argo_condition(condition: str, result: Any) -> bool:
    """Evaluates an Argo success/failure condition over `result`: the
    expr-language subset the examples use (==, &&, ||, len(), indexing)."""
    python = condition.replace("&&", " and ").replace("||", " or ")
    assert re.fullmatch(r'[\sA-Za-z0-9_\[\]()."=<>!+-]+', python), f"unsupported condition {condition!r}"
    return bool(eval(python, {"__builtins__": {}}, {"result": result, "len": len}))  # noqa: S307


def argo_phase(metric: dict, result: Any) -> str:
    """A measurement's phase as Argo Rollouts assesses it."""
    if argo_condition(metric["failureCondition"], result):
        return "Failed"
    if argo_condition(metric["successCondition"], result):
        return "Successful"
    return "Inconclusive"


# --- gRPC stubs from proto/ -------------------------------------------------------


def generate_stubs(out: Path) -> tuple[Any, Any]:
    """Runs grpcio-tools' protoc on proto/ into `out`; returns (pb2, pb2_grpc)."""
    import grpc_tools
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{REPO_ROOT / 'proto'}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "release_verdict/v1/verdict.proto",
        ]
    )
    assert rc == 0, f"protoc exited {rc}"
    sys.path.insert(0, str(out))
    importlib.invalidate_caches()
    pb2 = importlib.import_module("release_verdict.v1.verdict_pb2")
    pb2_grpc = importlib.import_module("release_verdict.v1.verdict_pb2_grpc")
    return pb2, pb2_grpc


def proto_json(message: Any) -> dict:
    """The proto3 JSON mapping of a message, with json_name field names and
    every field without presence printed (as the HTTP API prints them)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def differences(http: Any, grpc_json: Any, path: str = "$") -> list[str]:
    """Where the gRPC message's JSON differs from the HTTP JSON. JSON null in
    HTTP is an unset optional or message field in proto; 64-bit integers are
    strings in the proto3 JSON mapping."""
    out: list[str] = []
    if isinstance(http, dict):
        if not isinstance(grpc_json, dict):
            return [f"{path}: HTTP has an object, gRPC {grpc_json!r}"]
        for key, value in http.items():
            if value is None:
                if grpc_json.get(key) is not None:
                    out.append(f"{path}.{key}: HTTP null, gRPC {grpc_json[key]!r}")
            elif key not in grpc_json:
                out.append(f"{path}.{key}: missing in gRPC (HTTP {value!r})")
            else:
                out.extend(differences(value, grpc_json[key], f"{path}.{key}"))
        for key in grpc_json.keys() - http.keys():
            out.append(f"{path}.{key}: only in gRPC ({grpc_json[key]!r})")
    elif isinstance(http, list):
        if not isinstance(grpc_json, list) or len(http) != len(grpc_json):
            return [f"{path}: HTTP {len(http)} items, gRPC {grpc_json!r}"]
        for i, (a, b) in enumerate(zip(http, grpc_json)):
            out.extend(differences(a, b, f"{path}[{i}]"))
    elif isinstance(http, bool):
        if http is not grpc_json:
            out.append(f"{path}: HTTP {http!r}, gRPC {grpc_json!r}")
    elif isinstance(http, int):
        try:
            same = int(grpc_json) == http
        except (TypeError, ValueError):
            same = False
        if not same:
            out.append(f"{path}: HTTP {http!r}, gRPC {grpc_json!r}")
    elif isinstance(http, float):
        if not isinstance(grpc_json, (int, float)) or float(grpc_json) != http:
            out.append(f"{path}: HTTP {http!r}, gRPC {grpc_json!r}")
    elif http != grpc_json:
        out.append(f"{path}: HTTP {http!r}, gRPC {grpc_json!r}")
    return out


def without(verdict: dict, *keys: str) -> dict:
    return {k: v for k, v in verdict.items() if k not in keys}

