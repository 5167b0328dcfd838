"""Applying a label: the card's threshold moves; the labelled transaction's merchant and
device profiles count it from the time it was given (``scoring.state.entity_store``); a
confirmed fraud joins the case memory (the embedding of the card's stored history, so
later alerts can show it as a similar case).

The merchant, device and amount come from the card's stored sequence, so a label needs
only the transaction id. A label for a transaction the sequence no longer holds (unknown
or past the 30-day window) is counted in ``riskstream_labels_unmatched_total`` and moves
only the card's threshold."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from features.events import id_hash
from features.featurize import Windows, featurize_windows
from scoring.bundle import ModelBundle
from scoring.metrics import LABELS_UNMATCHED
from scoring.model_roles import ServingRoles
from scoring.state.entity_store import EntityLabel, EntityStore
from scoring.state.sequence_store import SequenceStore


class FeedbackApplier:
    """One label at a time; the blocking part (featurize, encode, index) runs off the loop."""

    def __init__(
        self,
        store: SequenceStore,
        roles: Callable[[], ServingRoles],
        off_loop: Callable[..., Awaitable[Any]],
        settle: Callable[[], Awaitable[None]],
        entities: EntityStore | None = None,
    ) -> None:
        self._entities = entities
        self._store = store
        self._roles = roles  # the current ones: a label applies to the versions in force
        self._off_loop = off_loop
        self._settle = settle

    async def apply(
        self, user_id: str, transaction_id: str, label: str, known_ms: int | None = None
    ) -> float:
        """The card's new threshold (by the version that decides for it); profiles and
        the case memory of every version in a role learn from the label."""
        await self._settle()  # the label applies to the statistics of every scored batch
        roles = self._roles()
        policy = roles.serving(user_id).thresholds  # the adjustment is shared by versions
        new_threshold = await policy.feedback(user_id, label, transaction_id)
        bundles = [m.bundle for m in roles.models() if m.bundle.memory is not None]
        remember = label == "fraud" and bool(bundles)
        if not remember and self._entities is None:
            return new_threshold
        seq = (await self._store.read_batch([user_id]))[user_id]
        tx = id_hash(transaction_id)
        at = np.flatnonzero(seq["tx"] == tx) if seq.size else seq
        if not at.size:
            LABELS_UNMATCHED.inc()
            return new_threshold
        row = seq[int(at[-1])]
        if self._entities is not None:
            await self._entities.label(
                EntityLabel(
                    merchant=int(row["merchant"]),
                    device=int(row["device"]),
                    tx=tx,
                    known_ms=round(time.time() * 1000) if known_ms is None else known_ms,
                    fraud=label == "fraud",
                    amount=float(row["amount"]),
                )
            )
        if remember:  # the case is the card's history up to and including the fraud
            for bundle in bundles:  # each in its own model's embedding space
                await self._off_loop(remember_case, bundle, seq[: int(at[-1]) + 1], transaction_id)
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
