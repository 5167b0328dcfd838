"""Merchant and device profiles: what every card that paid there tells about the next one.

Per-card state cannot see a compromised terminal, a card-testing run at one merchant or
one device paying for many cards. Each entity (a ``merchant_id`` or a ``device_id``)
keeps a small profile; every transaction reads its entities' profiles *before* it is
added (so an event never sees itself) and then updates them.

The profile, and why each part has the form it has:

* **Activity counters, exponentially decayed** with time constants 1 h, 24 h, 7 d and
  30 d: transactions, card arrivals (a card not seen at the entity for 24 h / 7 d),
  cards new to the entity, and amount. A decayed count is O(1) to update and to read
  and is commutative enough for several workers updating one merchant at once; for a
  steady rate ``r`` it equals the window count ``r·τ``. One shared update time per
  profile; an event older than it adds its weight already decayed.
* **Cards seen**: card → last visit (a sorted set in Redis), capped to the most recent
  ``card_cap`` cards, trimmed in chunks of ``card_slack`` (amortized O(1)).
* **Labels, exact windows by the time they became known**: confirmed fraud (with its
  amount) and confirmed legit, each counted only once known (``known_ms ≤ t``), one per
  transaction (the first label wins; a correction from fraud to legit moves it). The
  reasons can then say "3 confirmed frauds at this merchant in the last 7 days".

``EntityProfiles`` is the in-memory implementation and the specification: the Redis
script (``scoring.state.entity_store``) does the same arithmetic in the same order, and a
contract test holds them equal. ``features_from_stats`` turns the raw statistics into the
model's inputs, for training and serving alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ENTITY_KINDS: tuple[str, ...] = ("merchant", "device")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: the decayed counters: (name, time constant)
COUNTERS: tuple[tuple[str, int], ...] = (
    ("tx_1h", HOUR_MS),
    ("tx_24h", DAY_MS),
    ("tx_7d", 7 * DAY_MS),
    ("tx_30d", 30 * DAY_MS),
    ("cards_24h", DAY_MS),
    ("cards_7d", 7 * DAY_MS),
    ("new_cards_7d", 7 * DAY_MS),
    ("amount_30d", 30 * DAY_MS),
)
#: the raw statistics one read returns, in this order
STATS: tuple[str, ...] = (
    *(name for name, _ in COUNTERS),
    "card_new",
    "fraud_7d",
    "fraud_30d",
    "fraud_amount_30d",
    "legit_30d",
)
N_STATS = len(STATS)
#: model inputs per entity kind (prefixed with the kind: ``merchant_log_tx_24h``)
ENTITY_FEATURE_BASE: tuple[str, ...] = (
    "present",
    "log_tx_1h",
    "log_tx_24h",
    "log_tx_7d",
    "log_tx_30d",
    "log_cards_24h",
    "log_cards_7d",
    "log_new_cards_7d",
    "card_new_here",
    "amount_vs_entity",
    "log_fraud_7d",
    "log_fraud_30d",
    "fraud_share_30d",
    "log_fraud_amount_30d",
)
ENTITY_FEATURES: tuple[str, ...] = tuple(
    f"{kind}_{name}" for kind in ENTITY_KINDS for name in ENTITY_FEATURE_BASE
)
N_ENTITY = len(ENTITY_FEATURES)
LABEL_WINDOW_MS = 30 * DAY_MS


@dataclass(frozen=True)
class EntityProfileConfig:
    """Bounds of one profile (memory per entity is bounded by these)."""

    card_cap: int = 1000
    card_slack: int = 200
    label_cap: int = 500
    ttl_s: int = 35 * 86_400


def card_member(card_hash: int) -> bytes:
    """A card's (or a labelled transaction's) member name in a profile: its 64-bit hash as
    8 big-endian bytes, which sort as bytes exactly as Redis sorts members."""
    return card_hash.to_bytes(8, "big")


@dataclass
class _Profile:
    updated: float = 0.0  # ms; 0 = never
    counters: list[float] = field(default_factory=lambda: [0.0] * len(COUNTERS))
    cards: dict[bytes, float] = field(default_factory=dict)
    fraud: dict[bytes, tuple[float, float]] = field(default_factory=dict)  # tx → (known, amount)
    legit: dict[bytes, float] = field(default_factory=dict)  # tx → known


class EntityProfiles:
    """All profiles of one kind set, in memory: the trainer's replay and the reference."""

    def __init__(self, config: EntityProfileConfig | None = None) -> None:
        self.config = config or EntityProfileConfig()
        self._profiles: dict[tuple[str, int], _Profile] = {}

    def __len__(self) -> int:
        return len(self._profiles)

    def observe(
        self, kind: str, entity: int, t: float, card: bytes, amount: float, write: bool = True
    ) -> list[float]:
        """The entity's statistics before this event; then the event is added (``write``)."""
        p = self._profiles.get((kind, entity))
        if p is None:
            if not write:
                return [0.0] * len(COUNTERS) + [1.0, 0.0, 0.0, 0.0, 0.0]
            p = self._profiles[(kind, entity)] = _Profile()
        dt = t - p.updated
        decay = [math.exp(-max(0.0, dt) / tau) for _, tau in COUNTERS]
        stats = [c * d for c, d in zip(p.counters, decay, strict=True)]
        last = p.cards.get(card)
        stats.append(1.0 if last is None else 0.0)
        stats.extend(_label_stats(p, t))
        if write:
            add = [
                1.0,
                1.0,
                1.0,
                1.0,
                1.0 if last is None or t - last > DAY_MS else 0.0,
                1.0 if last is None or t - last > 7 * DAY_MS else 0.0,
                1.0 if last is None else 0.0,
                amount,
            ]
            if dt >= 0:
                p.counters = [s + a for s, a in zip(stats[: len(COUNTERS)], add, strict=True)]
                p.updated = t
            else:  # an event older than the profile's clock: its weight, already decayed
                p.counters = [
                    c + a * math.exp(dt / tau)
                    for c, a, (_, tau) in zip(p.counters, add, COUNTERS, strict=True)
                ]
            if last is None or t > last:
                p.cards[card] = t
            cfg = self.config
            if len(p.cards) > cfg.card_cap + cfg.card_slack:
                ranked = sorted(p.cards.items(), key=lambda kv: (kv[1], kv[0]))
                for member, _ in ranked[: len(ranked) - cfg.card_cap]:
                    del p.cards[member]
        return stats

    def label(
        self, kind: str, entity: int, tx: bytes, known: float, fraud: bool, amount: float
    ) -> bool:
        """Record a label; False when it changed nothing (a repeat)."""
        p = self._profiles.setdefault((kind, entity), _Profile())
        cfg = self.config
        if fraud:
            if tx in p.fraud:
                return False
            p.legit.pop(tx, None)
            p.fraud[tx] = (known, amount)
            _trim(p.fraud, known, cfg.label_cap, key=lambda v: v[0])
        else:
            if tx in p.legit:
                return False
            p.fraud.pop(tx, None)
            p.legit[tx] = known
            _trim(p.legit, known, cfg.label_cap, key=lambda v: v)
        return True


