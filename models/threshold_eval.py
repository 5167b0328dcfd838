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


def at_equal_recall(
    scores: np.ndarray, y: np.ndarray, personal: np.ndarray
) -> tuple[float, float, int, int]:
    """(recall of the per-user thresholds, the global threshold with the same recall,
    false positives per-user, false positives global) over these rows."""
    alert_p = scores >= personal
    recall = float((alert_p & y).sum() / max(y.sum(), 1))
    pos_scores = np.sort(scores[y])[::-1]
    if pos_scores.size == 0:
        return recall, 1.0, int(alert_p.sum()), 0
    k = max(1, int(np.ceil(recall * pos_scores.size)))
    g = float(pos_scores[min(k, pos_scores.size) - 1])
    return recall, g, int((alert_p & ~y).sum()), int(((scores >= g) & ~y).sum())


def at_equal_alerts(scores: np.ndarray, y: np.ndarray, personal: np.ndarray) -> tuple[int, int]:
    """(false positives per-user, false positives of the global threshold that raises the
    same number of alerts) over these rows. Unlike equal recall, no side is snapped to a
    fraud's score, which would favour the global threshold."""
    alert_p = scores >= personal
    alert_v = top_alerts(scores, int(alert_p.sum()))
    return int((alert_p & ~y).sum()), int((alert_v & ~y).sum())


def top_alerts(scores: np.ndarray, n: int) -> np.ndarray:
    """The alerts of the global threshold that raises ``n`` of them (the n highest)."""
    mask = np.zeros(scores.size, bool)
    mask[np.argsort(-scores, kind="stable")[:n]] = True
    return mask


#: users grouped by how many events they have in the evaluated period
SEGMENTS = ((1, 10, "1-9 events"), (10, 50, "10-49 events"), (50, 10**12, "50+ events"))


def compare(
    users: np.ndarray,
    ts: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    global_threshold: float,
    cfg: ThresholdConfig | None = None,
    amounts: np.ndarray | None = None,
) -> dict[str, Any]:
    """False positives of per-user vs global thresholds at the per-user policy's recall;
    with ``amounts``, also the fraud amount each catches at equal alert volume, and the
    false positives per user segment (which users the policy helps)."""
    cfg = cfg or ThresholdConfig()
    y = labels.astype(bool)
    personal = per_user_thresholds(users, ts, scores, global_threshold, cfg)
    alert_p = scores >= personal
    recall, g, fp_personal, fp_global = at_equal_recall(scores, y, personal)
    alert_g = scores >= g
    out: dict[str, Any] = {
        "recall": recall,
        "recall_global_at_matched_threshold": float((alert_g & y).sum() / max(y.sum(), 1)),
        "global_threshold_matched": g,
        "false_positives_per_user": fp_personal,
        "false_positives_global": fp_global,
        "false_positive_change": (fp_personal - fp_global) / max(fp_global, 1),
    }
    if amounts is None:
        return out
    # equal alert volume: the global threshold that raises as many alerts as the policy
    n_alerts = int(alert_p.sum())
    alert_v = top_alerts(scores, n_alerts)
    out["alerts"] = n_alerts
    out["false_positives_equal_alerts"] = {
        "per_user": int((alert_p & ~y).sum()),
        "global": int((alert_v & ~y).sum()),
    }
    out["fraud_amount_caught_per_user"] = float(amounts[alert_p & y].sum())
    out["fraud_amount_caught_global_equal_alerts"] = float(amounts[alert_v & y].sum())
    out["fraud_amount_total"] = float(amounts[y].sum())
    _, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    per_event = counts[inverse]
    out["false_positives_by_segment"] = {
        name: {
            "users": int(((counts >= lo) & (counts < hi)).sum()),
            "per_user": int((alert_p & ~y & (per_event >= lo) & (per_event < hi)).sum()),
            "global": int((alert_g & ~y & (per_event >= lo) & (per_event < hi)).sum()),
        }
        for lo, hi, name in SEGMENTS
    }
    return out
