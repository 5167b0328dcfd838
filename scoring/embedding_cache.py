"""The history-embedding cache: per user, the latest embedding and the history it encodes.

FAISS holds the vectors in a preallocated flat index (``IndexFlatIP``) whose rows are
overwritten in place; a dict maps user → row and an LRU order evicts the coldest user
when full. Updates are microseconds (DESIGN §8: ``IndexIDMap2`` replaces in O(n) and
HNSW cannot remove at all).

An entry is used only when its *history version* equals the version of the window
being scored (count + first and last transaction of the window), so a stale embedding
is never used: a miss costs one encoder run, a wrong hit would cost a wrong decision.
Snapshots are tied to the model version: another model's embeddings are discarded.

For the incremental model each entry also holds the card's state (LSTM ``h``/``c`` and
its last events' step features, ``scoring.incremental_state``), versioned by the card's
last events only (``tail_versions``): a side array
allocated on the first put that carries one (``np.zeros``: pages are touched only as
cards are stored), so the embedding the head needs and the state the next event
advances from are one lookup, under one version.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from features.featurize import FeatureSpec, Windows, windows_including_current
from scoring.metrics import CACHE_EVENTS
from scoring.snapshot_files import read_snapshot, write_snapshot

_P1, _P2, _P3 = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xC2B2AE3D27D4EB4F),
    np.uint64(0x165667B19E3779F9),
)


def history_versions(win: Windows) -> np.ndarray:
    """A 64-bit id of each window's history: (length, first tx, last tx).

    Windows are contiguous runs of the user's sorted events, so these three identify
    the content; 0 means "no history".
    """
    b = win.hist_len.size
    rows = np.arange(b)
    n = win.hist_len.astype(np.uint64)
    first = win.records["tx"][:, 0]
    last = win.records["tx"][rows, np.maximum(win.hist_len - 1, 0)]
    with np.errstate(over="ignore"):
        v = (n * _P1) ^ (first * _P2) ^ (last * _P3)
    return np.where(win.hist_len > 0, v | np.uint64(1), np.uint64(0))


def next_versions(win: Windows, spec: FeatureSpec) -> np.ndarray:
    """The version of each row's history *after* its current event (what the card's
    next event will see): the window grows by the event, or, when full, slides."""
    versions = history_versions(Windows(win.records, win.hist_len + 1))
    slid = np.flatnonzero(win.hist_len >= spec.max_history)
    if slid.size:
        moved = windows_including_current(win.take(slid), spec)
        versions[slid] = history_versions(moved)
    return versions


def tail_versions(records: np.ndarray, end: np.ndarray, kept: int) -> np.ndarray:
    """A 64-bit id of the last ``min(kept, end)`` events before position ``end`` of each
    row (their transaction ids, in order, and how many); 0 where ``end`` is 0.

    The version of an incremental state. The state after a card's last event is what
    its next event advances from, whatever older events the window has since dropped
    by time: it depends on the events before it only through the LSTM, and on its last
    ``kept`` events through the context the step reads. So the id covers exactly those.
    A late event among them changes it (the card rebuilds); an old event leaving the
    30-day window does not (``history_versions`` would change, and a card with more
    history than the window would rebuild every few events).
    """
    b = end.size
    end = end.astype(np.int64, copy=False)
    take = np.minimum(end, kept)
    v = take.astype(np.uint64) * _P1
    # the kept positions of every row at once (oldest first), then one fold per position;
    # a row with fewer than ``kept`` events skips its first ``kept - take`` positions,
    # and from the largest such skip on every row takes part, so no mask is needed there
    pos = end[:, None] - kept + np.arange(kept)[None, :]
    skip = kept - take
    masked = int(skip.max(initial=0))
    with np.errstate(over="ignore"):
        t = records["tx"][np.arange(b)[:, None], np.maximum(pos, 0)] * _P3
        for j in range(kept):
            folded = (v * _P2) ^ t[:, j]
            v = np.where(j >= skip, folded, v) if j < masked else folded
    return np.where(end > 0, v | np.uint64(1), np.uint64(0))


def next_tail_versions(win: Windows, spec: FeatureSpec, kept: int) -> np.ndarray:
    """``tail_versions`` of each row's history *after* its current event (what the
    card's next event will see, unless a late event or a long gap changes it)."""
    return tail_versions(win.records, win.hist_len + 1, min(kept, spec.max_history))


