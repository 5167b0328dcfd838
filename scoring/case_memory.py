"""Fraud-case memory: FAISS similarity over the history embeddings of confirmed fraud.

Seeded from the training labels (``fraud_cases.npz`` in the artifact) and grown from
analyst feedback at runtime. Cosine similarity on L2-normalised vectors in a flat
inner-product index: exact, and fast enough for tens of thousands of cases.

Vectors are *centred* on the seed cases' mean before normalising. The encoder's
embeddings share one large common direction, so their raw cosine is ~0.99 for any pair
and a similarity of 0.98 meant nothing. Centred, an unrelated case scores near 0
(figures in docs/MODEL.md). Cases and queries are both the history *including* the
fraud or alerted event (``scoring.scorer.case_queries``), so like is compared with like.

``add`` runs on the event loop (feedback) and may rebuild the index, while ``nearest``
runs on the model thread: one lock makes each see the ids and the index of the same
moment. Cases learned from feedback are snapshotted beside the embedding cache and
restored only for the same model version (another model's embeddings mean nothing).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from scoring.artifact import FRAUD_CASES_FILE, ModelArtifact
from scoring.snapshot_files import read_snapshot, write_snapshot


class FraudCaseMemory:
    """Nearest confirmed fraud cases for a batch of history embeddings."""

    def __init__(
        self,
        dim: int,
        max_cases: int = 50_000,
        model_version: str = "",
        center: np.ndarray | None = None,
    ) -> None:
        self.dim, self.max_cases, self.model_version = dim, max_cases, model_version
        #: subtracted from every vector before normalising (the seed cases' mean)
        self.center = np.zeros(dim, np.float32) if center is None else center.astype(np.float32)
        #: each seed case's fraud pattern, where the training data named one (reports only)
        self.patterns: dict[str, str] = {}
        self.index = faiss.IndexFlatIP(dim)
        self.ids: list[str] = []
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self._learned: dict[str, np.ndarray] = {}  # added at run time: what a snapshot keeps

    @classmethod
    def from_artifact(cls, artifact: ModelArtifact, max_cases: int = 50_000) -> FraudCaseMemory:
        path = artifact.file(FRAUD_CASES_FILE)
        if path is None:
            return cls(artifact.embedding_dim, max_cases, artifact.version)
        data = np.load(path)
        seeds = np.asarray(data["embeddings"], dtype=np.float32)
        center = seeds.mean(axis=0) if len(seeds) else None
        memory = cls(artifact.embedding_dim, max_cases, artifact.version, center)
        memory.add(list(data["ids"]), seeds, learned=False)
        if "patterns" in data.files:
            memory.patterns = {
                str(c): str(p) for c, p in zip(data["ids"], data["patterns"], strict=True) if p
            }
        return memory

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, case_ids: Sequence[str], embeddings: np.ndarray, learned: bool = True) -> int:
        """Add new cases (ids already known are ignored: feedback may repeat).

        ``learned``: a case from feedback, kept by ``snapshot`` (the artifact's seed cases
        are not: they come back with the artifact).
        """
        with self._lock:
            added, dropped = self._add(case_ids, embeddings)
            for cid in dropped:  # the FIFO forgets learned cases too
                self._learned.pop(cid, None)
            if learned:
                pos = {str(c): i for i, c in enumerate(case_ids)}
                for cid in added:
                    self._learned[cid] = np.asarray(embeddings[pos[cid]], dtype=np.float32)
            return len(added)

    def _add(self, case_ids: Sequence[str], embeddings: np.ndarray) -> tuple[list[str], list[str]]:
        keep = [i for i, c in enumerate(case_ids) if c not in self._known]
        dropped: list[str] = []
        if not keep:
            return [], dropped
        vecs = np.ascontiguousarray(embeddings[keep] - self.center, dtype=np.float32)
        faiss.normalize_L2(vecs)
        if len(self.ids) + len(keep) > self.max_cases:  # FIFO: rebuild without the oldest
            drop = len(self.ids) + len(keep) - self.max_cases
            old = faiss.rev_swig_ptr(self.index.get_xb(), self.index.ntotal * self.dim)
            old = np.array(old).reshape(-1, self.dim)[drop:]
            self.index.reset()
            self.index.add(old)
            dropped = self.ids[:drop]
            for cid in dropped:
                self._known.discard(cid)
            self.ids = self.ids[drop:]
        self.index.add(vecs)
        new_ids = [str(case_ids[i]) for i in keep]
        self.ids.extend(new_ids)
        self._known.update(new_ids)
        return new_ids, dropped

    def nearest(self, embeddings: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Top-k (case id, cosine similarity) per row; empty lists when no cases."""
        q = np.ascontiguousarray(embeddings - self.center, dtype=np.float32)
        faiss.normalize_L2(q)
        with self._lock:
            if not self.ids or embeddings.shape[0] == 0:
                return [[] for _ in range(embeddings.shape[0])]
            sims, rows = self.index.search(q, min(k, len(self.ids)))
            ids = self.ids
            return [
                [(ids[r], float(s)) for r, s in zip(rr, ss, strict=True) if r >= 0]
                for rr, ss in zip(rows, sims, strict=True)
            ]

    def vectors(self) -> np.ndarray:
        """The stored (centred, normalised) vectors [n, dim], in ``ids`` order."""
        with self._lock:
            flat = faiss.rev_swig_ptr(self.index.get_xb(), self.index.ntotal * self.dim)
            return np.array(flat).reshape(-1, self.dim)

    def snapshot(self, folder: Path) -> int:
        """Write the cases learned from feedback (atomically); returns how many."""
        with self._lock:
            ids = list(self._learned)
            vecs = np.stack([self._learned[i] for i in ids]) if ids else np.zeros((0, self.dim))
        meta = {"model_version": self.model_version, "dim": self.dim, "ids": ids}
        write_snapshot(folder, "cases", {"embeddings": vecs.astype(np.float32)}, meta)
        return len(ids)

    def restore(self, folder: Path) -> int:
        """Add the learned cases of a snapshot of the same model version; returns how many."""
        found = read_snapshot(folder, "cases", self.model_version, self.dim)
        if found is None:
            return 0  # none, or another model's embedding space
        meta, data = found
        ids = [str(i) for i in meta["ids"]]
        return self.add(ids, data["embeddings"]) if ids else 0
