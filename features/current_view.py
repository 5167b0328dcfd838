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

from dataclasses import dataclass, field

import numpy as np

#: the id columns the tree's aggregates compare with the current event's
MATCHED_IDS = ("merchant", "device", "country", "mcc")
#: the ones the current event's features compare (first-seen merchant and device)
FIRST_SEEN_IDS = ("merchant", "device")


@dataclass
class CurrentView:
    """A padded batch of windows (``records`` [B, L]: each row's history, then its current
    event at ``hist_len``), with the arrays its readers share."""

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
    #: the id columns ``same_counts`` compares, in its order
    ids: tuple[str, ...]
    _counts: np.ndarray | None = field(default=None, repr=False)
    _current_log_amount: np.ndarray | None = field(default=None, repr=False)
    _hist_log_amount: np.ndarray | None = field(default=None, repr=False)
    _history_sum: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(
        cls, records: np.ndarray, hist_len: np.ndarray, ids: tuple[str, ...] = MATCHED_IDS
    ) -> CurrentView:
        """``ids``: the id columns its readers compare (each costs a comparison over the
        windows, so a batch served without a tree compares only the first-seen ones)."""
        b, width = records.shape
        rows = np.arange(b)
        return cls(
            records=records,
            hist_len=hist_len,
            rows=rows,
            hist=np.arange(width) < hist_len[:, None],
            cur=records[rows, hist_len],
            log_amount=np.log1p(np.maximum(records["amount"], 0.0)),
            ids=ids,
        )

    def same_count(self, name: str) -> np.ndarray:
        """[B] int: the history events that share the current event's ``name`` (one of
        ``ids``); 0 where the current one is unknown (0)."""
        return self.same_counts()[self.ids.index(name)]

    def same_counts(self) -> np.ndarray:
        """[len(ids), B] int: ``same_count`` of each id column. All in one comparison
        each and one count: at batch 1, a count per column cost about as much as the rest
        of the aggregates."""
        if self._counts is None:
            b, width = self.records.shape
            same = np.empty((len(self.ids), b, width), dtype=bool)
            known = np.empty((len(self.ids), b), dtype=bool)
            for i, name in enumerate(self.ids):
                value = self.cur[name]
                np.equal(self.records[name], value[:, None], out=same[i])
                np.not_equal(value, 0, out=known[i])
            same &= self.hist
            self._counts = same.sum(axis=2) * known
        return self._counts

    @property
    def current_log_amount(self) -> np.ndarray:
        """[B] float64: the current events' log-amounts."""
        if self._current_log_amount is None:
            self._current_log_amount = self.log_amount[self.rows, self.hist_len]
        return self._current_log_amount

    @property
    def hist_log_amount(self) -> np.ndarray:
        """[B, L] float64: the log-amounts at history positions, 0 elsewhere. Masked by
        multiplication: log-amounts are never negative, so this equals ``np.where``'s
        result bit for bit, in one call fewer."""
        if self._hist_log_amount is None:
            self._hist_log_amount = self.log_amount * self.hist
        return self._hist_log_amount

    @property
    def history_sum(self) -> np.ndarray:
        """[B] float64: each row's history log-amounts summed in order: a running sum,
        read at the last column (past the history every addend is +0.0, which changes no
        sum), so the same bits however far the batch pads the row."""
        if self._history_sum is None:
            self._history_sum = np.cumsum(self.hist_log_amount, axis=1)[:, -1]
        return self._history_sum
