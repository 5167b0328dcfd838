"""Per-card state of the incremental model (``models.incremental_network``), in numpy.

A card's state is one float32 row: the LSTM's ``h`` and ``c``, then the step features
of its last ``context - 1`` events (numeric, MCC id, channel id, and a pad flag where
the card had fewer events). Advancing by one event is one call of the step graph over
those rows plus the new event's own features (``cur_*``, computed when it was scored),
so its cost does not depend on how long the history is.

A card with no usable state (new to this worker, evicted, restored from another
model's snapshot) is *rebuilt* from its stored window: the step runs over the window's
events, oldest first, from a zero state. The window's step features are the ones
scoring computes anyway (each event against the events before it in the window), so a
rebuilt state equals the live one while the card's whole history fits in the window;
beyond that it starts its LSTM at the window's start (docs/MODEL.md measures both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: ``(ctx_num, ctx_mcc, ctx_channel, ctx_pad, h, c) -> (next_h, next_c, next_embedding)``
StepFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
#: ``(hist_num, hist_mcc, hist_channel) -> (h, c, embedding)`` after equal-length windows
WholeFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class StateLayout:
    """How a state row is laid out."""

    hidden: int
    context: int
    n_numeric: int

    @property
    def kept(self) -> int:
        """Earlier events a state keeps (the step reads them and the new event)."""
        return self.context - 1

    @property
    def width(self) -> int:
        return 2 * self.hidden + self.kept * (self.n_numeric + 3)

    def empty(self, b: int) -> np.ndarray:
        """States of cards with no events: zero LSTM state, all context padding."""
        out = np.zeros((b, self.width), np.float32)
        out[:, -self.kept :] = 1.0
        return out

    def unpack(self, states: np.ndarray) -> tuple[np.ndarray, ...]:
        """(h, c, ctx_num, ctx_mcc, ctx_channel, ctx_pad) of each row."""
        b, d, k, f = states.shape[0], self.hidden, self.kept, self.n_numeric
        h = states[:, :d]
        c = states[:, d : 2 * d]
        at = 2 * d
        num = states[:, at : at + k * f].reshape(b, k, f)
        at += k * f
        mcc = states[:, at : at + k].astype(np.int64)
        channel = states[:, at + k : at + 2 * k].astype(np.int64)
        pad = states[:, at + 2 * k :] > 0.5
        return h, c, num, mcc, channel, pad

    def pack(
        self,
        h: np.ndarray,
        c: np.ndarray,
        num: np.ndarray,
        mcc: np.ndarray,
        channel: np.ndarray,
        pad: np.ndarray,
    ) -> np.ndarray:
        b = h.shape[0]
        return np.concatenate(
            [
                h.astype(np.float32, copy=False),
                c.astype(np.float32, copy=False),
                num.reshape(b, -1).astype(np.float32, copy=False),
                mcc.astype(np.float32),
                channel.astype(np.float32),
                pad.astype(np.float32),
            ],
            axis=1,
        )


def advance(
    step: StepFn,
    layout: StateLayout,
    states: np.ndarray,
    num: np.ndarray,
    mcc: np.ndarray,
    channel: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """States after one more event per row (its step features), and their embeddings."""
    h, c, ctx_num, ctx_mcc, ctx_channel, ctx_pad = layout.unpack(states)
    b = states.shape[0]
    full_num = np.concatenate([ctx_num, num.reshape(b, 1, -1)], axis=1).astype(np.float32)
    full_mcc = np.concatenate([ctx_mcc, mcc.reshape(b, 1)], axis=1)
    full_channel = np.concatenate([ctx_channel, channel.reshape(b, 1)], axis=1)
    full_pad = np.concatenate([ctx_pad, np.zeros((b, 1), bool)], axis=1)
    h2, c2, emb = step(full_num, full_mcc, full_channel, full_pad, h, c)
    nxt = layout.pack(
        h2, c2, full_num[:, 1:], full_mcc[:, 1:], full_channel[:, 1:], full_pad[:, 1:]
    )
    return nxt, emb


def _empty_rows(
    layout: StateLayout, empty_embedding: np.ndarray, b: int
) -> tuple[np.ndarray, np.ndarray]:
    """The states and embeddings of ``b`` cards with no events (a rebuild's start)."""
    emb = np.repeat(empty_embedding.reshape(1, -1), b, axis=0).astype(np.float32)
    return layout.empty(b), emb


def rebuild(
    step: StepFn,
    layout: StateLayout,
    empty_embedding: np.ndarray,
    hist_num: np.ndarray,
    hist_mcc: np.ndarray,
    hist_channel: np.ndarray,
    hist_len: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """States and embeddings after each row's history (step features [B, T, F]), from
    zero: one batched step per position, over the rows that still have events."""
    states, emb = _empty_rows(layout, empty_embedding, hist_len.size)
    for p in range(int(hist_len.max(initial=0))):
        rows = np.flatnonzero(hist_len > p)
        states[rows], emb[rows] = advance(
            step, layout, states[rows], hist_num[rows, p], hist_mcc[rows, p], hist_channel[rows, p]
        )
    return states, emb


def rebuild_whole(
    whole: WholeFn,
    layout: StateLayout,
    empty_embedding: np.ndarray,
    hist_num: np.ndarray,
    hist_mcc: np.ndarray,
    hist_channel: np.ndarray,
    hist_len: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """What ``rebuild`` returns, with the rebuild graph: one call per distinct window
    length (rows grouped by exact length, so nothing is padded and the LSTM's final
    state is each row's own). The kept context is the window's last events, padded
    as an empty state is where the window is shorter."""
    states, emb = _empty_rows(layout, empty_embedding, hist_len.size)
    k, f = layout.kept, layout.n_numeric
    for n in np.unique(hist_len[hist_len > 0]).tolist():
        rows = np.flatnonzero(hist_len == n)
        num, mcc, channel = hist_num[rows, :n], hist_mcc[rows, :n], hist_channel[rows, :n]
        h, c, emb[rows] = whole(num, mcc, channel)
        m = len(rows)
        ctx_num = np.zeros((m, k, f), np.float32)
        ctx_mcc = np.zeros((m, k), np.int64)
        ctx_channel = np.zeros((m, k), np.int64)
        pad = np.ones((m, k), bool)
        take = min(k, n)
        ctx_num[:, k - take :] = num[:, n - take :]
        ctx_mcc[:, k - take :] = mcc[:, n - take :]
        ctx_channel[:, k - take :] = channel[:, n - take :]
        pad[:, k - take :] = False
        states[rows] = layout.pack(h, c, ctx_num, ctx_mcc, ctx_channel, pad)
    return states, emb


def replay(
    step: StepFn,
    layout: StateLayout,
    empty_embedding: np.ndarray,
    events: tuple[np.ndarray, np.ndarray, np.ndarray],
    runs: tuple[np.ndarray, np.ndarray],
    before_rows: np.ndarray,
    after_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cards streamed in order with their state kept, as a warm worker scores them.

    ``events``: step features (numeric [N, F], MCC ids, channel ids) laid out as
    contiguous, time-sorted runs per card (``runs``: start, length). Returns the embedding
    each of ``before_rows`` is scored with (the state after the card's events before it)
    and the embedding after each of ``after_rows`` (the state including it); only those
    rows are kept, whatever N is.
    """
    num, mcc, channel = events
    start, length = runs
    n = num.shape[0]
    after_rows = np.zeros(0, np.int64) if after_rows is None else after_rows
    want_before = np.full(n, -1, np.int64)
    want_before[before_rows] = np.arange(before_rows.size)
    want_after = np.full(n, -1, np.int64)
    want_after[after_rows] = np.arange(after_rows.size)
    dim = empty_embedding.size
    before = np.repeat(empty_embedding.reshape(1, -1), before_rows.size, axis=0)
    after = np.zeros((after_rows.size, dim), np.float32)
    states = layout.empty(start.size)
    for p in range(int(length.max(initial=0))):
        cards = np.flatnonzero(length > p)
        ev = start[cards] + p
        states[cards], emb = advance(step, layout, states[cards], num[ev], mcc[ev], channel[ev])
        k = want_after[ev]
        after[k[k >= 0]] = emb[k >= 0]
        nxt = np.flatnonzero(length[cards] > p + 1)
        k = want_before[ev[nxt] + 1]
        before[k[k >= 0]] = emb[nxt][k >= 0]
    return before.astype(np.float32), after
