"""Bearer tokens with the real OpenTelemetry Python SDK: the token set the
standard way, in OTEL_EXPORTER_OTLP_HEADERS, is sent over gRPC and HTTP and
the spans are counted; without it the daemon answers 401 / UNAUTHENTICATED
and the exporter reports the export as failed.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from harness import counts, poll_release
from otel import export_server_spans, release_resource, span_exporter


def export(daemon, transport: str, resource, n: int) -> list:
    return export_server_spans(span_exporter(daemon, transport), resource, n, "auth-test")


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_sdk_sends_its_token_from_the_environment(daemon_factory, tmp_path, unique, monkeypatch, transport):
    tokens = tmp_path / "ingest.tokens"
    tokens.write_text("# the collectors\nsdk-token-7f3a\n")
    d = daemon_factory(f'[auth]\ningest_tokens_file = "{tokens}"\n')
    deployment = unique("checkout")
    resource = release_resource("checkout", deployment)

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS", raising=False)
    refused = export(d, transport, resource, 3)
    assert refused and all(r == SpanExportResult.FAILURE for r in refused), refused

    # The spec's form: comma-separated key=value, values URL-encoded.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20sdk-token-7f3a")
    sent = export(d, transport, resource, 5)
    assert sent and all(r == SpanExportResult.SUCCESS for r in sent), sent
    v = poll_release(d, deployment, lambda v: counts(v) == (5, 0))
    assert counts(v) == (5, 0), "only the spans sent with the token count"
    refusals = d.metrics().get(
        "release_verdict_export_requests_refused_total", None, signal="spans", reason="unauthenticated", transport=transport
    )
    assert refusals == 3, refusals
