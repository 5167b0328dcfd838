"""Fraud-case memory: FAISS similarity over the history embeddings of confirmed fraud.

Seeded from the training labels (``fraud_cases.npz`` in the artifact) and grown from
analyst feedback at runtime. Cosine similarity on L2-normalised vectors in a flat
inner-product index: exact, and fast enough for tens of thousands of cases.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

from models.artifact import FRAUD_CASES_FILE, ModelArtifact


class FraudCaseMemory:
    """Nearest confirmed fraud cases for a batch of history embeddings."""

    def __init__(self, dim: int, max_cases: int = 50_000) -> None:
        self.dim, self.max_cases = dim, max_cases
        self.index = faiss.IndexFlatIP(dim)
        self.ids: list[str] = []
        self._known: set[str] = set()

    @classmethod
    def from_artifact(cls, artifact: ModelArtifact, max_cases: int = 50_000) -> FraudCaseMemory:
        memory = cls(artifact.embedding_dim, max_cases)
        path = artifact.file(FRAUD_CASES_FILE)
        if path is not None:
            data = np.load(path)
            memory.add(list(data["ids"]), data["embeddings"])
        return memory

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, case_ids: Sequence[str], embeddings: np.ndarray) -> int:
        """Add new cases (ids already known are ignored: feedback may repeat)."""
        keep = [i for i, c in enumerate(case_ids) if c not in self._known]
        if not keep:
            return 0
        vecs = np.ascontiguousarray(embeddings[keep], dtype=np.float32)
        faiss.normalize_L2(vecs)
        if len(self.ids) + len(keep) > self.max_cases:  # FIFO: rebuild without the oldest
            drop = len(self.ids) + len(keep) - self.max_cases
            old = faiss.rev_swig_ptr(self.index.get_xb(), self.index.ntotal * self.dim)
            old = np.array(old).reshape(-1, self.dim)[drop:]
            self.index.reset()
            self.index.add(old)
            for cid in self.ids[:drop]:
                self._known.discard(cid)
            self.ids = self.ids[drop:]
        self.index.add(vecs)
        new_ids = [str(case_ids[i]) for i in keep]
        self.ids.extend(new_ids)
        self._known.update(new_ids)
        return len(keep)

    def nearest(self, embeddings: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Top-k (case id, cosine similarity) per row; empty lists when no cases."""
        if not self.ids or embeddings.shape[0] == 0:
            return [[] for _ in range(embeddings.shape[0])]
        q = np.ascontiguousarray(embeddings, dtype=np.float32).copy()
        faiss.normalize_L2(q)
        sims, rows = self.index.search(q, min(k, len(self.ids)))
        return [
            [(self.ids[r], float(s)) for r, s in zip(rr, ss, strict=True) if r >= 0]
            for rr, ss in zip(rows, sims, strict=True)
        ]
