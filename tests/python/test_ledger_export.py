"""`release-verdict ledger export` read by DuckDB: the second seed article's
change-failure-rate query, run on the exported Parquet file, gives the
figures `/api/v1/dora` gives.

Run on both databases: a SQLite file, and a real PostgreSQL (the export
then reads the config's [ledger] url). The ledger holds a real canary driven red by the OpenTelemetry SDK (the
daemon's own release_started and canary_failed events) and two earlier days
of releases posted as a CI pipeline would (deploy_started, rolled_back,
incident_started, canary_failed). The export runs beside the live daemon.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import duckdb
import pytest
import requests
from opentelemetry.trace import SpanKind

from harness import daemon_binary, poll
from otel import release_resource, send_spans

CONFIG = """
[ledger]
path = "ledger.db"
[baseline]
settle = "1s"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def config(request) -> str:
    """CONFIG on each database: the file beside the daemon, or a fresh
    PostgreSQL database (the export reads the same [ledger] url)."""
    if request.param == "sqlite":
        return CONFIG
    url = request.getfixturevalue("postgres").database("export")
    return CONFIG.replace('path = "ledger.db"', f'url = "{url}"')

# The seed's query (BigQuery dialect there), on our event types: a release
# failed if it went red, was rolled back or caused an incident.
SEED_CFR = """
WITH totals AS (
  SELECT DATE(ts) AS d, COUNT(DISTINCT deployment_id) AS total
  FROM events WHERE type IN ('release_started', 'deploy_started')
    AND service = $service AND environment = 'prod'
  GROUP BY d
),
failures AS (
  SELECT DATE(ts) AS d, COUNT(DISTINCT deployment_id) AS failed
  FROM events WHERE type IN ('rolled_back', 'canary_failed', 'incident_started')
    AND service = $service AND environment = 'prod'
  GROUP BY d
)
SELECT t.d, coalesce(failed, 0) / NULLIF(total, 0) AS cfr
FROM totals t LEFT JOIN failures f USING (d)
ORDER BY t.d DESC
"""


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def posted_days(service: str, today: dt.datetime) -> list[dict]:
    """Day -2: five releases, one rolled back, one with an incident. Day -1:
    four releases, one red then rolled back."""
    events = []

    def post(kind: str, at: dt.datetime, deployment: str) -> None:
        events.append({"type": kind, "ts": iso(at), "service": service, "environment": "prod",
                       "deployment_id": deployment, "git_sha": deployment[-7:]})

    for day, count, failures in [(2, 5, {1: ["rolled_back"], 3: ["incident_started"]}),
                                 (1, 4, {2: ["canary_failed", "rolled_back"]})]:
        for i in range(count):
            start = today - dt.timedelta(days=day) + dt.timedelta(hours=2 * i + 1)
            deployment = f"{service}-d{day}r{i}"
            post("deploy_started", start, deployment)
            kinds = failures.get(i, ["promoted"])
            for k, kind in enumerate(kinds):
                post(kind, start + dt.timedelta(minutes=10 * (k + 1)), deployment)
    return events


def test_duckdb_runs_the_seed_cfr_query_on_the_export(daemon_factory, tmp_path: Path, unique, config):
    service = unique("shop")
    d = daemon_factory(config)
    # Today: a real canary goes red against its stable version.
    stable, canary = unique("stable"), unique("canary")
    ok, failed = (SpanKind.SERVER, "ok"), (SpanKind.SERVER, "http_500")

    def round_of_traffic():
        send_spans(d, "grpc", release_resource(service, stable), [ok] * 100)
        send_spans(d, "grpc", release_resource(service, canary), [ok] * 10 + [failed] * 10)
        return d.get_release(canary).json()

    poll(round_of_traffic, lambda v: v.get("verdict") == "red", timeout=30, interval=0.2, what="a red canary")
    now = dt.datetime.now(dt.timezone.utc)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    r = requests.post(f"{d.http_url}/api/v1/events", json={"events": posted_days(service, today)}, timeout=10)
    assert r.status_code == 200, r.text

    def ledger_events() -> list[dict]:
        out, cursor = [], None
        while True:
            params = {"limit": "1000", **({"cursor": str(cursor)} if cursor else {})}
            page = requests.get(f"{d.http_url}/api/v1/events", params=params, timeout=5).json()
            out += page["events"]
            cursor = page.get("next_cursor")
            if cursor is None:
                return out

    # The daemon's own events are written off the judge's path.
    listed = poll(ledger_events, lambda es: any(e["type"] == "canary_failed" and e["deployment_id"] == canary for e in es),
                  what="the canary_failed event")

    parquet = tmp_path / "events.parquet"
    export = subprocess.run(
        [str(daemon_binary()), "ledger", "export", "--config", "config.toml", "--format", "parquet",
         "--output", str(parquet)],
        cwd=d.workdir, capture_output=True, text=True, timeout=60,
    )
    assert export.returncode == 0, export.stderr
    jsonl = subprocess.run(
        [str(daemon_binary()), "ledger", "export", "--config", "config.toml", "--format", "jsonl"],
        cwd=d.workdir, capture_output=True, text=True, timeout=60,
    )
    assert jsonl.returncode == 0, jsonl.stderr

    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    db.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{parquet}')")
    # Every event at the time of the export is in the file, as the API lists them.
    exported = db.execute("SELECT id, type, deployment_id, source FROM events ORDER BY id").fetchall()
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [row[0] for row in exported] == [e["id"] for e in lines]
    listed_ids = {e["id"] for e in listed}
    assert listed_ids <= {row[0] for row in exported}
    assert ("canary_failed", canary, "daemon") in {row[1:] for row in exported}
    metadata = db.execute(
        "SELECT json_extract_string(metadata, '$.baseline_deployment_id') FROM events "
        "WHERE type = 'canary_failed' AND deployment_id = $id", {"id": canary}).fetchone()
    assert metadata == (stable,)

    by_day = db.execute(SEED_CFR, {"service": service}).fetchall()
    assert len(by_day) == 3, by_day
    dora = requests.get(f"{d.http_url}/api/v1/dora", timeout=10, params={
        "service": service, "environment": "prod", "bucket": "day",
        "since": iso(today - dt.timedelta(days=2)), "until": iso(today + dt.timedelta(days=1)),
    }).json()["dora"][0]
    api_by_day = {b["since"][:10]: b["change_failure_rate"] for b in dora["buckets"]}
    for day, cfr in by_day:
        assert api_by_day[day.isoformat()] == float(cfr), (day, cfr, api_by_day)
    assert [float(c) for _, c in by_day] == [0.5, 0.25, 0.4], "stable and a red canary; 1 of 4; 2 of 5"
    # The whole window: 11 releases, 4 failed.
    assert dora["releases_started"] == 11 and dora["failed_releases"] == 4, dora
