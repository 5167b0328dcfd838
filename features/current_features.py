"""The current event's inputs alone: what a warm incremental step and the head need.

``featurize_windows`` computes the step features of every window position, because the
window encoder reads them all. An incremental model with a cached state reads only the
current event's features (its history is already in the state), and computing a whole
window's features per event made featurization grow with the history: at full windows it
cost about half as much as the model step itself (docs/BENCHMARKS.md).

``current_features`` computes the same 16 features for the last position only, with a
handful of whole-array operations on the padded ``[B, L]`` window instead of one pass
per feature over every position. It follows ``flat_step_features`` operation for
operation (the same running sum, the same comparisons), so its values equal the current
rows of ``featurize_windows``; ``tests/features/test_current_features.py`` holds them to
that on windows with gaps, ties, unknown countries and missing coordinates.

The returned batch has *empty* history arrays (width 0): a caller that needs a row's
history (a cache miss to rebuild) featurizes those rows with ``featurize_windows``.
"""

from __future__ import annotations

import numpy as np

from features.current_view import FIRST_SEEN_IDS, MATCHED_IDS, CurrentView
from features.entity_profile import N_ENTITY
from features.featurize import (
    _DAY_MS,
    _HOUR_MS,
    _ROW_OFFSET,
    N_NUMERIC,
    PAD_ID,
    FeatureBatch,
    FeatureSpec,
    Windows,
    _first_seen,
    _haversine_km,
    normalize_entity,
)
from features.match_aggregates import match_aggregates
from features.tree_inputs import HISTORY_INDEX, aggregates, history_columns


