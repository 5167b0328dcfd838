"""Model artifacts: a folder with the ONNX graphs and ``model.json`` (no torch here).

``model.json`` records the model version, creation time, feature spec (vocabulary and
normalization statistics), network config, opset, thresholds, metrics and the sha256
of every file. ``load_artifact`` verifies each hash before anything is parsed by ONNX
Runtime: a tampered or half-copied artifact is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.errors import RiskstreamError
from features.featurize import FeatureSpec
from scoring.served_decision import Combination

FORMAT_VERSION = 1
ENCODER_FILE = "encoder.onnx"
HEAD_FILE = "head.onnx"
MANIFEST_FILE = "model.json"
FRAUD_CASES_FILE = "fraud_cases.npz"
#: the tree part of the served decision (optional: older artifacts serve the network alone)
TREE_FILE = "tree.onnx"
#: the incremental model's whole-window rebuild (optional: older artifacts step instead)
REBUILD_FILE = "rebuild.onnx"
# shipped as package data of ``models`` (data only: no training code is imported)
DEFAULT_ARTIFACT = Path(__file__).resolve().parent.parent / "models" / "default_artifact"


class ArtifactError(RiskstreamError):
    """The model artifact is missing, tampered with, or does not match this build."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelArtifact:
    """A verified artifact on disk."""

    path: Path
    manifest: dict[str, Any]
    spec: FeatureSpec
    #: how the served logit is made from the parts' logits (parsed once, at load)
    combination: Combination = field(default_factory=Combination)

    @property
    def version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def encoder_path(self) -> Path:
        return self.path / ENCODER_FILE

    @property
    def head_path(self) -> Path:
        return self.path / HEAD_FILE

    @property
    def tree_path(self) -> Path | None:
        """The tree graph, when the served decision uses one."""
        return self.file(TREE_FILE)

    @property
    def rebuild_path(self) -> Path | None:
        """The incremental model's whole-window rebuild graph, when the artifact has one."""
        return self.file(REBUILD_FILE)

    def part_threshold(self, part: str) -> float | None:
        """A part's own calibrated threshold (``transformer_lstm``, ``baseline``), if kept."""
        value = self.manifest["thresholds"].get(part)
        return None if value is None else float(value)

    @property
    def similar_cases_shown(self) -> int | None:
        """How many similar cases training found worth showing (``models.case_purity``:
        0 when the nearest cases did not beat random ones), or None (not measured)."""
        block = self.manifest.get("similar_cases")
        return int(block["shown"]) if isinstance(block, dict) and "shown" in block else None

    @property
    def threshold_policy(self) -> dict[str, Any] | None:
        """Per-user threshold parameters learned on validation (``models.threshold_learning``),
        or None (the operator's settings apply)."""
        policy = self.manifest["thresholds"].get("policy")
        return dict(policy) if isinstance(policy, dict) else None

    @property
    def global_threshold(self) -> float:
        return float(self.manifest["thresholds"]["global"])

    @property
    def incremental(self) -> bool:
        """True for the incremental architecture (``encoder.onnx`` is its step graph)."""
        return self.manifest["network"].get("architecture", "window") == "incremental"

    @property
    def context(self) -> int:
        """Events the incremental step reads (its context), 0 for the window model."""
        return int(self.manifest["network"].get("context", 0)) if self.incremental else 0

    @property
    def hidden(self) -> int:
        """The LSTM's width (its ``h`` and ``c``)."""
        return int(self.manifest["network"]["d_model"])

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["network"]["embedding_dim"])

    def file(self, name: str) -> Path | None:
        """An optional extra file of the artifact (hash-verified at load), or None."""
        return self.path / name if name in self.manifest.get("files", {}) else None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Hash every file already in ``folder`` and write ``model.json``."""
    files = {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    }
    full = {"format": FORMAT_VERSION, **manifest, "files": files}
    path = folder / MANIFEST_FILE
    path.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return path


def update_manifest(folder: Path, changes: dict[str, Any]) -> None:
    """Set top-level keys of ``model.json`` in place. It is not among the hashed files,
    so the artifact stays valid: for results computed after export (metrics, learned
    thresholds, the similar-case gate)."""
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def load_artifact(path: Path | str | None = None) -> ModelArtifact:
    """Load and verify an artifact (default: the one shipped in the package)."""
    folder = Path(path) if path is not None else DEFAULT_ARTIFACT
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.exists():
        raise ArtifactError(f"{folder}: not a model artifact (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest_path}: not JSON ({exc.msg})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise ArtifactError(
            f"{folder}: artifact format {manifest.get('format')!r}, this build reads "
            f"{FORMAT_VERSION}; re-export the model"
        )
    files = manifest.get("files", {})
    for required in (ENCODER_FILE, HEAD_FILE):
        if required not in files:
            raise ArtifactError(f"{folder}: manifest lists no {required}")
    for name, expected in files.items():
        file_path = folder / name
        if not file_path.exists():
            raise ArtifactError(f"{folder}: {name} is missing")
        actual = sha256_file(file_path)
        if actual != expected:
            raise ArtifactError(
                f"{folder}: sha256 of {name} is {actual[:12]}…, manifest says {expected[:12]}…; "
                "the artifact was modified or copied incompletely — refusing to load it"
            )
    try:
        spec = FeatureSpec.from_json(manifest["feature_spec"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{folder}: feature spec does not match this build: {exc}") from None
    try:
        combination = Combination.from_manifest(manifest.get("served"))
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{folder}: the served decision block is malformed: {exc}") from None
    if combination.uses_tree and TREE_FILE not in files:
        raise ArtifactError(f"{folder}: the served decision uses a tree but lists no {TREE_FILE}")
    return ModelArtifact(folder, manifest, spec, combination)
