"""Choosing the served decision on validation rows, and the tree's export to ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.tree_inputs import CATEGORICAL, tree_width
from models.baseline import baseline_probabilities, fit_baseline
from models.combine import choose
from models.export import ExportError, TreePart, export_tree_part
from models.metrics import weighted_pr_auc
from scoring.served_decision import Combination


def _parts(seed: int, seq_noise: float, tree_noise: float) -> tuple[np.ndarray, ...]:
    """Labels, weights and two noisy logits that each see part of the signal."""
    rng = np.random.default_rng(seed)
    n = 6000
    y = (rng.random(n) < 0.05).astype(int)
    a, b = rng.normal(size=n), rng.normal(size=n)
    signal_a = np.where(y == 1, a + 2.0, a)  # the sequence model's evidence
    signal_b = np.where(y == 1, b + 1.5, b)  # the tree's, independent of it
    seq = signal_a + seq_noise * rng.normal(size=n) - 4
    tree = signal_b + tree_noise * rng.normal(size=n) - 4
    w = np.where(y == 1, 1.0, 5.0)  # validation negatives subsampled at 20 %
    return y, w, seq, tree


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("seq_noise", "tree_noise"), [(0.5, 0.5), (0.2, 3.0), (3.0, 0.2)])
def test_the_choice_is_never_worse_than_either_part_on_its_rows(
    seed: int, seq_noise: float, tree_noise: float
) -> None:
    y, w, seq, tree = _parts(seed, seq_noise, tree_noise)
    combo, report = choose(y, w, seq, tree)
    served = weighted_pr_auc(y, combo.logit(seq, tree), w)
    assert served == pytest.approx(report["validation_pr_auc"])
    assert served >= max(weighted_pr_auc(y, seq, w), weighted_pr_auc(y, tree, w)) - 1e-12
    assert {"transformer_lstm", "baseline", "blend_0.5", "stacked_logistic"} <= set(
        report["candidates"]
    )


def test_two_parts_with_independent_evidence_are_combined() -> None:
    y, w, seq, tree = _parts(0, 0.3, 0.3)
    combo, report = choose(y, w, seq, tree)
    assert combo.sequence > 0 and combo.tree > 0, report["chosen"]
    best_part = max(weighted_pr_auc(y, seq, w), weighted_pr_auc(y, tree, w))
    assert report["validation_pr_auc"] > best_part + 0.02


def test_a_part_that_is_noise_gets_no_weight_or_little() -> None:
    y, w, seq, _ = _parts(0, 0.3, 0.3)
    noise = np.random.default_rng(9).normal(size=y.size)
    combo, _ = choose(y, w, seq, noise)
    assert abs(combo.tree) < 0.2 * abs(combo.sequence)


def test_the_served_probability_is_calibrated_on_the_rows_it_was_chosen_on() -> None:
    y, w, seq, tree = _parts(1, 0.5, 0.5)
    combo, _ = choose(y, w, seq, tree)
    p = 1 / (1 + np.exp(-combo.logit(seq, tree)))
    rate = float((y * w).sum() / w.sum())
    assert float((p * w).sum() / w.sum()) == pytest.approx(rate, rel=0.1)


def test_a_combination_without_a_tree_is_the_sequence_logit() -> None:
    seq = np.array([-3.0, 0.5, np.nan])
    out = Combination().logit(seq, None)
    np.testing.assert_array_equal(out[:2], seq[:2])
    assert np.isnan(out[2])  # NaN stays NaN: serving fails closed on it
    with pytest.raises(ValueError, match="tree"):
        Combination(0.5, 0.5, 0.0, "blend_0.5").logit(seq, None)


def _tree_data(seed: int, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, tree_width(False))).astype(np.float32)
    x[:, CATEGORICAL[0]] = rng.integers(0, 40, n)
    x[:, CATEGORICAL[1]] = rng.integers(0, 5, n)
    y = (x[:, 0] + (x[:, CATEGORICAL[0]] % 7 == 0) + 0.5 * rng.normal(size=n)) > 1.8
    return x, y.astype(int)


def _part(clf: object, rows: np.ndarray) -> TreePart:
    return TreePart(clf, rows, Combination(0.5, 0.5, 0.0, "blend_0.5"), {}, {})


def test_the_tree_in_onnx_runtime_equals_lightgbm(tmp_path: Path) -> None:
    x, y = _tree_data(0)
    clf = fit_baseline(x, y, np.ones(y.size), seed=0, threads=1)
    worst = export_tree_part(_part(clf, x[:1000]), entity=False, folder=tmp_path)
    assert worst <= 1e-5
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "tree.onnx"), providers=["CPUExecutionProvider"])
    fresh, _ = _tree_data(1, 500)  # rows the parity check never saw, categories included
    got = sess.run(["probabilities"], {"tree_features": fresh})[0][:, 1]
    np.testing.assert_allclose(got, baseline_probabilities(clf, fresh), atol=1e-5)
    # the categorical MCC split survived the conversion: it moves the score
    assert np.corrcoef(got, fresh[:, CATEGORICAL[0]] % 7 == 0)[0, 1] > 0.1


def test_an_export_that_differs_from_lightgbm_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.baseline as baseline

    x, y = _tree_data(0)
    clf = fit_baseline(x, y, np.ones(y.size), seed=0, threads=1)
    other = fit_baseline(x, 1 - y, np.ones(y.size), seed=0, threads=1)
    real = baseline.export_tree
    monkeypatch.setattr(baseline, "export_tree", lambda _clf, entity: real(other, entity))
    with pytest.raises(ExportError, match="differs from LightGBM"):
        export_tree_part(_part(clf, x[:500]), entity=False, folder=tmp_path)
