"""The network-alone copy of an artifact (``benchmarks.part_artifact``), the yardstick for
what the served decision's tree costs: same network, the part's own weights and threshold,
no tree, its own version, and it verifies and serves like any artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.part_artifact import SEQUENCE_ALONE, network_only
from scoring.artifact import TREE_FILE, ArtifactError, load_artifact
from scoring.onnx_model import SEQUENCE_PART, OnnxRiskModel, _synthetic_batch


def test_the_network_alone_copy_serves_the_part_training_chose(tmp_path: Path) -> None:
    source = load_artifact(None)
    assert source.combination.uses_tree  # the packaged model serves the blend
    out = network_only(None, tmp_path / "net")
    copy = load_artifact(out)  # hashes verified
    assert not copy.combination.uses_tree and copy.tree_path is None
    assert not (out / TREE_FILE).exists()
    assert copy.version != source.version and copy.version.endswith(SEQUENCE_ALONE)
    assert copy.global_threshold == source.part_threshold(SEQUENCE_ALONE)
    chosen = source.manifest["served"]["validation"]["candidates"][SEQUENCE_ALONE]
    assert copy.combination.sequence == chosen["sequence"]
    served, alone = OnnxRiskModel(source).load(), OnnxRiskModel(copy).load()
    batch = _synthetic_batch(np.array([0, 3, 7]), 8, entity=source.spec.entity)
    logits = served.part_logits(batch)[SEQUENCE_PART]
    want = served.probabilities(copy.combination.logit(logits, None))
    np.testing.assert_allclose(alone.score(batch), want, rtol=1e-6)


def test_an_artifact_without_the_part_is_refused(tmp_path: Path) -> None:
    network_only(None, tmp_path / "net")
    with pytest.raises(ArtifactError, match=SEQUENCE_ALONE):
        network_only(tmp_path / "net", tmp_path / "again")  # served alone: no candidates
