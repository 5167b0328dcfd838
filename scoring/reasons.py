"""Reasons: which of the current event's features pushed its score up, in words.

Occlusion on the head: each feature group of the current event is replaced by its
training mean (0 after normalization) and the head re-run — all groups of all alerts
in one batched call. The logit drop is that group's contribution. Text comes from the
raw (unnormalized) feature values, so an analyst reads "amount 14× the user's usual",
not "feature 1 = 2.64".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from features.contracts import CHANNELS, Reason
from features.featurize import NUMERIC_FEATURES

_IDX = {name: i for i, name in enumerate(NUMERIC_FEATURES)}
#: groups of numeric features occluded together, with how to say them
GROUPS: dict[str, tuple[str, ...]] = {
    "amount": ("log_amount",),
    "amount_vs_history": ("amount_vs_history",),
    "time_since_previous": ("log_seconds_since_prev", "has_prev"),
    "time_of_day": ("hour_sin", "hour_cos", "dow_sin", "dow_cos"),
    "country_change": ("country_change",),
    "distance": ("log_km_from_prev_located", "log_kmh_from_prev_located", "is_located"),
    "new_merchant": ("new_merchant",),
    "new_device": ("new_device",),
    "velocity": ("log_count_1h", "log_count_24h"),
}


def _describe(group: str, raw: np.ndarray, channel: int) -> str:
    v = {name: float(raw[i]) for name, i in _IDX.items()}
    if group == "amount":
        return f"amount {math.expm1(v['log_amount']):,.2f}"
    if group == "amount_vs_history":
        ratio = math.exp(v["amount_vs_history"]) if v["has_prev"] else 1.0
        return (
            f"amount {ratio:,.1f}× the user's usual"
            if ratio >= 1
            else f"amount {1 / max(ratio, 1e-9):,.1f}× below the user's usual"
        )
    if group == "time_since_previous":
        if not v["has_prev"]:
            return "first transaction in 30 days"
        secs = math.expm1(v["log_seconds_since_prev"])
        return f"{_duration(secs)} after the previous transaction"
    if group == "time_of_day":
        hour = (math.degrees(math.atan2(v["hour_sin"], v["hour_cos"])) / 15) % 24
        return f"at {int(hour):02d}:{int(hour % 1 * 60):02d} UTC"
    if group == "country_change":
        return (
            "country differs from the previous transaction"
            if v["country_change"]
            else ("same country as before")
        )
    if group == "distance":
        km = math.expm1(v["log_km_from_prev_located"])
        kmh = math.expm1(v["log_kmh_from_prev_located"])
        if km < 1:
            return "near the previous card-present transaction"
        return f"{km:,.0f} km from the previous located transaction ({kmh:,.0f} km/h implied)"
    if group == "new_merchant":
        return "merchant new for this user" if v["new_merchant"] else "known merchant"
    if group == "new_device":
        return (
            "device new for this user"
            if v["new_device"]
            else (
                "known device" if CHANNELS[channel - 1] == "online" else "no device (card present)"
            )
        )
    if group == "velocity":
        return (
            f"{math.expm1(v['log_count_1h']):.0f} transactions in the previous hour, "
            f"{math.expm1(v['log_count_24h']):.0f} in 24 h"
        )
    return group


def _duration(secs: float) -> str:
    if secs < 120:
        return f"{secs:.0f} s"
    if secs < 7200:
        return f"{secs / 60:.0f} min"
    if secs < 172800:
        return f"{secs / 3600:.1f} h"
    return f"{secs / 86400:.1f} days"


def explain(
    head: Callable[[np.ndarray, np.ndarray], np.ndarray],
    embedding: np.ndarray,
    cur_num: np.ndarray,
    cur_raw: np.ndarray,
    cur_channel: np.ndarray,
    top: int = 3,
) -> list[list[Reason]]:
    """Top contributing groups per row; ``head(emb, num) -> logits`` runs the model."""
    b = embedding.shape[0]
    if b == 0:
        return []
    names = list(GROUPS)
    g = len(names)
    nums = np.repeat(cur_num[:, None, :], g + 1, axis=1)  # [B, G+1, F]
    for j, name in enumerate(names, start=1):
        for feat in GROUPS[name]:
            nums[:, j, _IDX[feat]] = 0.0  # the training mean after normalization
    logits = head(np.repeat(embedding, g + 1, axis=0), nums.reshape(b * (g + 1), -1))
    logits = logits.reshape(b, g + 1)
    contrib = logits[:, :1] - logits[:, 1:]  # > 0: this group raised the score
    out = []
    for i in range(b):
        order = np.argsort(-contrib[i])[:top]
        out.append(
            [
                Reason(
                    feature=names[j],
                    contribution=round(float(contrib[i, j]), 4),
                    text=_describe(names[j], cur_raw[i], int(cur_channel[i])),
                )
                for j in order
                if contrib[i, j] > 0
            ]
        )
    return out