def _last_before(flag: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """Each row's last history position where ``flag`` holds; -1 where none does."""
    width = flag.shape[1]
    return np.where(flag & hist, np.arange(width)[None, :], -1).max(axis=1, initial=-1)


def history_aggregates(
    win: Windows, spec: FeatureSpec, cur_mcc: np.ndarray, cur_raw: np.ndarray
) -> np.ndarray:
    """The tree's "window" history aggregates (older artifacts), from the windows'
    records: the four history columns it reads, computed per history position as the
    full featurization computes them (and rounded through its float32 inputs), padded to
    the same bucket, so the aggregates are the ones ``tree_inputs`` computes from a full
    batch."""
    recs, n = win.records, win.hist_len
    b = n.size
    m = int(n.max(initial=0))
    t = spec.bucket(m)
    r = recs[:, :m]
    pos = np.arange(m)[None, :]
    hist = pos < n[:, None]
    rows = np.arange(b)[:, None]
    cols = np.zeros((b, m, 4), dtype=np.float64)
    cols[..., 0] = np.log1p(np.maximum(r["amount"], 0.0))
    country = r["country"]
    known = country != 0
    upto = np.maximum.accumulate(np.where(known, pos, -1), axis=1)
    prev = np.full((b, m), -1, dtype=np.int64)
    prev[:, 1:] = upto[:, :-1]
    cols[..., 1] = known & (prev >= 0) & (country[rows, np.maximum(prev, 0)] != country)
    # the full featurization's first-seen test, on the flattened rows
    row_of = np.repeat(np.arange(b), m)
    cols[..., 2] = _first_seen(r["merchant"].ravel(), row_of).reshape(b, m)
    cols[..., 3] = _first_seen(r["device"].ravel(), row_of).reshape(b, m)
    mean, std = spec.mean_array[HISTORY_INDEX], spec.std_array[HISTORY_INDEX]
    norm = ((cols - mean) / std).astype(np.float32)  # what the network's inputs hold
    raw = np.zeros((b, t, 4), dtype=np.float32)
    raw[:, :m] = norm
    chan = np.full((b, t), PAD_ID, dtype=np.int64)
    mcc = np.full((b, t), PAD_ID, dtype=np.int64)
    chan[:, :m] = np.where(hist, r["channel"].astype(np.int64) + 1, PAD_ID)
    mcc[:, :m] = np.where(hist, spec.mcc_ids(r["mcc"]), PAD_ID)
    valid = np.zeros((b, t), dtype=bool)
    valid[:, :m] = hist
    return aggregates(
        history_columns(raw, spec.mean_array, spec.std_array),
        valid,
        chan,
        mcc,
        cur_mcc,
        cur_raw,
    )


def current_raw(view: CurrentView) -> np.ndarray:
    """Raw numeric features of each row's current event, [B, F] float64."""
    recs, n, rows, hist, cur = view.records, view.hist_len, view.rows, view.hist, view.cur
    b = n.size
    ts = cur["ts"]
    has_prev = n >= 1
    f = np.zeros((b, N_NUMERIC), dtype=np.float64)
    la = view.current_log_amount
    # the training path's running sum through the current event, less the current event:
    # the history's running sum plus ``la`` is that sum's last addition, bit for bit
    prev_sum = (view.history_sum + la) - la
    f[:, 0] = la
    f[:, 1] = np.where(has_prev, la - prev_sum / np.maximum(n, 1), 0.0)
    prev_ts = recs["ts"][rows, np.maximum(n - 1, 0)]
    dt = np.where(has_prev, (ts - prev_ts) / 1000.0, 0.0)
    f[:, 2] = np.where(has_prev, np.log1p(np.maximum(dt, 0.0)), 0.0)
    f[:, 3] = has_prev
    hour = (ts % _DAY_MS) / _HOUR_MS
    dow = ((ts // _DAY_MS) + 3) % 7
    f[:, 4] = np.sin(2 * np.pi * hour / 24)
    f[:, 5] = np.cos(2 * np.pi * hour / 24)
    f[:, 6] = np.sin(2 * np.pi * dow / 7)
    f[:, 7] = np.cos(2 * np.pi * dow / 7)
    country = cur["country"]
    pc = _last_before(recs["country"] != 0, hist)
    f[:, 8] = (country != 0) & (pc >= 0) & (recs["country"][rows, np.maximum(pc, 0)] != country)
    lat2d, lon2d = recs["lat"].astype(np.float64), recs["lon"].astype(np.float64)
    lat, lon = lat2d[rows, n], lon2d[rows, n]
    located = ~np.isnan(lat) & ~np.isnan(lon)
    pl = _last_before(~np.isnan(lat2d) & ~np.isnan(lon2d), hist)
    has_pl = located & (pl >= 0)
    plc = np.maximum(pl, 0)
    km = np.where(has_pl, _haversine_km(lat2d[rows, plc], lon2d[rows, plc], lat, lon), 0.0)
    km[np.isnan(km)] = 0.0  # finite or NaN here: nan_to_num's result, without its checks
    hours = (ts - recs["ts"][rows, plc]) / _HOUR_MS
    f[:, 9] = np.log1p(km)
    f[:, 10] = np.where(has_pl, np.log1p(km / np.maximum(hours, 1 / 60)), 0.0)
    # first-seen merchant and device: known here, and in none of the history's events
    for col, field in zip((11, 12), FIRST_SEEN_IDS, strict=True):
        f[:, col] = (cur[field] != 0) & (view.same_count(field) == 0)
    # velocity: earlier events of the window no older than the span (the training path
    # counts them with a searchsorted over time-sorted positions: the same set)
    clamped = np.minimum(recs["ts"], _ROW_OFFSET - 1)
    t_cur = np.minimum(ts, _ROW_OFFSET - 1)
    for col, span in ((13, _HOUR_MS), (14, _DAY_MS)):
        recent = ((clamped >= (t_cur - span)[:, None]) & hist).sum(axis=1)
        f[:, col] = np.log1p(recent)
    f[:, 15] = located
    return f


def current_features(
    win: Windows,
    spec: FeatureSpec,
    entity: np.ndarray | None = None,
    with_aggregates: bool = False,
) -> FeatureBatch:
    """The current events' model inputs (as ``featurize_windows`` gives them); the
    history arrays are empty (width 0). ``with_aggregates``: also the tree's history
    aggregates (a model with a tree part)."""
    match = with_aggregates and spec.tree_aggregates == "match"
    view = CurrentView.of(win.records, win.hist_len, MATCHED_IDS if match else FIRST_SEEN_IDS)
    raw = current_raw(view)
    b = raw.shape[0]
    cur = view.cur
    cur_entity = cur_entity_raw = None
    if spec.entity:
        raw_entity = np.zeros((b, N_ENTITY)) if entity is None else entity
        cur_entity_raw = raw_entity.astype(np.float32)
        cur_entity = normalize_entity(raw_entity, spec)
    cur_mcc = spec.mcc_ids(cur["mcc"])
    cur_raw = raw.astype(np.float32)
    aggregates = None
    if match:
        aggregates = match_aggregates(view)
    elif with_aggregates:
        aggregates = history_aggregates(win, spec, cur_mcc, cur_raw)
    return FeatureBatch(
        hist_num=np.zeros((b, 0, N_NUMERIC), dtype=np.float32),
        hist_mcc=np.full((b, 0), PAD_ID, dtype=np.int64),
        hist_channel=np.full((b, 0), PAD_ID, dtype=np.int64),
        hist_pad=np.zeros((b, 0), dtype=bool),
        hist_len=win.hist_len.astype(np.int64),
        cur_num=((raw - spec.mean_array) / spec.std_array).astype(np.float32),
        cur_mcc=cur_mcc,
        cur_channel=cur["channel"].astype(np.int64) + 1,
        cur_raw=cur_raw,
        cur_entity=cur_entity,
        cur_entity_raw=cur_entity_raw,
        aggregates=aggregates,
    )
