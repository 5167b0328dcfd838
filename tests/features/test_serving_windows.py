"""The serving windows' gather path gives exactly the windows of the general merge."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.events import RECORD_DTYPE
from features.featurize import FeatureSpec
from features.serving_windows import appended_windows, merged_windows, windows_for_batch

_DAY = 86_400_000


def _spec(window_ms: int, max_history: int) -> FeatureSpec:
    n = 16
    return FeatureSpec(
        mcc_vocab=(5411,),
        mean=(0.0,) * n,
        std=(1.0,) * n,
        window_ms=window_ms,
        max_history=max_history,
    )


def _records(rng: np.random.Generator, ts: np.ndarray, tx: np.ndarray) -> np.ndarray:
    out = np.zeros(ts.size, dtype=RECORD_DTYPE)
    out["ts"], out["tx"] = ts, tx
    out["amount"] = rng.uniform(1, 500, ts.size)
    out["mcc"] = rng.integers(0, 9999, ts.size)
    out["merchant"] = rng.integers(1, 5, ts.size)
    return out


def _stored(rng: np.random.Generator, n: int, window_ms: int) -> np.ndarray:
    """A sequence as the store keeps it: strictly increasing in (ts, tx), ties in ts."""
    span = window_ms // 20 if rng.random() < 0.5 else 3 * window_ms  # dense or sparse
    times = rng.integers(0, span, n // 2 + 1)  # fewer times than events: ties
    ts = np.sort(rng.choice(times, n))
    tx = rng.choice(np.arange(1, 2 * n + 10, dtype=np.uint64), n, replace=False)
    rec = _records(rng, ts, tx)
    return rec[np.lexsort((rec["tx"], rec["ts"]))]


def _assert_same(a_rec: np.ndarray, a_len: np.ndarray, b_rec: np.ndarray, b_len: np.ndarray):
    assert a_rec.shape == b_rec.shape
    assert a_rec.tobytes() == b_rec.tobytes()
    assert np.array_equal(a_len, b_len)
    assert a_len.dtype == b_len.dtype


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), users=st.integers(1, 8), batch=st.integers(0, 14))
def test_windows_equal_the_general_merge(seed: int, users: int, batch: int) -> None:
    """Whatever the batch holds (a card's several events, replays of stored or batch
    events, late events, ties in time, cards with no history, histories longer than the
    cap or older than the window), every row's window is the general path's, byte for
    byte, and so is the array's width."""
    rng = np.random.default_rng(seed)
    window_ms = int(rng.choice([2 * _DAY, 30 * _DAY]))
    spec = _spec(window_ms, int(rng.choice([4, 8, 256])))
    names = [f"u{i}" for i in range(users)]
    prior = {
        u: _stored(rng, int(rng.integers(0, 20)), window_ms) for u in names if rng.random() < 0.8
    }
    ids = [names[int(i)] for i in rng.integers(0, users, batch)]
    rows = []
    for u in ids:
        seq = prior.get(u, np.zeros(0, RECORD_DTYPE))
        kind = rng.random()
        if kind < 0.15 and seq.size:  # a replay of a stored event (same or other time)
            r = seq[int(rng.integers(0, seq.size))].copy()
            if rng.random() < 0.3:
                r["ts"] += int(rng.integers(1, _DAY))
        elif kind < 0.3 and seq.size:  # a late event
            r = _records(
                rng,
                np.array([seq["ts"][-1] - int(rng.integers(0, window_ms))]),
                np.array([rng.integers(1, 2**63)], dtype=np.uint64),
            )[0]
        elif kind < 0.4 and seq.size:  # at the last stored event's time, either side of it
            tie = np.array([rng.integers(1, 2 * seq.size + 10)], dtype=np.uint64)
            r = _records(rng, seq["ts"][-1:], tie)[0]
        else:
            last = int(seq["ts"][-1]) if seq.size else 0
            at = last + int(rng.integers(0, 2 * window_ms))
            if seq.size and rng.random() < 0.3:  # a stored event exactly one window back
                at = max(last + 1, int(rng.choice(seq["ts"])) + window_ms)
            r = _records(rng, np.array([at]), np.array([rng.integers(1, 2**63)], dtype=np.uint64))[
                0
            ]
        rows.append(r)
    if rows and rng.random() < 0.2:  # a replay inside the batch
        rows.append(rows[0].copy())
        ids.append(ids[0])
    records = np.array(rows, dtype=RECORD_DTYPE) if rows else np.zeros(0, RECORD_DTYPE)
    fast = windows_for_batch(prior, ids, records, spec)
    merged = merged_windows(prior, ids, records, spec)
    _assert_same(fast.records, fast.hist_len, merged.records, merged.hist_len)


def test_the_common_rows_take_the_gather_and_the_others_do_not() -> None:
    """A card whose batch events are all new and later than its stored ones qualifies
    (one event or several, and a new card too); a replay (of a stored event or inside
    the batch), a late event and an out-of-order stored sequence do not: they are the
    merge's."""
    rng = np.random.default_rng(3)
    spec = _spec(30 * _DAY, 256)
    seq = _records(rng, 10 * _DAY + np.arange(6) * 1000, np.arange(1, 7, dtype=np.uint64))
    prior = {u: seq for u in "abcdf"} | {"e": seq[::-1].copy()}
    ids = ["a", "b", "b", "c", "d", "e", "new", "f", "f"]
    ev = _records(rng, np.full(9, 11 * _DAY), np.arange(1001, 1010, dtype=np.uint64))
    ev[2] = ev[1]  # b: the same event twice in the batch
    ev[3] = seq[3]  # c: a replay of a stored event
    ev[4]["ts"] = seq["ts"][0]  # d: late
    ev[7]["ts"] += 5  # f: two new events, the later one first
    rows, win = appended_windows(prior, ids, ev, spec)
    assert rows.tolist() == [0, 6, 7, 8]
    assert win.hist_len.tolist() == [6, 0, 7, 6]
    assert win.records[0, :6].tobytes() == seq.tobytes()
    assert win.records[0, 6].tobytes() == ev[0].tobytes()
    assert win.records[1, 0].tobytes() == ev[6].tobytes()
    assert win.records[2, 6].tobytes() == ev[8].tobytes()  # f's earlier event first
    assert win.records[2, 7].tobytes() == ev[7].tobytes()
    merged = merged_windows(prior, ids, ev, spec)
    fast = windows_for_batch(prior, ids, ev, spec)
    _assert_same(fast.records, fast.hist_len, merged.records, merged.hist_len)
