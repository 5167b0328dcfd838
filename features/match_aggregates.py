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
from features.current_view import MATCHED_IDS, CurrentView

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
#: the columns of the shares of history at the current id, in ``MATCHED_IDS``' order
_SHARES = [
    MATCH_AGGREGATES.index(name)
    for name in (
        "hist_same_merchant_share",
        "hist_same_device_share",
        "hist_same_country_share",
        "cur_mcc_share_in_history",
    )
]


def match_aggregates(view: CurrentView) -> np.ndarray:
    """[B, len(MATCH_AGGREGATES)] float64 from a batch of padded windows.

    Serving calls this for batches of one event too, so it is written for few numpy
    calls, and reads what the current event's features share with it
    (``features.current_view``)."""
    if view.ids != MATCHED_IDS:
        raise ValueError(f"the aggregates compare {MATCHED_IDS}, the view {view.ids}")
    n = view.hist_len
    denom = np.maximum(n, 1)
    # running sums read at the last column: the sum of the n history positions, as
    # ``CurrentView.history_sum`` explains
    mean = view.history_sum / denom
    dev = (view.log_amount - mean[:, None]) * view.hist
    std = np.sqrt(np.cumsum(dev * dev, axis=1)[:, -1] / denom)
    out = np.empty((n.size, len(MATCH_AGGREGATES)))
    out[:, 0] = np.log1p(n)
    out[:, 1] = mean
    out[:, 2] = std
    out[:, 3] = view.hist_log_amount.max(axis=1, initial=0.0)
    out[:, _SHARES] = view.same_counts.T / denom[:, None]
    online = ((view.records["channel"] == ONLINE_CHANNEL) & view.hist).sum(axis=1)
    out[:, 6] = online / denom
    z = (view.current_log_amount - mean) / np.maximum(std, 0.1)
    out[:, 8] = np.where(n > 1, z, 0.0)
    return out
