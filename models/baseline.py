"""The yardstick: gradient-boosted trees on the current event plus history aggregates.

Uses the same featurization as the sequence model (the current event's 16 features,
each relative to the user's history, and its merchant's and device's profile when the
model has them) plus order-free aggregates of the history, so a difference between the
two measures what *sequence modelling* adds, not what better features add.
scikit-learn's ``HistGradientBoostingClassifier``: no extra dependency.
"""

from __future__ import annotations

import numpy as np

from features.entity_profile import N_ENTITY
from features.featurize import N_NUMERIC, FeatureBatch

AGGREGATES = (
    "hist_len_log",
    "hist_log_amount_mean",
    "hist_log_amount_std",
    "hist_log_amount_max",
    "hist_new_merchant_share",
    "hist_new_device_share",
    "hist_online_share",
    "hist_country_change_share",
    "cur_amount_z",
    "cur_mcc_share_in_history",
)


def baseline_features(
    batch: FeatureBatch, spec_mean: np.ndarray, spec_std: np.ndarray
) -> np.ndarray:
    """[B, 16 + 2 + len(AGGREGATES)] float64: raw current features, ids, aggregates."""
    valid = ~batch.hist_pad
    n = valid.sum(axis=1)
    denom = np.maximum(n, 1)
    raw = batch.hist_num.astype(np.float64) * spec_std + spec_mean  # undo normalization
    raw[~valid] = 0.0
    la = raw[..., 0]
    mean = la.sum(axis=1) / denom
    var = ((la - mean[:, None]) ** 2 * valid).sum(axis=1) / denom
    la_max = np.where(valid, la, -np.inf).max(axis=1, initial=-np.inf)
    online = ((batch.hist_channel == 3) & valid).sum(axis=1) / denom  # channel id 3 = online
    same_mcc = ((batch.hist_mcc == batch.cur_mcc[:, None]) & valid).sum(axis=1) / denom
    cur_la = batch.cur_raw[:, 0].astype(np.float64)
    agg = np.stack(
        [
            np.log1p(n),
            mean,
            np.sqrt(var),
            np.where(n > 0, la_max, 0.0),
            raw[..., 11].sum(axis=1) / denom,
            raw[..., 12].sum(axis=1) / denom,
            online,
            raw[..., 8].sum(axis=1) / denom,
            np.where(n > 1, (cur_la - mean) / np.maximum(np.sqrt(var), 0.1), 0.0),
            same_mcc,
        ],
        axis=1,
    )
    ids = np.stack([batch.cur_mcc, batch.cur_channel], axis=1).astype(np.float64)
    parts = [batch.cur_raw.astype(np.float64), ids, agg]
    if batch.cur_entity_raw is not None:
        parts.append(batch.cur_entity_raw.astype(np.float64))
    return np.concatenate(parts, axis=1)


def make_baseline(seed: int = 0, entity: bool = False):  # type: ignore[no-untyped-def]  # sklearn is untyped
    """A fresh, seeded classifier (MCC and channel ids as categorical)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    width = N_NUMERIC + 2 + len(AGGREGATES) + (N_ENTITY if entity else 0)
    categorical = np.zeros(width, dtype=bool)
    categorical[N_NUMERIC : N_NUMERIC + 2] = True
    return HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.06,
        max_leaf_nodes=31,
        l2_regularization=1.0,
        categorical_features=categorical,
        early_stopping=True,
        validation_fraction=0.15,
        n_iter_no_change=20,
        random_state=seed,
    )
