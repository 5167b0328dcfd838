"""Which model versions serve, in which role, and which card holders each one decides for.

Roles at run time (docs/deploy.md, "Rolling out a model"):

- **primary** decides for every card holder not in the canary share;
- **canary** decides for a stable share of card holders: those whose user-id hash falls
  below ``canary_bps`` basis points, the same cards on every worker and after restarts;
- **shadow** scores every event; its score is published on ``scores`` beside the
  decision and never decides.

A ``ServingRoles`` is immutable: a change of roles is a new object swapped in between
batches, so a batch that started on one set of roles finishes on it. Each version comes
with its own threshold statistics (``ThresholdPolicy.for_version``) and its own bundle
(embedding cache, case memory): state that only makes sense for one model's scores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from scoring.bundle import ModelBundle
from scoring.thresholds import ThresholdPolicy

PRIMARY, CANARY, SHADOW = "primary", "canary", "shadow"
BPS = 10_000  # canary shares are in basis points of card holders


def canary_bucket(user_id: str) -> int:
    """The card holder's stable bucket in [0, 10,000): a keyed hash of the user id, so
    every worker (and every restart) routes the same cards to the canary."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8, person=b"rs-canary").digest()
    return int.from_bytes(digest, "big") % BPS


def in_canary(users: list[str], canary_bps: int) -> np.ndarray:
    """True for the rows whose card holder is in a ``canary_bps`` share."""
    if canary_bps <= 0:
        return np.zeros(len(users), dtype=bool)
    memo: dict[str, bool] = {}
    out = np.empty(len(users), dtype=bool)
    for i, u in enumerate(users):
        hit = memo.get(u)
        if hit is None:
            hit = memo[u] = canary_bucket(u) < canary_bps
        out[i] = hit
    return out


@dataclass
class RoleCounters:
    """Events, alerts and errors per role since these roles came into force: what the
    canary guard compares (the process-lifetime totals are the Prometheus metrics)."""

    events: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def count(self, role: str, events: int, alerts: int, errors: int = 0) -> None:
        self.events[role] = self.events.get(role, 0) + events
        self.alerts[role] = self.alerts.get(role, 0) + alerts
        self.errors[role] = self.errors.get(role, 0) + errors


@dataclass(frozen=True)
class ServingModel:
    """One model version with the state that belongs to it."""

    bundle: ModelBundle
    thresholds: ThresholdPolicy

    @property
    def version(self) -> str:
        return self.bundle.model.version


@dataclass(frozen=True)
class ServingRoles:
    """The versions in force; ``generation`` is the registry pointer's (0: no registry)."""

    primary: ServingModel
    canary: ServingModel | None = None
    canary_bps: int = 0
    shadow: ServingModel | None = None
    generation: int = 0
    counters: RoleCounters = field(default_factory=RoleCounters)

    def deciders(self, users: list[str]) -> list[tuple[str, ServingModel, np.ndarray]]:
        """(role, model, row indices) for each version that decides rows of the batch."""
        if self.canary is None:
            return [(PRIMARY, self.primary, np.arange(len(users)))]
        canary = in_canary(users, self.canary_bps)
        groups = [
            (PRIMARY, self.primary, np.flatnonzero(~canary)),
            (CANARY, self.canary, np.flatnonzero(canary)),
        ]
        return [g for g in groups if g[2].size]

    def serving(self, user: str) -> ServingModel:
        """The version that decides for ``user``."""
        if self.canary is not None and canary_bucket(user) < self.canary_bps:
            return self.canary
        return self.primary

    def models(self) -> list[ServingModel]:
        """Every distinct version in a role."""
        found = [m for m in (self.primary, self.canary, self.shadow) if m is not None]
        return list({m.version: m for m in found}.values())

    def describe(self) -> dict[str, str | int | float | None]:
        return {
            "generation": self.generation,
            PRIMARY: self.primary.version,
            CANARY: None if self.canary is None else self.canary.version,
            "canary_percent": self.canary_bps / 100,
            SHADOW: None if self.shadow is None else self.shadow.version,
        }
