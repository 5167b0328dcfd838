"""The served decision in ONNX Runtime: network and tree in one call, equal to training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from features.entity_profile import N_ENTITY
from features.featurize import N_NUMERIC, FeatureBatch
from features.match_aggregates import MATCH_AGGREGATES
from features.tree_inputs import tree_inputs, tree_width
from models.baseline import baseline_probabilities
from scoring.artifact import MANIFEST_FILE, ArtifactError, load_artifact
from scoring.errors import ModelLoadError
from scoring.onnx_model import SEQUENCE_PART, TREE_PART, OnnxRiskModel
from scoring.served_decision import Combination, tree_logit
from tests.model_versions import make_version, with_tree


def _batch(b: int, t: int, n_mcc: int) -> FeatureBatch:
    """Rows with varied histories, ids and raw features (the tree reads all of them)."""
    rng = np.random.default_rng(3)
    hist_len = np.arange(b) % (t + 1)
    pad = np.arange(t)[None, :] >= hist_len[:, None]
    ent = rng.normal(size=(b, N_ENTITY)).astype(np.float32)
    return FeatureBatch(
        hist_num=rng.normal(size=(b, t, N_NUMERIC)).astype(np.float32),
        hist_mcc=np.where(pad, 0, rng.integers(1, n_mcc, (b, t))).astype(np.int64),
        hist_channel=np.where(pad, 0, rng.integers(1, 5, (b, t))).astype(np.int64),
        hist_pad=pad,
        hist_len=hist_len,
        cur_num=rng.normal(size=(b, N_NUMERIC)).astype(np.float32),
        cur_mcc=rng.integers(1, n_mcc, b).astype(np.int64),
        cur_channel=rng.integers(1, 5, b).astype(np.int64),
        cur_raw=(2 * rng.normal(size=(b, N_NUMERIC))).astype(np.float32),
        cur_entity=ent,
        cur_entity_raw=np.abs(ent),
        aggregates=rng.normal(size=(b, len(MATCH_AGGREGATES))),
    )


def test_the_served_score_combines_the_network_and_the_tree(tmp_path: Path) -> None:
    combo = Combination(0.6, 0.7, -0.2, "stacked_logistic")
    path, clf = with_tree(tmp_path, "tl-with-tree", combo)
    model = OnnxRiskModel(load_artifact(path)).load()
    spec = model.artifact.spec
    batch = _batch(64, 24, spec.n_mcc)
    emb = model.encode(batch)
    seq = model.head_logits(emb, batch.cur_num, batch.cur_mcc, batch.cur_channel, batch.cur_entity)
    # the training-side reference: LightGBM on the same inputs, not the ONNX graph
    x = tree_inputs(batch, spec)
    tree = tree_logit(baseline_probabilities(clf, x))
    served = model.score(batch, embedding=emb)
    # compared as log-odds: the tree's probability is float32 in the graph
    np.testing.assert_allclose(tree_logit(served), 0.6 * seq + 0.7 * tree - 0.2, atol=1e-4)
    parts = model.part_logits(batch, embedding=emb)
    np.testing.assert_allclose(parts[TREE_PART], tree, atol=1e-4)
    np.testing.assert_allclose(parts[SEQUENCE_PART], seq)
    assert np.ptp(parts[TREE_PART]) > 0.5  # the tree's inputs vary, so its scores do


def test_a_tree_that_is_not_used_is_not_run(tmp_path: Path) -> None:
    path, _ = with_tree(tmp_path, "tl-seq-only", Combination())
    model = OnnxRiskModel(load_artifact(path)).load()
    batch = _batch(8, 8, model.artifact.spec.n_mcc)
    model.tree = None  # the served path must not need it
    seq = model.part_logits(batch)[SEQUENCE_PART]
    np.testing.assert_allclose(model.score(batch), 1 / (1 + np.exp(-seq)), rtol=1e-6)


def test_a_manifest_that_serves_a_tree_it_does_not_carry_is_refused(tmp_path: Path) -> None:
    path = make_version(tmp_path, "tl-no-tree")
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["served"] = Combination(0.5, 0.5, 0.0, "blend_0.5").to_json()
    manifest["files"].pop("tree.onnx", None)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"lists no tree\.onnx"):
        load_artifact(path)


def test_a_tree_of_another_width_is_refused_at_load(tmp_path: Path) -> None:
    spec = load_artifact(make_version(tmp_path, "tl-probe")).spec
    path, _ = with_tree(
        tmp_path,
        "tl-wide-tree",
        Combination(0.5, 0.5, 0.0, "blend_0.5"),
        width=tree_width(spec.entity) + 1,
    )
    with pytest.raises(ModelLoadError, match="features"):
        OnnxRiskModel(load_artifact(path)).load()
