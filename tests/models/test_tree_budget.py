"""A served tree cut to its first k trees equals LightGBM trained for k rounds (its own
prediction with ``num_iteration=k``), in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from features.tree_inputs import CATEGORICAL, tree_width
from models.tree_budget import first_trees, tree_count
from scoring.artifact import TREE_FILE, load_artifact
from scoring.served_decision import Combination
from tests.model_versions import with_tree


def test_the_first_k_trees_are_the_model_of_k_rounds(tmp_path: Path) -> None:
    path, clf = with_tree(tmp_path, "tl-budget", Combination(0.5, 0.5, 0.0, "blend_0.5"))
    graph = onnx.load(str(path / TREE_FILE))
    n = tree_count(graph)
    assert n == clf.booster_.num_trees() > 2
    spec = load_artifact(path).spec
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, tree_width(spec.entity))).astype(np.float32)
    x[:, CATEGORICAL[0]] = rng.integers(0, spec.n_mcc, 500)
    x[:, CATEGORICAL[1]] = rng.integers(0, 5, 500)
    spread = []
    for k in (1, n // 2, n):
        cut = first_trees(graph, k)
        assert tree_count(cut) == k
        sess = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
        got = np.asarray(sess.run(["probabilities"], {"tree_features": x})[0])[:, 1]
        want = clf.predict_proba(x, num_iteration=k)[:, 1]
        np.testing.assert_allclose(got, want, atol=1e-5)
        spread.append(float(np.ptp(got)))
    assert spread[0] < spread[-1]  # more rounds, a more confident model: the cut is real
    assert tree_count(graph) == n  # the original is left alone


def test_an_impossible_budget_is_refused(tmp_path: Path) -> None:
    path, _ = with_tree(tmp_path, "tl-budget", Combination(0.5, 0.5, 0.0, "blend_0.5"))
    graph = onnx.load(str(path / TREE_FILE))
    for k in (0, tree_count(graph) + 1):
        with pytest.raises(ValueError, match="keep between 1 and"):
            first_trees(graph, k)
    with pytest.raises(ValueError, match="TreeEnsembleClassifier"):
        first_trees(onnx.load(str(path / "head.onnx"), load_external_data=False), 1)
