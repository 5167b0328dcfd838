"""Entity risk in words: how much an event's merchant and device profile raised its score.

Occlusion, as for the event's own features (``scoring.reasons``): one kind's inputs are
replaced by their training mean (0 after normalization) and the head re-run; the logit
drop is that profile's contribution. Not by the *absent* state: nearly every training
event has a merchant, so "no merchant" is far outside what the head saw and its logit
would be meaningless as a reference. The text comes from the raw statistics, so an analyst
reads "3 confirmed frauds at this merchant in the last 7 days", not a feature value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from features.contracts import Reason
from features.entity_profile import ENTITY_FEATURE_BASE, ENTITY_KINDS, STATS

_S = {name: i for i, name in enumerate(STATS)}
_WIDTH = len(ENTITY_FEATURE_BASE)
_WHERE = {"merchant": "at this merchant", "device": "on this device"}


def describe_entity(kind: str, stats: np.ndarray) -> str:
    """One line about a profile (``stats``: that kind's raw statistics)."""
    v = {name: float(stats[i]) for name, i in _S.items()}
    where = _WHERE[kind]
    for window, key in (("7 days", "fraud_7d"), ("30 days", "fraud_30d")):
        n = round(v[key])
        if n >= 1:
            plural = "fraud" if n == 1 else "frauds"
            return f"{n} confirmed {plural} {where} in the last {window}"
    cards = v["cards_24h"]
    if kind == "device" and cards >= 1.5:
        return f"this device paid for about {cards:.0f} different cards in the last 24 h"
    if kind == "merchant" and v["new_cards_7d"] >= 5 and v["new_cards_7d"] >= 0.5 * v["tx_7d"]:
        return f"about {v['new_cards_7d']:.0f} cards new to this merchant in the last 7 days"
    if v["tx_30d"] < 0.5:
        return f"no activity {where} in the last 30 days"
    if v["tx_24h"] < 0.5:  # "about 0 transactions" read as a bug in the demo's alerts
        return f"no activity {where} in the last 24 h (about {v['tx_30d']:.0f} in 30 days)"
    return f"about {v['tx_24h']:.0f} transactions and {cards:.0f} cards {where} in the last 24 h"


def explain_entities(
    head: Callable[[np.ndarray], np.ndarray],
    cur_entity: np.ndarray,
    absent: np.ndarray,
    stats: np.ndarray,
) -> list[list[Reason]]:
    """Per row, a reason for each present profile that raised the score.

    ``head(entity_inputs) -> logits`` runs the model with the rows' other inputs fixed;
    ``absent`` is the normalized input vector of "no entity" (to tell which are present).
    """
    b = cur_entity.shape[0]
    if b == 0:
        return []
    k = len(ENTITY_KINDS)
    variants = np.repeat(cur_entity[:, None, :], k + 1, axis=1)  # [B, K+1, N_ENTITY]
    for j in range(k):
        cols = slice(j * _WIDTH, (j + 1) * _WIDTH)
        variants[:, j + 1, cols] = 0.0  # the training mean after normalization
    logits = head(variants.reshape(b * (k + 1), -1)).reshape(b, k + 1)
    contrib = logits[:, :1] - logits[:, 1:]
    out = []
    for i in range(b):
        reasons = []
        for j, kind in enumerate(ENTITY_KINDS):
            present = cur_entity[i, j * _WIDTH] != absent[j * _WIDTH]
            if present and contrib[i, j] > 0:
                reasons.append(
                    Reason(
                        feature=f"{kind}_profile",
                        contribution=round(float(contrib[i, j]), 4),
                        text=describe_entity(kind, stats[i, j]),
                    )
                )
        out.append(reasons)
    return out
