"""What every comparison of a batch's current events with their windows reads, built once.

The current event's features (``features.current_features``) and the tree's "match"
aggregates (``features.match_aggregates``) both start from the same arrays: the history
mask, each row's current record, the log-amounts of the window, and for merchant and
device the history events that share the current event's id. At batch 1 numpy's cost per
call, not per element, is most of what either pays, so serving builds these once per
batch and both read them (docs/BENCHMARKS.md).

Everything here is computed exactly as each reader computed it alone, so sharing changes
no value: the tests of both readers hold them to their reference definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the id columns the tree's aggregates compare with the current event's
MATCHED_IDS = ("merchant", "device", "country", "mcc")
#: the ones the current event's features compare (first-seen merchant and device)
FIRST_SEEN_IDS = ("merchant", "device")


@dataclass(frozen=True)
class CurrentView:
    """A padded batch of windows (``records`` [B, L]: each row's history, then its current
    event at ``hist_len``), with the arrays its readers share. Every reader needs all of
    them, so ``of`` computes them at once (lazy caches cost more per call at batch 1)."""

    records: np.ndarray
    hist_len: np.ndarray
    #: ``arange(B)``, for reading each row at its own position
    rows: np.ndarray
    #: [B, L] bool: the history positions (before the current event)
    hist: np.ndarray
    #: [B] the current records
    cur: np.ndarray
    #: [B, L] float64: ``log1p(max(amount, 0))`` at every position, padding included
    log_amount: np.ndarray
    #: [B] float64: the current events' log-amounts
    current_log_amount: np.ndarray
    #: [B, L] float64: the log-amounts at history positions, 0 elsewhere. Masked by
    #: multiplication: log-amounts are never negative, so this equals ``np.where``'s
    #: result bit for bit, in one call fewer
    hist_log_amount: np.ndarray
    #: [B] float64: each row's history log-amounts summed in order: a running sum, read at
    #: the last column (past the history every addend is +0.0, which changes no sum), so
    #: the same bits however far the batch pads the row
    history_sum: np.ndarray
    #: the id columns ``same_counts`` compares, in its order
    ids: tuple[str, ...]
    #: [len(ids), B] int: for each id column, the history events that share the current
    #: event's id; 0 where the current one is unknown (0)
    same_counts: np.ndarray

    @classmethod
    def of(
        cls, records: np.ndarray, hist_len: np.ndarray, ids: tuple[str, ...] = MATCHED_IDS
    ) -> CurrentView:
        """``ids``: the id columns its readers compare (each costs a comparison over the
        windows, so a batch served without a tree compares only the first-seen ones)."""
        b, width = records.shape
        rows = np.arange(b)
        hist = np.arange(width) < hist_len[:, None]
        cur = records[rows, hist_len]
        log_amount = np.log1p(np.maximum(records["amount"], 0.0))
        hist_log_amount = log_amount * hist
        return cls(
            records=records,
            hist_len=hist_len,
            rows=rows,
            hist=hist,
            cur=cur,
            log_amount=log_amount,
            current_log_amount=log_amount[rows, hist_len],
            hist_log_amount=hist_log_amount,
            history_sum=np.cumsum(hist_log_amount, axis=1)[:, -1],
            ids=ids,
            same_counts=_same_counts(records, cur, hist, ids),
        )

    def same_count(self, name: str) -> np.ndarray:
        """[B] int: ``same_counts`` of one id column (one of ``ids``)."""
        return self.same_counts[self.ids.index(name)]


def _same_counts(
    records: np.ndarray, cur: np.ndarray, hist: np.ndarray, ids: tuple[str, ...]
) -> np.ndarray:
    """``CurrentView.same_counts``: all columns in one comparison each and one count (at
    batch 1, a count per column cost about as much as the rest of the aggregates)."""
    b, width = records.shape
    same = np.empty((len(ids), b, width), dtype=bool)
    known = np.empty((len(ids), b), dtype=bool)
    for i, name in enumerate(ids):
        value = cur[name]
        np.equal(records[name], value[:, None], out=same[i])
        np.not_equal(value, 0, out=known[i])
    same &= hist
    return same.sum(axis=2) * known