class FaissEmbeddingCache:
    """Bounded LRU cache whose vectors live in a FAISS flat index.

    A lock serializes get/put/snapshot: refreshes run in executor threads while the
    periodic snapshot may run in another, and a snapshot must never pair a row's new
    version with its half-written vector.
    """

    def __init__(self, dim: int, capacity: int = 100_000, model_version: str = "") -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.dim, self.capacity, self.model_version = dim, capacity, model_version
        self.index = faiss.IndexFlatIP(dim)
        self.index.add(np.zeros((capacity, dim), dtype=np.float32))
        self._vectors = faiss.rev_swig_ptr(self.index.get_xb(), capacity * dim).reshape(
            capacity, dim
        )
        self._versions = np.zeros(capacity, dtype=np.uint64)
        self._rows: OrderedDict[str, int] = OrderedDict()
        self._free = list(range(capacity - 1, -1, -1))
        self._states: np.ndarray | None = None
        self.evictions = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, users: Sequence[str], versions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self._get(users, versions)

    def get_states(
        self, users: Sequence[str], versions: np.ndarray, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hit, embeddings, states [B, width]): a hit needs the version and a state."""
        with self._lock:
            hit, emb = self._get(users, versions, counted=False)
            states = np.zeros((len(users), width), dtype=np.float32)
            if self._states is None or self._states.shape[1] != width:
                hit[:] = False
            else:
                rows = [self._rows[u] for u, h in zip(users, hit, strict=True) if h]
                states[hit] = self._states[rows]
            hits = int(hit.sum())
            CACHE_EVENTS.labels("hit").inc(hits)
            CACHE_EVENTS.labels("miss").inc(len(users) - hits)
            return hit, emb, states

    def version_of(self, users: Sequence[str]) -> np.ndarray:
        """Each user's cached history version (0: not cached)."""
        with self._lock:
            rows = [self._rows.get(u) for u in users]
            return np.array([0 if r is None else self._versions[r] for r in rows], dtype=np.uint64)

    def _get(
        self, users: Sequence[str], versions: np.ndarray, counted: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        hit = np.zeros(len(users), dtype=bool)
        out = np.zeros((len(users), self.dim), dtype=np.float32)
        for i, user in enumerate(users):
            row = self._rows.get(user)
            if row is not None and self._versions[row] == versions[i] and versions[i] != 0:
                hit[i] = True
                out[i] = self._vectors[row]
                self._rows.move_to_end(user)
        if counted:
            hits = int(hit.sum())
            CACHE_EVENTS.labels("hit").inc(hits)
            CACHE_EVENTS.labels("miss").inc(len(users) - hits)
        return hit, out

    def put(
        self,
        users: Sequence[str],
        versions: np.ndarray,
        embeddings: np.ndarray,
        states: np.ndarray | None = None,
    ) -> None:
        with self._lock:
            self._put(users, versions, embeddings, states)

    def _put(
        self,
        users: Sequence[str],
        versions: np.ndarray,
        embeddings: np.ndarray,
        states: np.ndarray | None = None,
    ) -> None:
        if states is not None and (
            self._states is None or self._states.shape[1] != states.shape[1]
        ):
            self._states = np.zeros((self.capacity, states.shape[1]), dtype=np.float32)
        for i, user in enumerate(users):
            row = self._rows.get(user)
            if row is None:
                if not self._free:
                    _, row = self._rows.popitem(last=False)
                    self.evictions += 1
                    CACHE_EVENTS.labels("eviction").inc()
                else:
                    row = self._free.pop()
                self._rows[user] = row
            else:
                self._rows.move_to_end(user)
            self._vectors[row] = embeddings[i]
            self._versions[row] = versions[i]
            if states is not None and self._states is not None:
                self._states[row] = states[i]

    def snapshot(self, folder: Path) -> None:
        """Write the cache (atomically: temp files then rename)."""
        with self._lock:  # copy under the lock, write outside it
            users = list(self._rows)
            rows = np.array([self._rows[u] for u in users], dtype=np.int64)
            arrays = {"vectors": self._vectors[rows], "versions": self._versions[rows]}
            if self._states is not None:
                arrays["states"] = self._states[rows]
        meta = {"model_version": self.model_version, "dim": self.dim, "users": users}
        write_snapshot(folder, "cache", arrays, meta)

    def restore(self, folder: Path) -> int:
        """Load a snapshot of the same model version; returns entries restored."""
        found = read_snapshot(folder, "cache", self.model_version, self.dim)
        if found is None:
            return 0  # none, or another model's (its embeddings mean nothing here)
        meta, data = found
        users = meta["users"][-self.capacity :]
        n = len(users)
        states = data["states"][-n:] if "states" in data else None
        self.put(users, data["versions"][-n:], data["vectors"][-n:], states)
        return n
