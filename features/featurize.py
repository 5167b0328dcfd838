"""One featurization for training and serving: records → fixed-shape model inputs.

Every event is featurized against the events *before* it inside its own window (the
user's last 30 days, at most ``max_history`` events). A window is the history followed
by the current event; the step features of the history feed the encoder, the step
features of the current event feed the head. Training and serving both call
``featurize_windows`` on windows built by ``windows`` below — from a file for training,
from Redis for serving — so the two paths cannot drift.

Everything is vectorized over the padded ``[B, L]`` window array: cumulative sums for
running means, running maxima for "previous located event", one global ``searchsorted``
for velocity counts and one ``lexsort`` for first-seen merchants/devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features.contracts import CHANNELS
from features.current_view import CurrentView
from features.entity_profile import ENTITY_FEATURES, N_ENTITY
from features.events import RECORD_DTYPE, opaque
from features.match_aggregates import match_aggregates

NUMERIC_FEATURES: tuple[str, ...] = (
    "log_amount",
    "amount_vs_history",
    "log_seconds_since_prev",
    "has_prev",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "country_change",
    "log_km_from_prev_located",
    "log_kmh_from_prev_located",
    "new_merchant",
    "new_device",
    "log_count_1h",
    "log_count_24h",
    "is_located",
)
N_NUMERIC = len(NUMERIC_FEATURES)
PAD_ID = 0
OOV_ID = 1
N_CHANNELS = len(CHANNELS) + 1  # + padding id 0
DEFAULT_BUCKETS = (16, 32, 64, 128, 256)
#: the tree's history aggregates a spec can name (``FeatureSpec.tree_aggregates``)
TREE_AGGREGATE_KINDS = ("match", "window")
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_ROW_OFFSET = np.int64(1) << np.int64(44)  # > any epoch ms before 2500


@dataclass(frozen=True)
class FeatureSpec:
    """What the model was trained on: stored in ``model.json`` and checked at load."""

    mcc_vocab: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    window_ms: int = 30 * _DAY_MS
    max_history: int = 256
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    numeric: tuple[str, ...] = NUMERIC_FEATURES
    version: str = "fs1"
    #: merchant/device profile inputs to the head (``features.entity_profile``); off for
    #: artifacts trained without them (and for data with neither id)
    entity: bool = False
    entity_mean: tuple[float, ...] = (0.0,) * N_ENTITY
    entity_std: tuple[float, ...] = (1.0,) * N_ENTITY
    #: which history aggregates the tree part reads (``features.tree_inputs``):
    #: "match" (comparisons with the current event, ``features.match_aggregates``) for
    #: artifacts trained since 2026-12-07; "window" (per-position shares) for older ones,
    #: whose trees were trained on those and keep being served with them
    tree_aggregates: str = "match"
    _mcc_lut: np.ndarray = field(init=False, repr=False, compare=False)
    #: the normalization statistics as read-only arrays, built once: serving featurizes a
    #: request of one event, where converting the tuples on every call showed up
    mean_array: np.ndarray = field(init=False, repr=False, compare=False)
    std_array: np.ndarray = field(init=False, repr=False, compare=False)
    entity_mean_array: np.ndarray = field(init=False, repr=False, compare=False)
    entity_std_array: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lut = np.full(10_000, OOV_ID, dtype=np.int64)
        for i, code in enumerate(self.mcc_vocab):
            lut[code] = i + 2
        object.__setattr__(self, "_mcc_lut", lut)
        for name in ("mean", "std", "entity_mean", "entity_std"):
            values = np.array(getattr(self, name), dtype=np.float64)
            values.setflags(write=False)
            object.__setattr__(self, f"{name}_array", values)
        if len(self.mean) != N_NUMERIC or len(self.std) != N_NUMERIC:
            raise ValueError("normalization stats do not match the numeric features")
        if len(self.entity_mean) != N_ENTITY or len(self.entity_std) != N_ENTITY:
            raise ValueError("normalization stats do not match the entity features")
        if self.tree_aggregates not in TREE_AGGREGATE_KINDS:
            raise ValueError(
                f"tree aggregates {self.tree_aggregates!r}: this build computes "
                f"{', '.join(TREE_AGGREGATE_KINDS)}"
            )

    @property
    def n_mcc(self) -> int:
        """MCC embedding rows: padding + OOV + vocabulary."""
        return len(self.mcc_vocab) + 2

    def mcc_ids(self, mcc: np.ndarray) -> np.ndarray:
        return self._mcc_lut[mcc.astype(np.int64)]

    def bucket(self, length: int) -> int:
        """Smallest bucket ≥ length (so short histories do not pay for long ones)."""
        for b in self.buckets:
            if length <= b:
                return b
        return self.buckets[-1]

    def to_json(self) -> dict[str, object]:
        entity: dict[str, object] = {}
        if self.entity:
            entity = {
                "entity": list(ENTITY_FEATURES),
                "entity_mean": list(self.entity_mean),
                "entity_std": list(self.entity_std),
            }
        return {
            **entity,
            "version": self.version,
            "numeric": list(self.numeric),
            "mcc_vocab": list(self.mcc_vocab),
            "mean": list(self.mean),
            "std": list(self.std),
            "window_ms": self.window_ms,
            "max_history": self.max_history,
            "buckets": list(self.buckets),
            "tree_aggregates": self.tree_aggregates,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        """Rebuild from ``model.json``; refuses a spec this build cannot compute."""
        numeric = tuple(str(x) for x in data["numeric"])
        if numeric != NUMERIC_FEATURES:
            raise ValueError(
                f"artifact expects features {numeric}, this build computes {NUMERIC_FEATURES}"
            )
        entity = tuple(str(x) for x in data.get("entity", ()))
        if entity and entity != ENTITY_FEATURES:
            raise ValueError(
                f"artifact expects entity features {entity}, this build computes {ENTITY_FEATURES}"
            )
        return cls(
            mcc_vocab=tuple(int(x) for x in data["mcc_vocab"]),
            mean=tuple(float(x) for x in data["mean"]),
            std=tuple(float(x) for x in data["std"]),
            window_ms=int(data["window_ms"]),
            max_history=int(data["max_history"]),
            buckets=tuple(int(x) for x in data["buckets"]),
            version=str(data["version"]),
            entity=bool(entity),
            entity_mean=tuple(float(x) for x in data.get("entity_mean", (0.0,) * N_ENTITY)),
            entity_std=tuple(float(x) for x in data.get("entity_std", (1.0,) * N_ENTITY)),
            # a spec written before the key existed was trained on the per-position ones
            tree_aggregates=str(data.get("tree_aggregates", "window")),
        )

    @classmethod
    def identity(cls, mcc_vocab: tuple[int, ...] = ()) -> FeatureSpec:
        """No normalization (for fitting stats and for tests)."""
        return cls(mcc_vocab, (0.0,) * N_NUMERIC, (1.0,) * N_NUMERIC)


@dataclass
class Windows:
    """Padded windows: history then the current event, right-padded to ``L``."""

    records: np.ndarray  # [B, L] RECORD_DTYPE
    hist_len: np.ndarray  # [B] int64: number of history events (current is at this index)

    def take(self, idx: np.ndarray) -> Windows:
        """Rows ``idx``."""
        return Windows(opaque(self.records)[idx].view(RECORD_DTYPE), self.hist_len[idx])


@dataclass
class FeatureBatch:
    """Model inputs for B current events (arrays ready for ONNX Runtime)."""

    hist_num: np.ndarray  # [B, T, F] float32
    hist_mcc: np.ndarray  # [B, T] int64
    hist_channel: np.ndarray  # [B, T] int64
    hist_pad: np.ndarray  # [B, T] bool, True = padding
    hist_len: np.ndarray  # [B] int64
    cur_num: np.ndarray  # [B, F] float32
    cur_mcc: np.ndarray  # [B] int64
    cur_channel: np.ndarray  # [B] int64
    cur_raw: np.ndarray = field(repr=False)  # [B, F] float32 unnormalized (for reasons)
    #: [B, N_ENTITY] float32 merchant/device inputs, normalized and raw; None when the
    #: spec has no entity features
    cur_entity: np.ndarray | None = None
    cur_entity_raw: np.ndarray | None = field(default=None, repr=False)
    #: [B, 10] float64: the tree's history aggregates (``features.tree_inputs``). Set for
    #: a "match" spec, and for a "window" spec on batches without history arrays
    #: (``features.current_features``); None: ``tree_inputs`` computes the "window"
    #: ones from the history arrays
    aggregates: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.hist_len.shape[0])

    def take(self, idx: np.ndarray) -> FeatureBatch:
        """Rows ``idx`` of every array."""
        rows: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            rows[name] = None if value is None else value[idx]
        return FeatureBatch(**rows)


# ----------------------------------------------------------------------------- windows


def history_bounds(
    ts: np.ndarray, user_codes: np.ndarray, index: np.ndarray, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray]:
    """(first history index, history length) of events ``index`` in the sorted layout."""
    index = np.asarray(index, dtype=np.int64)
    user_start = np.searchsorted(user_codes, user_codes[index], side="left")
    rel = ts - ts.min(initial=0)
    span = np.int64(rel.max(initial=0)) + np.int64(spec.window_ms) + 1
    key = user_codes.astype(np.int64) * span + rel
    win_start = np.searchsorted(key, key[index] - spec.window_ms, side="left")
    start = np.maximum(np.maximum(win_start, user_start), index - spec.max_history)
    return start, index - start


def windows_from_sorted(
    records: np.ndarray, user_codes: np.ndarray, index: np.ndarray, spec: FeatureSpec
) -> Windows:
    """Training path: windows for events ``index`` of a file sorted by (user, ts, tx).

    History of event i = the user's events before i with ts ≥ ts_i − window, last
    ``max_history`` — exactly what the store holds before i arrives.
    """
    start, hist_len = history_bounds(records["ts"], user_codes, index, spec)
    width = int(hist_len.max(initial=0)) + 1
    pos = start[:, None] + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] <= hist_len[:, None]
    out = np.zeros((start.size, width), dtype=RECORD_DTYPE)
    opaque(out)[valid] = opaque(records)[pos[valid]]
    return Windows(out, hist_len)


# ------------------------------------------------------------------------ step features


def _prev_flagged(flag: np.ndarray, row_start: np.ndarray) -> np.ndarray:
    """Flat index of the last earlier position *in the same row* where ``flag`` is set."""
    idx = np.where(flag, np.arange(flag.size), -1)
    incl = np.maximum.accumulate(idx)
    prev = np.empty_like(incl)
    prev[0] = -1
    prev[1:] = incl[:-1]
    return np.where(prev >= row_start, prev, -1)


def _first_seen(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """True where a non-zero value appears for the first time in its row (flat arrays,
    ``rows`` non-decreasing: rows one after another, each in time order).

    One stable sort by value is enough: it keeps equal values in their flat order, which
    is row order and then time order, so each (row, value) group starts at that row's
    first occurrence. A sort by (row, value, position) gives the same groups at about
    1.3x the cost (docs/BENCHMARKS.md).
    """
    order = np.argsort(values, kind="stable")
    r, v = rows[order], values[order]
    group_start = np.empty(order.size, dtype=bool)
    group_start[:1] = True
    group_start[1:] = (r[1:] != r[:-1]) | (v[1:] != v[:-1])
    first = np.empty(order.size, dtype=bool)
    first[order] = group_start
    return first & (values != 0)


def _haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def flat_step_features(win: Windows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw numeric features of the valid window positions, flattened row after row.

    Returns ``(features [n, F] float64, records [n], valid mask [B, L])``. Padding costs
    nothing here: a batch padded to its longest history (often several times the mean) would
    otherwise pay for every padded position in each of the 16 features.
    """
    b, length = win.records.shape
    valid = np.arange(length)[None, :] <= win.hist_len[:, None]
    rec = win.records[valid]  # flat, row-major: rows in order, time-sorted inside a row
    n = rec.size
    counts = win.hist_len + 1
    rows = np.repeat(np.arange(b), counts)
    row_first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    row_start = row_first[rows]
    k = np.arange(n) - row_start
    has_prev = k >= 1
    ts = rec["ts"]
    f = np.zeros((n, N_NUMERIC), dtype=np.float64)
    la = np.log1p(np.maximum(rec["amount"], 0.0))
    # per-row cumsum on the padded layout: a row's sums never depend on other rows' values
    la2d = np.zeros((b, length))
    la2d[valid] = la
    prev_sum = (np.cumsum(la2d, axis=1) - la2d)[valid]
    f[:, 0] = la
    f[:, 1] = np.where(has_prev, la - prev_sum / np.maximum(k, 1), 0.0)
    dt = np.zeros(n)
    dt[1:] = (ts[1:] - ts[:-1]) / 1000.0
    f[:, 2] = np.where(has_prev, np.log1p(np.maximum(dt, 0.0)), 0.0)
    f[:, 3] = has_prev
    hour = (ts % _DAY_MS) / _HOUR_MS
    dow = ((ts // _DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    f[:, 4] = np.sin(2 * np.pi * hour / 24)
    f[:, 5] = np.cos(2 * np.pi * hour / 24)
    f[:, 6] = np.sin(2 * np.pi * dow / 7)
    f[:, 7] = np.cos(2 * np.pi * dow / 7)
    country = rec["country"]
    known = country != 0
    pc = _prev_flagged(known, row_start)
    f[:, 8] = known & (pc >= 0) & (country[np.maximum(pc, 0)] != country)
    lat, lon = rec["lat"].astype(np.float64), rec["lon"].astype(np.float64)
    located = ~np.isnan(lat) & ~np.isnan(lon)
    pl = _prev_flagged(located, row_start)
    has_pl = located & (pl >= 0)
    plc = np.maximum(pl, 0)
    with np.errstate(invalid="ignore"):
        km = np.where(has_pl, _haversine_km(lat[plc], lon[plc], lat, lon), 0.0)
    km = np.nan_to_num(km)
    hours = (ts - ts[plc]) / _HOUR_MS
    f[:, 9] = np.log1p(km)
    f[:, 10] = np.where(has_pl, np.log1p(km / np.maximum(hours, 1 / 60)), 0.0)
    f[:, 11] = _first_seen(rec["merchant"], rows)
    f[:, 12] = _first_seen(rec["device"], rows)
    g = np.minimum(ts, _ROW_OFFSET - 1) + rows.astype(np.int64) * _ROW_OFFSET
    idx = np.arange(n)
    for col, span in ((13, _HOUR_MS), (14, _DAY_MS)):
        first = np.searchsorted(g, g - span, side="left")
        f[:, col] = np.log1p(idx - first)
    f[:, 15] = located
    return f, rec, valid


def step_features(win: Windows) -> np.ndarray:
    """Raw (unnormalized) numeric features of every window position: [B, L, F] float64."""
    f, _, valid = flat_step_features(win)
    out = np.zeros((*valid.shape, N_NUMERIC), dtype=np.float64)
    out[valid] = f
    return out


def featurize_windows(
    win: Windows,
    spec: FeatureSpec,
    pad_to: int | None = None,
    entity: np.ndarray | None = None,
) -> FeatureBatch:
    """Windows → model inputs; history padded to ``pad_to`` or the batch's bucket.

    ``entity``: the raw merchant/device inputs of the current events ([B, N_ENTITY], from
    ``features.entity_profile.features_from_stats``); zeros (entities absent) when not
    given and the spec uses them; ignored when it does not.

    Works on the flat valid positions and scatters once into the padded float32 output:
    row-major, each row's history positions come first and its current event last, so
    "every flat position except the currents" fills ``~pad`` in order.
    """
    flat, rec, _ = flat_step_features(win)
    b = win.hist_len.shape[0]
    max_len = int(win.hist_len.max(initial=0))
    t = pad_to if pad_to is not None else spec.bucket(max_len)
    if t < max_len:
        raise ValueError(f"pad_to={t} is shorter than the longest history ({max_len})")
    norm = ((flat - spec.mean_array) / spec.std_array).astype(np.float32)
    cur_idx = np.cumsum(win.hist_len + 1) - 1
    is_hist = np.ones(flat.shape[0], dtype=bool)
    is_hist[cur_idx] = False
    pad = np.arange(t)[None, :] >= win.hist_len[:, None]
    real = ~pad
    hist_num = np.zeros((b, t, N_NUMERIC), dtype=np.float32)
    hist_num[real] = norm[is_hist]
    mcc_all = spec.mcc_ids(rec["mcc"])
    chan_all = rec["channel"].astype(np.int64) + 1
    mcc = np.full((b, t), PAD_ID, dtype=np.int64)
    chan = np.full((b, t), PAD_ID, dtype=np.int64)
    mcc[real] = mcc_all[is_hist]
    chan[real] = chan_all[is_hist]
    cur_entity = cur_entity_raw = None
    if spec.entity:
        raw_entity = np.zeros((b, N_ENTITY)) if entity is None else entity
        cur_entity_raw = raw_entity.astype(np.float32)
        cur_entity = normalize_entity(raw_entity, spec)
    return FeatureBatch(
        hist_num=hist_num,
        hist_mcc=mcc,
        hist_channel=chan,
        hist_pad=pad,
        hist_len=win.hist_len.astype(np.int64),
        cur_num=norm[cur_idx],
        cur_mcc=mcc_all[cur_idx],
        cur_channel=chan_all[cur_idx],
        cur_raw=flat[cur_idx].astype(np.float32),
        cur_entity=cur_entity,
        cur_entity_raw=cur_entity_raw,
        aggregates=(
            match_aggregates(CurrentView.of(win.records, win.hist_len))
            if spec.tree_aggregates == "match"
            else None
        ),
    )


def normalize_entity(raw: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Raw entity inputs → the head's normalized float32 inputs."""
    return ((raw - spec.entity_mean_array) / spec.entity_std_array).astype(np.float32)


def fit_spec(
    records: np.ndarray,
    user_codes: np.ndarray,
    sample: np.ndarray,
    min_mcc_count: int = 20,
    window_ms: int = 30 * _DAY_MS,
    max_history: int = 256,
    entity_sample: np.ndarray | None = None,
) -> FeatureSpec:
    """Vocabulary and normalization statistics from training data only.

    ``entity_sample``: raw entity inputs of the sampled events; given, the spec uses
    entity features.
    """
    codes, counts = np.unique(records["mcc"], return_counts=True)
    vocab = tuple(int(c) for c, n in zip(codes, counts, strict=True) if n >= min_mcc_count)
    raw = FeatureSpec(vocab, (0.0,) * N_NUMERIC, (1.0,) * N_NUMERIC, window_ms, max_history)
    win = windows_from_sorted(records, user_codes, sample, raw)
    steps = step_features(win)
    valid = np.arange(steps.shape[1])[None, :] <= win.hist_len[:, None]
    values = steps[valid]
    mean = values.mean(axis=0)
    std = np.maximum(values.std(axis=0), 1e-3)
    entity: dict[str, Any] = {}
    if entity_sample is not None:
        entity = {
            "entity": True,
            "entity_mean": tuple(map(float, entity_sample.mean(axis=0))),
            "entity_std": tuple(map(float, np.maximum(entity_sample.std(axis=0), 1e-3))),
        }
    return FeatureSpec(
        vocab,
        tuple(map(float, mean)),
        tuple(map(float, std)),
        window_ms,
        max_history,
        **entity,
    )


def windows_including_current(win: Windows, spec: FeatureSpec) -> Windows:
    """Each window's history *with* its current event, as a later event would see it.

    A copy of the current event is appended as a placeholder "next" event; when that
    makes the history longer than ``max_history`` the oldest event drops out, exactly as
    it would for the user's next real event. Used for cache refreshes (the embedding the
    user's next event will need) and for fraud-case embeddings.
    """
    recs, n = win.records, win.hist_len + 1
    ext = np.zeros((recs.shape[0], recs.shape[1] + 1), dtype=recs.dtype)
    ext[:, :-1] = recs
    full = n > spec.max_history
    if full.any():
        ext[full, :-1] = np.roll(ext[full, :-1], -1, axis=1)
        n = np.where(full, n - 1, n)
    rows = np.arange(recs.shape[0])
    ext[rows, n] = ext[rows, n - 1]
    return Windows(ext, n)
