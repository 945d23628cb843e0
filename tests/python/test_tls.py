"""TLS with the real OpenTelemetry Python SDK, configured the standard way
(OTEL_EXPORTER_OTLP_CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY,
_HEADERS): over gRPC and HTTP the spans sent with the CA and the token are
counted, and an export without the token, or without a client certificate
where mutual TLS is on, is reported failed by the exporter.
"""

from __future__ import annotations

import pytest
import requests
import trustme
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from harness import Scrape, counts, poll
from otel import export_server_spans, recording, release_resource

TOKEN = "tls-token-51c9"


def certificates(tmp_path):
    """A CA, the daemon's certificate for 127.0.0.1, and a client's."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("exporter@example.com")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "client_cert": tmp_path / "client.pem",
        "client_key": tmp_path / "client.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    # The chain, leaf first.
    paths["cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    paths["client_cert"].write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    return paths


def tls_daemon(daemon_factory, tmp_path, mutual: bool):
    paths = certificates(tmp_path)
    tokens = tmp_path / "ingest.tokens"
    tokens.write_text(TOKEN + "\n")
    client_ca = f'client_ca_file = "{paths["ca"]}"\n' if mutual else ""
    d = daemon_factory(
        f'[server.tls]\ncert_file = "{paths["cert"]}"\nkey_file = "{paths["key"]}"\n{client_ca}'
        f'[auth]\ningest_tokens_file = "{tokens}"\n'
    )
    return d, paths


def trust_only_the_test_ca(monkeypatch, paths) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(paths["ca"]))
    # requests lets these override a session's own CA file (requests#3829),
    # which is how the HTTP exporter passes OTEL_EXPORTER_OTLP_CERTIFICATE.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def export(daemon, transport: str, resource, n: int) -> list:
    """Exports n SERVER spans with the exporter configured by the environment."""
    if transport == "grpc":
        exporter = recording(GrpcSpanExporter)(endpoint=f"https://{daemon.grpc_addr}", timeout=3)
    else:
        exporter = recording(HttpSpanExporter)(endpoint=f"https://{daemon.http_addr}/v1/traces", timeout=3)
    return export_server_spans(exporter, resource, n, "tls-test")


def get(daemon, paths, path: str, mutual: bool) -> requests.Response:
    cert = (str(paths["client_cert"]), str(paths["client_key"])) if mutual else None
    return requests.get(f"https://{daemon.http_addr}{path}", verify=str(paths["ca"]), cert=cert, timeout=5)


def counted(daemon, paths, deployment: str, mutual: bool) -> tuple[int, int]:
    r = get(daemon, paths, f"/api/v1/releases/{deployment}", mutual)
    return counts(r.json()) if r.status_code == 200 else (0, 0)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_sdk_exports_over_tls_with_its_token(daemon_factory, tmp_path, unique, monkeypatch, transport):
    d, paths = tls_daemon(daemon_factory, tmp_path, mutual=False)
    deployment = unique("checkout")
    resource = release_resource("checkout", deployment)
    trust_only_the_test_ca(monkeypatch, paths)

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS", raising=False)
    refused = export(d, transport, resource, 2)
    assert refused and all(r == SpanExportResult.FAILURE for r in refused), refused

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{TOKEN}")
    sent = export(d, transport, resource, 6)
    assert sent and all(r == SpanExportResult.SUCCESS for r in sent), sent
    assert poll(lambda: counted(d, paths, deployment, False), lambda c: c == (6, 0)) == (6, 0)
    scrape = Scrape.parse(get(d, paths, "/metrics", False).text)
    refusals = scrape.get(
        "release_verdict_export_requests_refused_total", None, signal="spans", reason="unauthenticated", transport=transport
    )
    assert refusals == 2, refusals


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_mutual_tls_takes_the_sdk_with_a_client_certificate(daemon_factory, tmp_path, unique, monkeypatch, transport):
    d, paths = tls_daemon(daemon_factory, tmp_path, mutual=True)
    deployment = unique("payments")
    resource = release_resource("payments", deployment)
    trust_only_the_test_ca(monkeypatch, paths)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{TOKEN}")

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", raising=False)
    refused = export(d, transport, resource, 1)
    assert refused and all(r == SpanExportResult.FAILURE for r in refused), refused

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(paths["client_cert"]))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(paths["client_key"]))
    sent = export(d, transport, resource, 4)
    assert sent and all(r == SpanExportResult.SUCCESS for r in sent), sent
    assert poll(lambda: counted(d, paths, deployment, True), lambda c: c == (4, 0)) == (4, 0)
