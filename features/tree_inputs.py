"""The tree model's inputs: the current event, its ids, and order-free history aggregates.

Two definitions of the aggregates exist, named by the artifact's spec
(``FeatureSpec.tree_aggregates``): "match" (``features.match_aggregates``, computed from
the windows while featurizing; every artifact trained since 2026-12-07) and "window"
(``AGGREGATES`` below, per-position shares computed here from the history arrays), which
older artifacts' trees were trained on and keep being served with.

Computed from the same ``FeatureBatch`` the network sees, so training (``models.baseline``)
and serving (``scoring.onnx_model``, where the tree runs in ONNX Runtime in the same batch
call as the network) share one definition and cannot drift apart. Returned as float32:
the tree is trained on float32-rounded inputs, so its split thresholds fall between
float32 values and ONNX Runtime's float32 comparisons take the same branches.
"""

from __future__ import annotations

import numpy as np

from features.entity_profile import N_ENTITY
from features.featurize import N_NUMERIC, FeatureBatch, FeatureSpec

#: the "window" aggregates (specs written before 2026-12-07)
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
#: the history columns the aggregates read: log amount, country change, new merchant, new
#: device (positions in ``features.featurize``'s numeric features; the current-event
#: featurizer reads the same ones)
HISTORY_INDEX = np.array([0, 8, 11, 12])
#: column positions of the categorical ids (MCC, channel) in the tree's input
CATEGORICAL = (N_NUMERIC, N_NUMERIC + 1)


def tree_width(entity: bool) -> int:
    """Number of tree inputs for a model with or without entity profiles."""
    return N_NUMERIC + 2 + len(AGGREGATES) + (N_ENTITY if entity else 0)


def history_columns(norm: np.ndarray, spec_mean: np.ndarray, spec_std: np.ndarray) -> np.ndarray:
    """The four history columns the aggregates read, un-normalised from the network's
    float32 inputs (``norm`` [B, T, 4], those columns of ``hist_num``) to [B, T, 4]
    float64: the tree is trained on exactly these values."""
    raw = norm.astype(np.float64)
    raw *= spec_std[HISTORY_INDEX]
    raw += spec_mean[HISTORY_INDEX]
    return raw


def aggregates(
    raw: np.ndarray,
    valid: np.ndarray,
    hist_channel: np.ndarray,
    hist_mcc: np.ndarray,
    cur_mcc: np.ndarray,
    cur_raw: np.ndarray,
) -> np.ndarray:
    """[B, len(AGGREGATES)] float64 from the history columns (``history_columns``), the
    history's validity and ids [B, T], and the current event's MCC id and raw features."""
    n = valid.sum(axis=1)
    denom = np.maximum(n, 1)
    raw = np.where(valid[..., None], raw, 0.0)
    sums = raw.sum(axis=1)  # [B, 4]
    la = raw[..., 0]
    mean = sums[:, 0] / denom
    var = ((la - mean[:, None]) ** 2 * valid).sum(axis=1) / denom
    la_max = np.where(valid, la, -np.inf).max(axis=1, initial=-np.inf)
    online = ((hist_channel == 3) & valid).sum(axis=1) / denom  # channel id 3 = online
    same_mcc = ((hist_mcc == cur_mcc[:, None]) & valid).sum(axis=1) / denom
    cur_la = cur_raw[:, 0].astype(np.float64)
    std = np.sqrt(var)
    out = np.empty((n.size, len(AGGREGATES)))  # by column: cheaper than np.stack at batch 1
    out[:, 0] = np.log1p(n)
    out[:, 1] = mean
    out[:, 2] = std
    out[:, 3] = np.where(n > 0, la_max, 0.0)
    out[:, 4] = sums[:, 2] / denom
    out[:, 5] = sums[:, 3] / denom
    out[:, 6] = online
    out[:, 7] = sums[:, 1] / denom
    out[:, 8] = np.where(n > 1, (cur_la - mean) / np.maximum(std, 0.1), 0.0)
    out[:, 9] = same_mcc
    return out


def tree_inputs(batch: FeatureBatch, spec: FeatureSpec) -> np.ndarray:
    """[B, tree_width] float32: raw current features, ids, aggregates, entity profile.

    A "match" batch carries its aggregates (computed from the windows while featurizing).
    So does a "window" batch without history arrays (``features.current_features``);
    otherwise the "window" aggregates are computed here from the history arrays.
    """
    agg = batch.aggregates
    if agg is None:
        if spec.tree_aggregates == "match":
            raise ValueError("a match-aggregate tree needs the batch featurized with them")
        agg = aggregates(
            history_columns(batch.hist_num[..., HISTORY_INDEX], spec.mean_array, spec.std_array),
            ~batch.hist_pad,
            batch.hist_channel,
            batch.hist_mcc,
            batch.cur_mcc,
            batch.cur_raw,
        )
    entity = batch.cur_entity_raw
    out = np.empty((agg.shape[0], tree_width(entity is not None)), dtype=np.float32)
    # written column block by column block: each value is rounded to float32 once, as a
    # float64 concatenation cast at the end would round it, at a third of the cost
    out[:, :N_NUMERIC] = batch.cur_raw
    out[:, CATEGORICAL[0]] = batch.cur_mcc
    out[:, CATEGORICAL[1]] = batch.cur_channel
    end = CATEGORICAL[1] + 1 + len(AGGREGATES)
    out[:, CATEGORICAL[1] + 1 : end] = agg
    if entity is not None:
        out[:, end:] = entity
    return out
