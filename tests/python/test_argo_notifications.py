"""examples/argo-rollouts-notifications.yaml against the real daemon: each
webhook template, rendered as Argo Rollouts' notifications engine renders it
(Go templates over the Rollout), is a body `POST /api/v1/events` records,
once however often the controller sends it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests
import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "argo-rollouts-notifications.yaml"

# The two Go-template actions the example uses: a field path, and `index`
# of a map by a quoted key.
FIELD = re.compile(r"\{\{\s*(\.[\w.]+)\s*\}\}")
INDEX = re.compile(r'\{\{\s*index\s+(\.[\w.]+)\s+"([^"]+)"\s*\}\}')


def lookup(obj: dict, path: str):
    for part in path.strip(".").split("."):
        obj = obj[part]
    return obj


def render(template: str, context: dict) -> str:
    text = INDEX.sub(lambda m: str(lookup(context, m.group(1))[m.group(2)]), template)
    text = FIELD.sub(lambda m: str(lookup(context, m.group(1))), text)
    assert "{{" not in text, f"an action the renderer does not know is left in {text!r}"
    return text


def rollout(deployment_id: str) -> dict:
    return {"rollout": {
        "metadata": {"name": "checkout", "namespace": "prod", "uid": "5c1f0c9e-7d1a-4f0e-9a53-2f1d3b0c4e11"},
        "spec": {"template": {"metadata": {"labels": {
            "app.kubernetes.io/name": "checkout",
            "release-verdict.io/deployment-id": deployment_id,
            "release-verdict.io/git-sha": "2b5d9af",
        }}}},
        "status": {"currentPodHash": "6d4f8b7c9", "message": "RolloutCompleted"},
    }}


def test_the_argo_notification_templates_post_ledger_events(daemon_factory, unique):
    config = yaml.safe_load(EXAMPLE.read_text())
    data = config["data"]
    service = yaml.safe_load(data["service.webhook.release-verdict"])
    headers = {h["name"]: h["value"] for h in service["headers"]}
    triggers = {name: yaml.safe_load(body)[0]["send"] for name, body in data.items() if name.startswith("trigger.")}
    want = {
        "trigger.on-rollout-updated": "deploy_started",
        "trigger.on-rollout-completed": "promoted",
        "trigger.on-rollout-aborted": "rolled_back",
    }
    assert set(triggers) == set(want)
    d = daemon_factory('[ledger]\npath = ":memory:"\n')
    for trigger, kind in want.items():
        deployment_id = unique("checkout")
        ours = [t for t in triggers[trigger] if t.startswith("release-verdict-")]
        assert len(ours) == 1 and len(triggers[trigger]) == 2, triggers[trigger]
        webhook = yaml.safe_load(data[f"template.{ours[0]}"])["webhook"]["release-verdict"]
        body = render(webhook["body"], rollout(deployment_id))
        json.loads(body)  # valid JSON once rendered
        url = service["url"].replace("http://release-verdict.observability.svc:4318", d.http_url)
        for status in ["inserted", "duplicate"]:  # the controller may send twice
            r = requests.request(webhook["method"], url + webhook["path"], data=body, headers=headers, timeout=5)
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["status"] == status, r.text
        events = requests.get(f"{d.http_url}/api/v1/events", params={"deployment_id": deployment_id}, timeout=5).json()["events"]
        assert [(e["type"], e["source"], e["service"], e["environment"], e["git_sha"]) for e in events] == [
            (kind, "api", "checkout", "prod", "2b5d9af")
        ], events
        assert events[0]["metadata"]["rollout"] == "checkout"
