"""Ranking and alerting metrics that accept sample weights (numpy only).

Weights let evaluation subsample legitimate events for speed and still report figures
for the real class balance (each kept negative stands for 1/rate of them).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _sorted(
    y: np.ndarray, score: np.ndarray, w: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = np.ones_like(score, dtype=float) if w is None else np.asarray(w, dtype=float)
    order = np.argsort(-score, kind="stable")
    return np.asarray(y)[order].astype(float), np.asarray(score)[order], w[order]


def weighted_pr_auc(y: np.ndarray, score: np.ndarray, w: np.ndarray | None = None) -> float:
    """Average precision (step-wise PR-AUC), ties grouped."""
    ys, ss, ws = _sorted(y, score, w)
    tp = np.cumsum(ys * ws)
    fp = np.cumsum((1 - ys) * ws)
    last = np.r_[ss[1:] != ss[:-1], True]  # end of each tie group
    tp, fp = tp[last], fp[last]
    total_pos = tp[-1] if tp.size else 0.0
    if total_pos <= 0:
        return 0.0
    precision = tp / np.maximum(tp + fp, 1e-12)
    recall = tp / total_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def weighted_roc_auc(y: np.ndarray, score: np.ndarray, w: np.ndarray | None = None) -> float:
    """Area under the ROC curve (trapezoids, ties grouped)."""
    ys, ss, ws = _sorted(y, score, w)
    tp = np.cumsum(ys * ws)
    fp = np.cumsum((1 - ys) * ws)
    last = np.r_[ss[1:] != ss[:-1], True]
    tpr = np.r_[0.0, tp[last]] / max(tp[-1], 1e-12)
    fpr = np.r_[0.0, fp[last]] / max(fp[-1], 1e-12)
    return float(np.trapezoid(tpr, fpr))


def recall_at_fpr(
    y: np.ndarray, score: np.ndarray, fpr_target: float, w: np.ndarray | None = None
) -> float:
    """Highest recall whose false-positive rate stays ≤ ``fpr_target``."""
    ys, ss, ws = _sorted(y, score, w)
    tp = np.cumsum(ys * ws)
    fp = np.cumsum((1 - ys) * ws)
    last = np.r_[ss[1:] != ss[:-1], True]
    tp, fp = tp[last], fp[last]
    fpr = fp / max(fp[-1], 1e-12)
    ok = fpr <= fpr_target
    return float(tp[ok].max() / max(tp[-1], 1e-12)) if ok.any() else 0.0


def weighted_alert_threshold(score: np.ndarray, w: np.ndarray | None, alert_rate: float) -> float:
    """Score threshold above which a weighted share ``alert_rate`` of events falls."""
    w = np.ones_like(score, dtype=float) if w is None else np.asarray(w, dtype=float)
    order = np.argsort(-score, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    k = int(np.searchsorted(cum, alert_rate, side="left"))
    return float(score[order][min(k, score.size - 1)])


def weighted_recall_threshold(
    y: np.ndarray, score: np.ndarray, w: np.ndarray | None, recall: float
) -> float:
    """The highest score threshold that still catches a weighted share ``recall`` of fraud
    (the fewest alerts that reach the target)."""
    w = np.ones_like(score, dtype=float) if w is None else np.asarray(w, dtype=float)
    fraud = np.asarray(y).astype(bool)
    if not fraud.any():
        raise ValueError("no fraud in the validation period: a recall target cannot be met")
    s, fw = score[fraud], w[fraud]
    order = np.argsort(-s, kind="stable")
    cum = np.cumsum(fw[order]) / fw.sum()
    k = int(np.searchsorted(cum, recall - 1e-12, side="left"))
    return float(s[order][min(k, s.size - 1)])


def target_threshold(
    y: np.ndarray,
    score: np.ndarray,
    w: np.ndarray | None,
    recall: float | None,
    alert_rate: float | None,
) -> float:
    """The alert threshold for a calibration target: a recall when one is given (the
    fewest alerts that reach it), else an alert rate."""
    if recall is not None:
        return weighted_recall_threshold(y, score, w, recall)
    if alert_rate is None:
        raise ValueError("a threshold needs a recall or an alert rate")
    return weighted_alert_threshold(score, w, alert_rate)


def alert_budget(alert_rate: float, fraud_rate: float) -> dict[str, float]:
    """The most fraud an alert budget can catch: alerting on a share ``alert_rate`` of
    events catches at most ``alert_rate / fraud_rate`` of the fraud (all of it, at best)."""
    return {
        "alert_rate": alert_rate,
        "fraud_rate": fraud_rate,
        "max_recall": min(1.0, alert_rate / fraud_rate) if fraud_rate > 0 else 1.0,
    }


def at_threshold(
    y: np.ndarray, score: np.ndarray, threshold: float | np.ndarray, w: np.ndarray | None = None
) -> dict[str, float]:
    """Precision, recall, alert rate and false positives when alerting at ``threshold``."""
    w = np.ones_like(score, dtype=float) if w is None else np.asarray(w, dtype=float)
    alert = score >= threshold
    y = np.asarray(y).astype(bool)
    tp = float((w * (alert & y)).sum())
    fp = float((w * (alert & ~y)).sum())
    pos = float((w * y).sum())
    return {
        "precision": tp / max(tp + fp, 1e-12),
        "recall": tp / max(pos, 1e-12),
        "alert_rate": (tp + fp) / float(w.sum()),
        "false_positives": fp,
        "true_positives": tp,
    }


def summary(
    y: np.ndarray, score: np.ndarray, threshold: float, w: np.ndarray | None = None
) -> dict[str, Any]:
    """The figures the evaluation report prints for one model."""
    return {
        "pr_auc": weighted_pr_auc(y, score, w),
        "roc_auc": weighted_roc_auc(y, score, w),
        "recall_at_fpr_0.1%": recall_at_fpr(y, score, 0.001, w),
        "recall_at_fpr_1%": recall_at_fpr(y, score, 0.01, w),
        "threshold": threshold,
        **at_threshold(y, score, threshold, w),
    }
