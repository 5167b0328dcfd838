"""Applying an analyst's label: the card's threshold moves; a confirmed fraud joins the
case memory (the embedding of the card's stored history, so later alerts can show it as
a similar case)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from features.events import id_hash
from features.featurize import Windows, featurize_windows
from scoring.bundle import ModelBundle
from scoring.metrics import LABELS_UNMATCHED
from scoring.state.sequence_store import SequenceStore
from scoring.thresholds import ThresholdPolicy


class FeedbackApplier:
    """One label at a time; the blocking part (featurize, encode, index) runs off the loop."""

    def __init__(
        self,
        store: SequenceStore,
        thresholds: ThresholdPolicy,
        bundle: Callable[[], ModelBundle],
        off_loop: Callable[..., Awaitable[Any]],
        settle: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._thresholds = thresholds
        self._bundle = bundle  # the current one: a label applies to the model now serving
        self._off_loop = off_loop
        self._settle = settle

    async def apply(self, user_id: str, transaction_id: str, label: str) -> float:
        """The card's new threshold; confirmed fraud is also remembered as a case."""
        await self._settle()  # the label applies to the statistics of every scored batch
        new_threshold = await self._thresholds.feedback(user_id, label, transaction_id)
        bundle = self._bundle()
        if label == "fraud" and bundle.memory is not None:
            seq = (await self._store.read_batch([user_id]))[user_id]
            at = np.flatnonzero(seq["tx"] == id_hash(transaction_id)) if seq.size else seq
            if at.size:  # the case is the card's history up to and including the fraud
                await self._off_loop(remember_case, bundle, seq[: int(at[-1]) + 1], transaction_id)
            else:
                LABELS_UNMATCHED.inc()
        return new_threshold


def remember_case(bundle: ModelBundle, seq: np.ndarray, transaction_id: str) -> None:
    """Add a confirmed fraud to the bundle's case memory (blocking)."""
    memory = bundle.memory
    if memory is None or not seq.size:
        return
    spec = bundle.model.artifact.spec
    win = Windows(
        np.concatenate([seq[-spec.max_history :], seq[-1:]])[None, :],
        np.array([min(seq.size, spec.max_history)]),
    )
    memory.add([transaction_id], bundle.model.encode(featurize_windows(win, spec)))
