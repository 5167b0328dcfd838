"""Model versions for roll-out tests: the packaged artifact under another version id.

Only ``model.json`` changes (it is not among the hashed files), so the copy is a valid,
verified artifact; a different global threshold makes its decisions differ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from scoring.artifact import DEFAULT_ARTIFACT


def make_version(folder: Path, version: str, global_threshold: float | None = None) -> Path:
    """A copy of the packaged artifact named ``version`` (optionally another threshold)."""
    out = folder / version
    shutil.copytree(DEFAULT_ARTIFACT, out)
    manifest_path = out / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model_version"] = version
    if global_threshold is not None:
        manifest["thresholds"]["global"] = global_threshold
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out
