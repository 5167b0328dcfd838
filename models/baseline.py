"""The yardstick and the served decision's second part: gradient-boosted trees.

LightGBM on the same featurization as the sequence model plus order-free history
aggregates (``features.tree_inputs``), so a difference between the two measures what
*sequence modelling* adds, not what better features add. LightGBM rather than
scikit-learn's ``HistGradientBoostingClassifier``: the served decision runs the tree in
ONNX Runtime, and ``onnxmltools`` converts LightGBM *with* its categorical MCC/channel
splits, while skl2onnx has no converter for a histogram GBDT with categorical features
(docs/DESIGN-DECISIONS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from features.featurize import FeatureSpec
from features.tree_inputs import CATEGORICAL, tree_inputs, tree_width
from models.combine import choose
from models.dataset import LabelledData, sample_negatives
from models.tree_budget import choose_rounds
from scoring.served_decision import tree_logit


@dataclass(frozen=True)
class TreeFit:
    """How the served decision's tree is fitted (``fit_tree``)."""

    #: the share of legitimate events sampled (weights restore the balance)
    negative_rate: float = 0.1
    #: served validation PR-AUC the tree may give up for fewer rounds
    margin: float = 0.002
    seed: int = 0
    threads: int = 2


def make_baseline(seed: int = 0, threads: int = 2) -> Any:
    """A fresh, seeded, deterministic classifier."""
    import lightgbm as lgb

    return lgb.LGBMClassifier(
        n_estimators=300,
        learning_rate=0.06,
        num_leaves=31,
        min_child_samples=20,
        reg_lambda=1.0,
        random_state=seed,
        n_jobs=threads,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )


def fit_baseline(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    seed: int = 0,
    threads: int = 2,
    holdout: float = 0.15,
    rounds: int | None = None,
) -> Any:
    """Fit with early stopping (20 rounds) on a random ``holdout`` of the given rows.

    ``rounds``: exactly that many boosting rounds, no early stopping, on the same rows.
    Boosting is sequential and the fit deterministic, so this is the first ``rounds``
    trees of the early-stopped fit (``models.tree_budget.choose_rounds`` picks how many
    the served decision needs)."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    held = rng.random(y.size) < holdout
    if y[held].sum() == 0 or y[~held].sum() == 0:  # too few frauds to hold any out
        held[:] = False
    clf = make_baseline(seed, threads)
    fit_args: dict[str, Any] = {"categorical_feature": list(CATEGORICAL)}
    if rounds is not None:
        clf.set_params(n_estimators=rounds)
    elif held.any():
        fit_args |= {
            "eval_X": (x[held],),
            "eval_y": (y[held],),
            "eval_sample_weight": [weight[held]],
            "callbacks": [lgb.early_stopping(20, verbose=False)],
        }
    clf.fit(x[~held], y[~held], sample_weight=weight[~held], **fit_args)
    return clf


def baseline_probabilities(clf: Any, x: np.ndarray, rounds: int | None = None) -> np.ndarray:
    """P(fraud) [B] from the trained classifier (the training-side reference); with
    ``rounds``, from its first ``rounds`` trees."""
    return np.asarray(clf.predict_proba(x, num_iteration=rounds)[:, 1], dtype=np.float64)


def trained_rounds(clf: Any) -> int:
    """The boosting rounds the classifier predicts with (the early-stopped best)."""
    return int(clf.best_iteration_ or clf.booster_.current_iteration())


def export_tree(clf: Any, entity: bool) -> bytes:
    """The classifier as an ONNX graph: input ``tree_features`` [B, F] float32, outputs
    ``label`` and ``probabilities`` [B, 2] (ai.onnx.ml TreeEnsembleClassifier)."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = convert_lightgbm(
        clf,
        initial_types=[("tree_features", FloatTensorType([None, tree_width(entity)]))],
        zipmap=False,
        target_opset=15,  # the newest opset onnxmltools' LightGBM converter writes
    )
    return bytes(onx.SerializeToString())


def tree_features(data: LabelledData, spec: FeatureSpec, index: np.ndarray) -> np.ndarray:
    """The tree's inputs (``features.tree_inputs``) for ``index``, float32."""
    parts = [
        tree_inputs(data.features(index[s : s + 4096], spec), spec)
        for s in range(0, index.size, 4096)
    ]
    return np.concatenate(parts)


def fit_tree(
    data: LabelledData,
    spec: FeatureSpec,
    index: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cfg: TreeFit,
    rng: np.random.Generator,
) -> tuple[Any, dict[str, Any]]:
    """The served decision's tree, fitted on ``index`` (training's, or a refit's earlier
    period) and cut to as few rounds as the served decision needs on ``validation``: the
    tree's inputs there, labels, weights and the network's logits. Returns it refitted to
    exactly those rounds, and the figures behind the choice."""
    idx, weight = sample_negatives(index, data.labels, cfg.negative_rate, rng)
    x, y = tree_features(data, spec, idx), data.labels[idx]
    clf = fit_baseline(x, y, weight, cfg.seed, cfg.threads)
    x_val, val_y, val_w, val_logits = validation

    def served(k: int) -> float:
        tree_val = tree_logit(baseline_probabilities(clf, x_val, rounds=k))
        return float(choose(val_y, val_w, val_logits, tree_val)[1]["validation_pr_auc"])

    rounds, report = choose_rounds(trained_rounds(clf), served, cfg.margin)
    if rounds < trained_rounds(clf):
        clf = fit_baseline(x, y, weight, cfg.seed, cfg.threads, rounds=rounds)
    return clf, report
