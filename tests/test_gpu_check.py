"""The GPU check script (#22) runs end to end in its --dry-run form on CPU, so the day a GPU
machine is lent it is one command, already known to work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.integration
def test_gpu_check_dry_run_writes_one_json_of_figures(tmp_path: Path) -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["dry_run"] is True
    by_kind: dict[str, list[dict[str, object]]] = {}
    for r in figures["results"]:
        by_kind.setdefault(str(r["bench"]), []).append(r)
    assert by_kind["tests"][0]["status"] == "passed"
    assert {r["io_binding"] for r in by_kind["scoring_throughput"]} == {"auto", "always"}
    assert by_kind["e2e"][0]["worker_events_per_s"] > 0
    assert "CPUExecutionProvider" in by_kind["ort"][0]["available"]
