"""Snapshot files of per-model state: ``NAME.npz`` (arrays) + ``NAME.json`` (metadata).

Written atomically (temp file, then rename) and read back only for the same model
version and dimension: another model's embeddings mean nothing to this one. Shared by
the embedding cache and the fraud-case memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def write_snapshot(
    folder: Path, name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{name}.npz.tmp"
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds loosely
    tmp.replace(folder / f"{name}.npz")
    (folder / f"{name}.json.tmp").write_text(json.dumps(meta))
    (folder / f"{name}.json.tmp").replace(folder / f"{name}.json")


def read_snapshot(
    folder: Path, name: str, model_version: str, dim: int
) -> tuple[dict[str, Any], Any] | None:
    """(metadata, arrays) of a snapshot of this model version and dim, else None."""
    meta_path, data_path = folder / f"{name}.json", folder / f"{name}.npz"
    if not (meta_path.exists() and data_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("model_version") != model_version or meta.get("dim") != dim:
        return None
    return meta, np.load(data_path)
