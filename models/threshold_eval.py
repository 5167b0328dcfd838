"""Per-user dynamic thresholds versus one global threshold, at equal recall.

Replays the threshold policy over an evaluation period in event-time order: each event
is judged against its user's threshold as it stood *before* the event, then the user's
statistics are updated with the same rule as in production. The global threshold is
then re-tuned to reach the same recall, and false positives are compared. Needs every
event of the period scored (no negative subsampling), because each user's threshold
depends on all of their scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scoring.thresholds import ThresholdConfig, UserStats, threshold_for


def per_user_thresholds(
    users: np.ndarray,
    ts: np.ndarray,
    scores: np.ndarray,
    global_threshold: float,
    cfg: ThresholdConfig,
) -> np.ndarray:
    """Threshold in force for each event (same order as the inputs)."""
    order = np.argsort(ts, kind="stable")
    stats: dict[Any, UserStats] = {}
    out = np.empty(scores.size)
    for i in order:
        st = stats.setdefault(users[i], UserStats())
        t = threshold_for(st, global_threshold, cfg)
        out[i] = t
        if scores[i] < t:
            st.add(float(scores[i]))
    return out


def compare(
    users: np.ndarray,
    ts: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    global_threshold: float,
    cfg: ThresholdConfig | None = None,
) -> dict[str, float]:
    """False positives of per-user vs global thresholds at the per-user policy's recall."""
    cfg = cfg or ThresholdConfig()
    y = labels.astype(bool)
    personal = per_user_thresholds(users, ts, scores, global_threshold, cfg)
    alert_p = scores >= personal
    recall = float((alert_p & y).sum() / max(y.sum(), 1))
    fp_personal = int((alert_p & ~y).sum())
    pos_scores = np.sort(scores[y])[::-1]
    k = max(1, int(np.ceil(recall * pos_scores.size)))
    g = float(pos_scores[min(k, pos_scores.size) - 1])  # global threshold with equal recall
    alert_g = scores >= g
    fp_global = int((alert_g & ~y).sum())
    return {
        "recall": recall,
        "recall_global_at_matched_threshold": float((alert_g & y).sum() / max(y.sum(), 1)),
        "global_threshold_matched": g,
        "false_positives_per_user": fp_personal,
        "false_positives_global": fp_global,
        "false_positive_change": (fp_personal - fp_global) / max(fp_global, 1),
    }
