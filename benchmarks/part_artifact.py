"""An artifact that serves one part of another: what the served decision costs over it.

    python -m benchmarks.part_artifact OUT [--model DIR]

Writes a copy of the artifact whose served decision is the Transformer+LSTM alone, with
the weights and threshold training chose for that part (``served.validation.candidates``
and ``thresholds.transformer_lstm``), and no tree. Same encoder, head and similar cases,
so a benchmark run against both (``bench_e2e --worker-env RISKSTREAM_MODEL__PATH=OUT``,
``bench_scoring --model OUT``) measures what the tree adds to serving, and nothing else.
Only for benchmarks: the copy gets its own version id, so nobody mistakes it for the model
that was trained.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from scoring.artifact import (
    MANIFEST_FILE,
    TREE_FILE,
    ArtifactError,
    load_artifact,
)

#: the candidate name training gives the sequence model alone (``models.combine``)
SEQUENCE_ALONE = "transformer_lstm"


def network_only(src: Path | str | None, out: Path) -> Path:
    """Write the network-alone copy of ``src`` (default: the packaged artifact) to ``out``."""
    artifact = load_artifact(src)
    manifest = json.loads(json.dumps(artifact.manifest))
    served = manifest.get("served") or {}
    candidates = served.get("validation", {}).get("candidates", {})
    if SEQUENCE_ALONE not in candidates or SEQUENCE_ALONE not in manifest["thresholds"]:
        raise ArtifactError(
            f"{artifact.path}: no {SEQUENCE_ALONE!r} candidate and threshold to serve alone"
        )
    weights = candidates[SEQUENCE_ALONE]
    manifest["served"] = {
        "kind": SEQUENCE_ALONE,
        "weights": {k: float(weights[k]) for k in ("sequence", "tree", "bias")},
    }
    manifest["thresholds"]["global"] = manifest["thresholds"][SEQUENCE_ALONE]
    manifest["files"].pop(TREE_FILE, None)
    manifest["model_version"] = f"{artifact.version}-{SEQUENCE_ALONE}"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(artifact.path, out, ignore=shutil.ignore_patterns(TREE_FILE))
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="Folder to write (replaced if it exists).")
    ap.add_argument("--model", default=None, help="Source artifact (default: the packaged one).")
    args = ap.parse_args()
    try:
        print(network_only(args.model, args.out))
    except ArtifactError as exc:
        sys.exit(f"part_artifact: {exc}")


if __name__ == "__main__":
    main()
