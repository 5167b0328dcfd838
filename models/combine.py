"""Choosing the served decision on validation data: the sequence model, the tree, or both.

Candidates, each scored by weighted PR-AUC on the validation period:

- each part alone (so the served score is never worse than the better part there);
- logit blends ``w · seq + (1 − w) · tree`` for w in 0.1 … 0.9;
- logistic-regression stacking on the two logits.

Every candidate except the stack is then Platt-rescaled on the same rows (one slope and
bias, a monotone map that leaves the ranking and so PR-AUC unchanged), so the served
score stays a calibrated probability. The best candidate wins; ties go to the one listed
first (a single part before a blend). All candidates' validation figures go into the
artifact, and ``evaluate`` reports each on the test period, so the choice is checked on
data it was not made on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.metrics import weighted_pr_auc
from scoring.served_decision import Combination

BLEND_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def platt(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Slope and bias of a weighted logistic fit of ``y`` on one score (slope > 0)."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(x[:, None], y, sample_weight=w)
    slope = float(lr.coef_[0, 0])
    return (slope, float(lr.intercept_[0])) if slope > 0 else (1.0, 0.0)


def candidates() -> list[tuple[str, float]]:
    """(name, weight of the sequence logit) for every fixed-direction candidate."""
    return [
        ("transformer_lstm", 1.0),
        ("baseline", 0.0),
        *((f"blend_{w:.1f}", w) for w in BLEND_WEIGHTS),
    ]


def choose(
    y: np.ndarray, w: np.ndarray, seq: np.ndarray, tree: np.ndarray
) -> tuple[Combination, dict[str, Any]]:
    """The best combination on these (validation) rows, and every candidate's figures."""
    y = np.asarray(y, dtype=int)
    table: dict[str, dict[str, Any]] = {}
    best: tuple[float, Combination] | None = None
    for name, ws in candidates():
        direction = ws * seq + (1.0 - ws) * tree
        slope, bias = platt(direction, y, w)
        combo = Combination(slope * ws, slope * (1.0 - ws), bias, name)
        pr = weighted_pr_auc(y, combo.logit(seq, tree), w)
        table[name] = {"validation_pr_auc": pr, **combo.to_json()["weights"]}
        if best is None or pr > best[0]:
            best = (pr, combo)
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e4, max_iter=1000)
    lr.fit(np.stack([seq, tree], axis=1), y, sample_weight=w)
    a, b = (float(v) for v in lr.coef_[0])
    stack = Combination(a, b, float(lr.intercept_[0]), "stacked_logistic")
    pr = weighted_pr_auc(y, stack.logit(seq, tree), w)
    table["stacked_logistic"] = {"validation_pr_auc": pr, **stack.to_json()["weights"]}
    if best is None or pr > best[0]:
        best = (pr, stack)
    assert best is not None
    return best[1], {"chosen": best[1].kind, "validation_pr_auc": best[0], "candidates": table}
