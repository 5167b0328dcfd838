"""Model versions for tests: the packaged artifact under another version id.

Only ``model.json`` changes (it is not among the hashed files), so the copy is a valid,
verified artifact; a different global threshold makes its decisions differ. ``with_tree``
also swaps in a tree part whose training reference the test holds.

``WINDOW_ARTIFACT`` is the window-architecture model that was packaged before the
incremental one (trained, with its tree and cases): the tests of what only the window
model does (its encoder's inputs, the cache refresh after publishing) use it, and it
keeps that architecture's artifacts served.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from scoring.artifact import DEFAULT_ARTIFACT
from scoring.served_decision import Combination

WINDOW_ARTIFACT = Path(__file__).resolve().parent / "fixtures" / "window_artifact"


def make_version(
    folder: Path,
    version: str,
    global_threshold: float | None = None,
    source: Path = DEFAULT_ARTIFACT,
) -> Path:
    """A copy of the packaged artifact (or ``source``) named ``version`` (optionally
    another threshold)."""
    out = folder / version
    shutil.copytree(source, out)
    manifest_path = out / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model_version"] = version
    if global_threshold is not None:
        manifest["thresholds"]["global"] = global_threshold
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def with_tree(
    folder: Path, version: str, combination: Combination, width: int | None = None
) -> tuple[Path, Any]:
    """A copy of the packaged artifact whose served decision uses a small LightGBM tree
    trained here on synthetic inputs (``width`` columns, default the spec's), with the
    given combination; returns the folder and the classifier (the training reference)."""
    from features.tree_inputs import CATEGORICAL, tree_width
    from models.baseline import export_tree, fit_baseline
    from scoring.artifact import MANIFEST_FILE, TREE_FILE, load_artifact, write_manifest

    out = make_version(folder, version)
    spec = load_artifact(out).spec
    n = 3000
    rng = np.random.default_rng(0)
    cols = tree_width(spec.entity) if width is None else width
    x = rng.normal(size=(n, cols)).astype(np.float32)
    x[:, CATEGORICAL[0]] = rng.integers(0, spec.n_mcc, n)
    x[:, CATEGORICAL[1]] = rng.integers(0, 5, n)
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 1.5).astype(int)
    clf = fit_baseline(x, y, np.ones(n), seed=0, threads=1)
    if width is None:
        onx = export_tree(clf, spec.entity)
    else:  # a deliberately mismatched graph: converted at the given width
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        onx = convert_lightgbm(
            clf,
            initial_types=[("tree_features", FloatTensorType([None, width]))],
            zipmap=False,
            target_opset=15,
        ).SerializeToString()
    (out / TREE_FILE).write_bytes(onx)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["served"] = combination.to_json()
    manifest.pop("files", None)
    manifest.pop("format", None)
    write_manifest(out, manifest)
    return out, clf


def incremental_version(folder: Path, version: str, max_history: int = 256, seed: int = 0) -> Path:
    """An incremental-architecture artifact (``models.incremental_network``) with the
    packaged artifact's feature spec, untrained (seeded): for serving-path tests, which
    compare the model with itself. ``max_history`` large enough that no test card's
    window slides keeps a rebuilt state exactly equal to the live one."""
    import dataclasses

    import torch

    from features.entity_profile import N_ENTITY
    from features.featurize import N_CHANNELS, N_NUMERIC
    from models.export import write_artifact
    from models.incremental_network import IncrementalConfig, IncrementalRiskModel
    from models.network import NetworkConfig
    from scoring.artifact import load_artifact

    packaged = load_artifact()
    spec = dataclasses.replace(packaged.spec, max_history=max_history)
    torch.manual_seed(seed)
    cfg = NetworkConfig(N_NUMERIC, spec.n_mcc, N_CHANNELS, n_entity=N_ENTITY if spec.entity else 0)
    model = IncrementalRiskModel(cfg, IncrementalConfig(band=4)).eval()
    out = folder / version
    write_artifact(model, spec, out, threshold=packaged.global_threshold)
    return out