def _trim(labels: dict[bytes, Any], known: float, cap: int, key: Callable[[Any], float]) -> None:
    """Drop labels older than the window before ``known``, then the oldest over ``cap``."""
    for tx in [tx for tx, v in labels.items() if key(v) < known - LABEL_WINDOW_MS]:
        del labels[tx]
    if len(labels) > cap:
        ranked = sorted(labels.items(), key=lambda kv: (key(kv[1]), kv[0]))
        for tx, _ in ranked[: len(labels) - cap]:
            del labels[tx]


def _label_stats(p: _Profile, t: float) -> list[float]:
    """fraud_7d, fraud_30d, fraud_amount_30d, legit_30d: labels known in [t − w, t]."""
    lo7, lo30 = t - 7 * DAY_MS, t - LABEL_WINDOW_MS
    fraud_7d = fraud_30d = 0.0
    amounts = []
    for tx, (known, amount) in p.fraud.items():
        if lo30 <= known <= t:
            fraud_30d += 1.0
            amounts.append((known, tx, amount))
            if known >= lo7:
                fraud_7d += 1.0
    total = 0.0
    for _, _, amount in sorted(amounts):  # Redis sums in (score, member) order too
        total += amount
    legit = float(sum(1 for known in p.legit.values() if lo30 <= known <= t))
    return [fraud_7d, fraud_30d, total, legit]


def entity_presence(records: np.ndarray) -> np.ndarray:
    """[N, kinds] bool: which events carry each entity id."""
    return np.stack([records[kind] != 0 for kind in ENTITY_KINDS], axis=1)


def features_from_stats(stats: np.ndarray, present: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Raw statistics [B, kinds, N_STATS] → model inputs [B, N_ENTITY] (float64).

    An absent entity (no id) is a valid state: ``present`` 0 and every other input 0.
    Confirmed-legit counts are not inputs (see ``features.label_delay``).
    """
    b = stats.shape[0]
    s = {name: stats[..., i] for i, name in enumerate(STATS)}
    la = np.log1p(np.maximum(amount, 0.0))[:, None]
    mean = s["amount_30d"] / np.maximum(s["tx_30d"], 1e-9)
    vs = np.where(s["tx_30d"] >= 0.5, la - np.log1p(np.maximum(mean, 0.0)), 0.0)
    cols = [
        np.ones((b, len(ENTITY_KINDS))),
        np.log1p(s["tx_1h"]),
        np.log1p(s["tx_24h"]),
        np.log1p(s["tx_7d"]),
        np.log1p(s["tx_30d"]),
        np.log1p(s["cards_24h"]),
        np.log1p(s["cards_7d"]),
        np.log1p(s["new_cards_7d"]),
        s["card_new"],
        vs,
        np.log1p(s["fraud_7d"]),
        np.log1p(s["fraud_30d"]),
        s["fraud_30d"] / (s["tx_30d"] + 1.0),
        np.log1p(s["fraud_amount_30d"]),
    ]
    out = np.stack(cols, axis=-1)  # [B, kinds, base]
    out = np.where(present[..., None], out, 0.0)
    return out.reshape(b, N_ENTITY)
