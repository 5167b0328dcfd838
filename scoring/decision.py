"""What scoring takes and gives: a request for one transaction and the decision for it.

Plain data. How a decision goes on the wire is the streams side's business
(``streams.decision_codec``); the scorer never serializes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from features.contracts import Reason, SimilarCase, Transaction


def alert_id(transaction_id: str, model_version: str) -> str:
    """Deterministic: a replay re-publishes the same id, so consumers can de-duplicate."""
    return hashlib.sha256(f"{transaction_id}|{model_version}".encode()).hexdigest()[:32]


@dataclass
class ScoreRequest:
    """One transaction to score; ``received`` is a ``time.monotonic()`` stamp."""

    tx: Transaction
    received: float = field(default_factory=time.monotonic)
    dry_run: bool = False


@dataclass
class Decision:
    """The scorer's answer for one transaction."""

    tx: Transaction
    score: float
    threshold: float
    model_version: str
    sequence_length: int
    latency_ms: float
    reasons: list[Reason] = field(default_factory=list)
    similar_cases: list[SimilarCase] = field(default_factory=list)
    shadow_score: float | None = None
    shadow_model_version: str | None = None
    #: the merchant's and device's raw statistics before this event [kinds, N_STATS]
    #: (``features.entity_profile.STATS``); None when the worker keeps no profiles
    entity: np.ndarray | None = None
    received: float = 0.0  # time.monotonic() when the event entered the worker
    # one instant per decision, so its score and alert records agree (one clock read per batch)
    scored_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: when each stage of the engine batch that made this decision ran: name -> (start, end)
    #: in epoch nanoseconds; one mapping shared by the batch's decisions (for traces)
    stages: Mapping[str, tuple[int, int]] | None = None

    @property
    def is_alert(self) -> bool:
        return self.score >= self.threshold

    @property
    def alert_id(self) -> str:
        return alert_id(self.tx.transaction_id, self.model_version)
