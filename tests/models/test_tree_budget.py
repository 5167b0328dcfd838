"""A served tree cut to its first k trees equals LightGBM trained for k rounds (its own
prediction with ``num_iteration=k``), in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from features.tree_inputs import CATEGORICAL, tree_width
from models.baseline import baseline_probabilities, fit_baseline, trained_rounds
from models.tree_budget import choose_rounds, first_trees, tree_count
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


def test_training_keeps_the_fewest_rounds_within_the_margin() -> None:
    served = {25: 0.70, 50: 0.745, 75: 0.749, 100: 0.751, 150: 0.748, 180: 0.750}
    k, report = choose_rounds(180, served.__getitem__, margin=0.002)
    assert k == 75  # the first at or above 0.750 - 0.002
    assert report["rounds"] == 75 and report["trained_rounds"] == 180
    assert report["served_validation_pr_auc"]["180"] == 0.750
    assert choose_rounds(180, served.__getitem__, margin=0.0)[0] == 100  # as good as all
    assert choose_rounds(180, served.__getitem__, margin=0.1)[0] == 25
    assert choose_rounds(20, lambda _k: 0.5, margin=0.01)[0] == 20  # below the grid: all
    with pytest.raises(ValueError, match="margin"):
        choose_rounds(180, served.__getitem__, margin=-0.01)


def test_a_fit_of_k_rounds_is_the_early_stopped_fit_cut_to_k() -> None:
    """What training ships when it keeps fewer rounds: refitted to exactly k, it predicts
    what the full fit's first k trees do."""
    rng = np.random.default_rng(0)
    n = 6000
    x = rng.normal(size=(n, tree_width(False))).astype(np.float32)
    x[:, CATEGORICAL[0]] = rng.integers(0, 40, n)
    x[:, CATEGORICAL[1]] = rng.integers(0, 5, n)
    y = ((x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.normal(size=n)) > 1.5).astype(int)
    full = fit_baseline(x, y, np.ones(n), seed=0, threads=1)
    k = trained_rounds(full) // 2
    assert k >= 5
    cut = fit_baseline(x, y, np.ones(n), seed=0, threads=1, rounds=k)
    assert trained_rounds(cut) == k
    np.testing.assert_allclose(
        baseline_probabilities(cut, x), baseline_probabilities(full, x, rounds=k), atol=1e-12
    )
    assert not np.allclose(baseline_probabilities(cut, x), baseline_probabilities(full, x))
