"""The tree's history aggregates, cheap by definition: how the current event compares
with its card's window.

The first tree inputs summarised the history *position by position* (the share of
history events that were a first-seen merchant, device or country at their own time),
which needs a per-position pass over the window with a sort per id column. Serving paid
about as much for those aggregates as for the tree itself, and together they cost the
served decision well over the 15 % #20 allows (docs/BENCHMARKS.md). Here every aggregate
is one comparison of the current event with the window, or one running sum:

* the history's length and its log-amount mean, spread and maximum;
* the share of history events at the current event's merchant, device, country and
  MCC (0 where the current id is unknown), and the share that were online;
* the current log-amount's z-score against the history.

Which is also closer to what an analyst asks ("has this card been here before, and how
often?"). On our simulator's training split a tree on these aggregates scored at least
as well as one on the per-position ones (docs/MODEL.md).

The sums are running sums (``np.cumsum``) read at each row's history length: a sequential
sum does not depend on how far the batch's widest window pads a row, so a row's
aggregates are bit for bit the same in training batches and in serving batches of any
composition (the tree's float32 split thresholds must take the same branches).
"""

from __future__ import annotations

import numpy as np

from features.contracts import CHANNELS

#: column names, in order (``features.tree_inputs`` places them after the ids)
MATCH_AGGREGATES = (
    "hist_len_log",
    "hist_log_amount_mean",
    "hist_log_amount_std",
    "hist_log_amount_max",
    "hist_same_merchant_share",
    "hist_same_device_share",
    "hist_online_share",
    "hist_same_country_share",
    "cur_amount_z",
    "cur_mcc_share_in_history",
)
#: the record's channel index of an online event
ONLINE_CHANNEL = CHANNELS.index("online")
#: id columns compared with the current event; 0 means unknown for each
_MATCHED = ((4, "merchant"), (5, "device"), (7, "country"), (9, "mcc"))


def match_aggregates(records: np.ndarray, hist_len: np.ndarray) -> np.ndarray:
    """[B, len(MATCH_AGGREGATES)] float64 from padded windows (``records`` [B, L]: each
    row's history, then its current event at ``hist_len``).

    Serving calls this for batches of one event too, so it is written for few numpy
    calls: log-amounts are never negative, so masking by multiplication and a plain
    maximum give what ``np.where`` and a masked maximum would, bit for bit."""
    b, width = records.shape
    rows = np.arange(b)
    n = hist_len
    hist = np.arange(width) < n[:, None]
    cur = records[rows, n]
    denom = np.maximum(n, 1)
    la = np.log1p(np.maximum(records["amount"], 0.0))
    la_hist = la * hist
    # running sums read at position n: the sum of the n history positions, padding-free
    mean = np.cumsum(la_hist, axis=1)[rows, n] / denom
    dev = (la - mean[:, None]) * hist
    std = np.sqrt(np.cumsum(dev * dev, axis=1)[rows, n] / denom)
    out = np.empty((b, len(MATCH_AGGREGATES)))
    out[:, 0] = np.log1p(n)
    out[:, 1] = mean
    out[:, 2] = std
    out[:, 3] = la_hist.max(axis=1, initial=0.0)
    for col, name in _MATCHED:
        value = cur[name]
        out[:, col] = ((records[name] == value[:, None]) & hist).sum(axis=1) * (value != 0)
    out[:, 6] = ((records["channel"] == ONLINE_CHANNEL) & hist).sum(axis=1)
    out[:, 4:8] /= denom[:, None]
    out[:, 9] /= denom
    out[:, 8] = np.where(n > 1, (la[rows, n] - mean) / np.maximum(std, 0.1), 0.0)
    return out
