"""The daemon's own traces over OTLP (off by default): one daemon exports its
spans to another, which counts them like any telemetry."""

from __future__ import annotations

import requests

from harness import Scrape, poll


def test_own_traces_reach_an_otlp_endpoint(daemon_factory, unique):
    collector = daemon_factory()
    traced = daemon_factory(
        f'[telemetry]\notlp_endpoint = "http://{collector.grpc_addr}"\nservice_name = "rv-under-test"\n'
    )
    # Export requests to the traced daemon make it record "ingest traces" spans.
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "deployment.id", "value": {"stringValue": unique("self")}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000100000000",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    for _ in range(5):
        r = requests.post(f"{traced.http_url}/v1/traces", json=body, timeout=5)
        assert r.status_code == 200, r.text

    def accepted() -> float:
        text = requests.get(f"{collector.http_url}/metrics", timeout=5).text
        return Scrape.parse(text).get(
            "release_verdict_items_accepted_total", signal="spans", transport="grpc"
        )

    # the SDK's batch exporter flushes every few seconds
    poll(accepted, lambda n: n >= 5, timeout=20, interval=0.25, what="the traced daemon's spans arrive")
    # without a release id they are accepted, and ignored by the judge
    assert collector.releases() == []
