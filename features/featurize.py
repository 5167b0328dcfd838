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
from features.events import RECORD_DTYPE

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
    _mcc_lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lut = np.full(10_000, OOV_ID, dtype=np.int64)
        for i, code in enumerate(self.mcc_vocab):
            lut[code] = i + 2
        object.__setattr__(self, "_mcc_lut", lut)
        if len(self.mean) != N_NUMERIC or len(self.std) != N_NUMERIC:
            raise ValueError("normalization stats do not match the numeric features")

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
        return {
            "version": self.version,
            "numeric": list(self.numeric),
            "mcc_vocab": list(self.mcc_vocab),
            "mean": list(self.mean),
            "std": list(self.std),
            "window_ms": self.window_ms,
            "max_history": self.max_history,
            "buckets": list(self.buckets),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        """Rebuild from ``model.json``; refuses a spec this build cannot compute."""
        numeric = tuple(str(x) for x in data["numeric"])
        if numeric != NUMERIC_FEATURES:
            raise ValueError(
                f"artifact expects features {numeric}, this build computes {NUMERIC_FEATURES}"
            )
        return cls(
            mcc_vocab=tuple(int(x) for x in data["mcc_vocab"]),
            mean=tuple(float(x) for x in data["mean"]),
            std=tuple(float(x) for x in data["std"]),
            window_ms=int(data["window_ms"]),
            max_history=int(data["max_history"]),
            buckets=tuple(int(x) for x in data["buckets"]),
            version=str(data["version"]),
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

    def __len__(self) -> int:
        return int(self.hist_len.shape[0])

    def take(self, idx: np.ndarray) -> FeatureBatch:
        """Rows ``idx``, trimmed to the bucket of their longest history."""
        return FeatureBatch(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


# ----------------------------------------------------------------------------- windows


def windows_from_sorted(
    records: np.ndarray, user_codes: np.ndarray, index: np.ndarray, spec: FeatureSpec
) -> Windows:
    """Training path: windows for events ``index`` of a file sorted by (user, ts, tx).

    History of event i = the user's events before i with ts ≥ ts_i − window, last
    ``max_history`` — exactly what the store holds before i arrives.
    """
    index = np.asarray(index, dtype=np.int64)
    ts = records["ts"]
    user_start = np.searchsorted(user_codes, user_codes[index], side="left")
    # first event inside the window: search in the user's own (sorted) timestamps
    rel = ts - ts.min(initial=0)
    span = np.int64(rel.max(initial=0)) + np.int64(spec.window_ms) + 1
    key = user_codes.astype(np.int64) * span + rel
    win_start = np.searchsorted(key, key[index] - spec.window_ms, side="left")
    start = np.maximum(np.maximum(win_start, user_start), index - spec.max_history)
    hist_len = index - start
    width = int(hist_len.max(initial=0)) + 1
    pos = start[:, None] + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] <= hist_len[:, None]
    out = np.zeros((index.size, width), dtype=RECORD_DTYPE)
    out[valid] = records[pos[valid]]
    return Windows(out, hist_len)


def windows_from_histories(
    histories: list[np.ndarray], current: np.ndarray, spec: FeatureSpec
) -> Windows:
    """Serving path: each current event with the events known before it.

    ``histories[i]`` may hold anything known about the user (prior store content plus
    earlier events of the same batch, even the event itself on a replay); only events
    ordered before ``current[i]`` by (ts, tx) and inside the window are kept.
    """
    kept = []
    for hist, cur in zip(histories, current, strict=True):
        ts, tx = hist["ts"], hist["tx"]
        before = (ts < cur["ts"]) | ((ts == cur["ts"]) & (tx < cur["tx"]))
        before &= ts >= cur["ts"] - spec.window_ms
        h = hist[before]
        if h.size > 1:
            h = h[np.lexsort((h["tx"], h["ts"]))]
        kept.append(h[-spec.max_history :] if spec.max_history else h[:0])
    hist_len = np.array([h.size for h in kept], dtype=np.int64)
    width = int(hist_len.max(initial=0)) + 1
    out = np.zeros((len(kept), width), dtype=RECORD_DTYPE)
    for i, h in enumerate(kept):
        out[i, : h.size] = h
        out[i, h.size] = current[i]
    return Windows(out, hist_len)


def batch_histories(
    prior: dict[str, np.ndarray], user_ids: list[str], records: np.ndarray
) -> list[np.ndarray]:
    """Per event: what is known about its user (store content ∪ this batch), deduplicated.

    ``windows_from_histories`` then keeps only what precedes each event, so several
    events of one user in one batch see each other in time order, as in training.
    """
    by_user: dict[str, list[int]] = {}
    for i, user in enumerate(user_ids):
        by_user.setdefault(user, []).append(i)
    known: dict[str, np.ndarray] = {}
    for user, idx in by_user.items():
        combined = np.concatenate([prior.get(user, records[:0]), records[idx]])
        _, first = np.unique(combined["tx"], return_index=True)
        known[user] = combined[np.sort(first)]
    return [known[u] for u in user_ids]


# ------------------------------------------------------------------------ step features


def _prev_index(flag: np.ndarray) -> np.ndarray:
    """For each position, the index of the last earlier position where ``flag`` is set."""
    b, length = flag.shape
    idx = np.where(flag, np.arange(length)[None, :], -1)
    incl = np.maximum.accumulate(idx, axis=1)
    prev = np.full((b, length), -1, dtype=np.int64)
    prev[:, 1:] = incl[:, :-1]
    return prev


def _first_seen(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """True where a non-zero value appears for the first time in its row."""
    b, length = values.shape
    rows = np.broadcast_to(np.arange(b)[:, None], (b, length)).ravel()
    pos = np.broadcast_to(np.arange(length)[None, :], (b, length)).ravel()
    flat = values.ravel()
    order = np.lexsort((pos, flat, rows))
    r, v = rows[order], flat[order]
    group_start = np.ones(order.size, dtype=bool)
    group_start[1:] = (r[1:] != r[:-1]) | (v[1:] != v[:-1])
    first = np.zeros(order.size, dtype=bool)
    first[order] = group_start
    return first.reshape(b, length) & valid & (values != 0)


def _haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def step_features(win: Windows) -> np.ndarray:
    """Raw (unnormalized) numeric features of every window position: [B, L, F] float64."""
    rec = win.records
    b, length = rec.shape
    k = np.arange(length)[None, :]
    valid = k <= win.hist_len[:, None]
    ts = rec["ts"]
    out = np.zeros((b, length, N_NUMERIC), dtype=np.float64)
    la = np.log1p(np.maximum(rec["amount"], 0.0)) * valid
    prev_sum = np.cumsum(la, axis=1) - la
    has_prev = (k >= 1) & valid
    out[..., 0] = la
    out[..., 1] = np.where(has_prev, la - prev_sum / np.maximum(k, 1), 0.0)
    dt = np.zeros((b, length))
    dt[:, 1:] = (ts[:, 1:] - ts[:, :-1]) / 1000.0
    out[..., 2] = np.where(has_prev, np.log1p(np.maximum(dt, 0.0)), 0.0)
    out[..., 3] = has_prev
    hour = (ts % _DAY_MS) / _HOUR_MS
    dow = ((ts // _DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    out[..., 4] = np.sin(2 * np.pi * hour / 24)
    out[..., 5] = np.cos(2 * np.pi * hour / 24)
    out[..., 6] = np.sin(2 * np.pi * dow / 7)
    out[..., 7] = np.cos(2 * np.pi * dow / 7)
    country = rec["country"]
    known = (country != 0) & valid
    pc = _prev_index(known)
    prev_country = np.take_along_axis(country, np.maximum(pc, 0), axis=1)
    out[..., 8] = known & (pc >= 0) & (prev_country != country)
    lat, lon = rec["lat"].astype(np.float64), rec["lon"].astype(np.float64)
    located = ~np.isnan(lat) & ~np.isnan(lon) & valid
    pl = _prev_index(located)
    has_pl = located & (pl >= 0)
    plc = np.maximum(pl, 0)
    lat0 = np.take_along_axis(lat, plc, axis=1)
    lon0 = np.take_along_axis(lon, plc, axis=1)
    with np.errstate(invalid="ignore"):
        km = np.where(has_pl, _haversine_km(lat0, lon0, lat, lon), 0.0)
    hours = (ts - np.take_along_axis(ts, plc, axis=1)) / _HOUR_MS
    out[..., 9] = np.log1p(np.nan_to_num(km))
    out[..., 10] = np.where(has_pl, np.log1p(np.nan_to_num(km) / np.maximum(hours, 1 / 60)), 0.0)
    out[..., 11] = _first_seen(rec["merchant"], valid)
    out[..., 12] = _first_seen(rec["device"], valid)
    g = np.where(valid, ts, np.iinfo(np.int64).max // 4)
    g = np.minimum(g, _ROW_OFFSET - 1) + np.arange(b, dtype=np.int64)[:, None] * _ROW_OFFSET
    flat = g.ravel()
    idx = np.arange(flat.size).reshape(b, length)
    for col, span in ((13, _HOUR_MS), (14, _DAY_MS)):
        first = np.searchsorted(flat, flat - span, side="left").reshape(b, length)
        out[..., col] = np.where(valid, np.log1p(idx - first), 0.0)
    out[..., 15] = located
    out[~valid] = 0.0
    return out


def featurize_windows(win: Windows, spec: FeatureSpec, pad_to: int | None = None) -> FeatureBatch:
    """Windows → model inputs; history padded to ``pad_to`` or the batch's bucket."""
    steps = step_features(win)
    b = steps.shape[0]
    max_len = int(win.hist_len.max(initial=0))
    t = pad_to if pad_to is not None else spec.bucket(max_len)
    if t < max_len:
        raise ValueError(f"pad_to={t} is shorter than the longest history ({max_len})")
    mean = np.asarray(spec.mean)
    std = np.asarray(spec.std)
    norm = ((steps - mean) / std).astype(np.float32)
    rows = np.arange(b)
    cur_raw = steps[rows, win.hist_len].astype(np.float32)
    cur_num = norm[rows, win.hist_len]
    k = np.arange(t)[None, :]
    pad = k >= win.hist_len[:, None]
    width = min(t, norm.shape[1])
    hist_num = np.zeros((b, t, N_NUMERIC), dtype=np.float32)
    hist_num[:, :width] = norm[:, :width]
    hist_num[pad] = 0.0
    mcc = np.zeros((b, t), dtype=np.int64)
    chan = np.zeros((b, t), dtype=np.int64)
    rec = win.records[:, :width]
    mcc[:, :width] = spec.mcc_ids(rec["mcc"])
    chan[:, :width] = rec["channel"].astype(np.int64) + 1
    mcc[pad] = PAD_ID
    chan[pad] = PAD_ID
    cur = win.records[rows, win.hist_len]
    return FeatureBatch(
        hist_num=hist_num,
        hist_mcc=mcc,
        hist_channel=chan,
        hist_pad=pad,
        hist_len=win.hist_len.astype(np.int64),
        cur_num=cur_num,
        cur_mcc=spec.mcc_ids(cur["mcc"]),
        cur_channel=cur["channel"].astype(np.int64) + 1,
        cur_raw=cur_raw,
    )


def fit_spec(
    records: np.ndarray,
    user_codes: np.ndarray,
    sample: np.ndarray,
    min_mcc_count: int = 20,
    window_ms: int = 30 * _DAY_MS,
    max_history: int = 256,
) -> FeatureSpec:
    """Vocabulary and normalization statistics from training data only."""
    codes, counts = np.unique(records["mcc"], return_counts=True)
    vocab = tuple(int(c) for c, n in zip(codes, counts, strict=True) if n >= min_mcc_count)
    raw = FeatureSpec(vocab, (0.0,) * N_NUMERIC, (1.0,) * N_NUMERIC, window_ms, max_history)
    win = windows_from_sorted(records, user_codes, sample, raw)
    steps = step_features(win)
    valid = np.arange(steps.shape[1])[None, :] <= win.hist_len[:, None]
    values = steps[valid]
    mean = values.mean(axis=0)
    std = np.maximum(values.std(axis=0), 1e-3)
    return FeatureSpec(
        vocab, tuple(map(float, mean)), tuple(map(float, std)), window_ms, max_history
    )
