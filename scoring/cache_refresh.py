"""After a batch is published: cache, per card, the embedding its *next* event needs
(window artifacts; an incremental artifact caches its next states while scoring, see
``scoring.scorer.incremental_embeddings``).

So a returning card holder's latency path runs only the head. Runs in its own thread
(``CacheRefresher``): sharing the model thread made the next batch's scoring queue
behind the previous batch's refresh, so the encoder and the event loop took turns
instead of overlapping (ONNX Runtime sessions are thread-safe, the cache takes a lock).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from features.featurize import (
    PAD_ID,
    FeatureBatch,
    Windows,
    featurize_windows,
    windows_including_current,
)
from scoring.bundle import ModelBundle
from scoring.embedding_cache import next_versions
from scoring.scorer import encode_bucketed


@dataclass(frozen=True)
class RefreshPart:
    """What the refresh needs from the rows one model version scored (stored, non-dry)."""

    bundle: ModelBundle  # the model that scored them (a swap may have happened since)
    users: list[str]
    windows: Windows
    features: FeatureBatch  # the scored rows' features, reused by the refresh


@dataclass(frozen=True)
class RefreshWork:
    """What the refresh needs from one scored batch: a part per deciding version (each
    version caches embeddings of its own model only)."""

    parts: tuple[RefreshPart, ...]


class CacheRefresher:
    """Runs refreshes in a thread of its own; one at a time, in submission order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riskstream-refresh")

    async def refresh(self, work: RefreshWork) -> int:
        """Embeddings stored for the users of ``work``; 0 without a cache."""
        loop = asyncio.get_running_loop()
        done = 0
        for part in work.parts:
            if part.bundle.cache is not None and part.users:
                done += int(await loop.run_in_executor(self._executor, refresh_embeddings, part))
        return done

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def refresh_embeddings(work: RefreshPart) -> int:
    """Encode and cache each user's history including their newest event (blocking)."""
    bundle = work.bundle
    if bundle.cache is None:
        return 0
    last: dict[str, int] = {}
    for i, user in enumerate(work.users):
        prev = last.get(user)
        if prev is None or _newer(work.windows, i, prev):
            last[user] = i
    idx = np.fromiter(last.values(), dtype=np.int64, count=len(last))
    spec = bundle.model.artifact.spec
    win = work.windows.take(idx)
    fb = work.features.take(idx)
    grows = win.hist_len < spec.max_history  # the window keeps its oldest event
    # A window that grows keeps its first event, so every step feature of the next
    # history (each depends only on the steps before it in the row) is what scoring
    # just computed: the history, then the current event. Only full windows, which
    # drop their oldest event and so change every running feature, are featurized again.
    nxt = grown_features(fb, grows)
    versions = next_versions(win, spec)
    slid = np.flatnonzero(~grows)
    emb = np.zeros((idx.size, bundle.model.artifact.embedding_dim), dtype=np.float32)
    grown = np.flatnonzero(grows)
    if grown.size:
        emb[grown] = encode_bucketed(bundle.model, nxt, np.arange(grown.size))
    if slid.size:
        moved_fb = featurize_windows(windows_including_current(win.take(slid), spec), spec)
        emb[slid] = encode_bucketed(bundle.model, moved_fb, np.arange(slid.size))
    bundle.cache.put(list(last), versions, emb)
    return idx.size


def _newer(win: Windows, i: int, j: int) -> bool:
    a = win.records[i, win.hist_len[i]]
    b = win.records[j, win.hist_len[j]]
    return bool((a["ts"], a["tx"]) > (b["ts"], b["tx"]))


def grown_features(fb: FeatureBatch, rows: np.ndarray) -> FeatureBatch:
    """Encoder inputs of the histories ``history + current`` of rows ``rows`` (a mask).

    The current event becomes the last history step; the ``cur_*`` fields are left as
    they were (the encoder does not read them).
    """
    sub = fb.take(np.flatnonzero(rows))
    n = sub.hist_len
    b = n.size
    width = int(n.max(initial=0)) + 1
    keep = min(width - 1, sub.hist_num.shape[1])
    at = np.arange(b)
    hist_num = np.zeros((b, width, sub.hist_num.shape[2]), dtype=np.float32)
    hist_num[:, :keep] = sub.hist_num[:, :keep]
    hist_num[at, n] = sub.cur_num
    mcc = np.full((b, width), PAD_ID, dtype=np.int64)
    mcc[:, :keep] = sub.hist_mcc[:, :keep]
    mcc[at, n] = sub.cur_mcc
    chan = np.full((b, width), PAD_ID, dtype=np.int64)
    chan[:, :keep] = sub.hist_channel[:, :keep]
    chan[at, n] = sub.cur_channel
    return FeatureBatch(
        hist_num=hist_num,
        hist_mcc=mcc,
        hist_channel=chan,
        hist_pad=np.arange(width)[None, :] > n[:, None],
        hist_len=n + 1,
        cur_num=sub.cur_num,
        cur_mcc=sub.cur_mcc,
        cur_channel=sub.cur_channel,
        cur_raw=sub.cur_raw,
    )
