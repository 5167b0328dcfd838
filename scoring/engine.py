"""The scoring coordinator: a batch of requests → decisions, with its I/O around the
pure scorer.

Per batch: one store round trip (append + read prior histories; dry runs only read),
the scorer in the model thread (``scoring.scorer``) while the thresholds are read, the
thresholds applied, reasons and similar cases for alerts, and the threshold write left
running while the caller publishes (``settle`` waits for it). What the cache refresh
needs afterwards comes back as a ``RefreshWork`` (``scoring.cache_refresh``); labels go
through ``scoring.feedback``.

Hot swap: every batch takes a reference to the current ``ModelBundle`` when it starts,
so in-flight batches finish on the old model and the next ones use the new one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from features.events import hash_ids, records_from_transactions
from scoring.bundle import ModelBundle
from scoring.cache_refresh import CacheRefresher, RefreshWork, take_windows
from scoring.decision import Decision, ScoreRequest
from scoring.feedback import FeedbackApplier
from scoring.onnx_model import OnnxRiskModel
from scoring.scorer import explain_alerts, score_alone, score_batch
from scoring.state.entity_store import EntityStore
from scoring.state.sequence_store import SequenceStore
from scoring.thresholds import ThresholdPolicy

T = TypeVar("T")


async def _timed(step: Awaitable[T]) -> tuple[T, int]:
    """The result of ``step`` and when it finished (epoch ns)."""
    result = await step
    return result, time.time_ns()


class ScoringEngine:
    """Wires store, scorer, thresholds, cache refresh and feedback; owns no I/O clients."""

    def __init__(
        self,
        bundle: ModelBundle,
        store: SequenceStore,
        thresholds: ThresholdPolicy,
        shadow: OnnxRiskModel | None = None,
        similar_k: int = 3,
        reasons_top: int = 3,
        entities: EntityStore | None = None,
    ) -> None:
        self.bundle = bundle
        self.store = store
        self.entities = entities
        self.thresholds = thresholds
        self.shadow = shadow
        self.similar_k = similar_k
        self.reasons_top = reasons_top
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riskstream-model")
        self.refresher = CacheRefresher()
        self.labels = FeedbackApplier(
            store, thresholds, lambda: self.bundle, self._off_loop, self.settle, entities
        )
        self._writes: asyncio.Future[None] | None = None  # the last batch's threshold write

    async def settle(self) -> None:
        """Wait for the last batch's threshold write; raise if it failed (retries spent)."""
        writes = self._writes
        if writes is not None:
            await writes  # a second awaiter of a failed write sees the same error
            if self._writes is writes:
                self._writes = None

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.refresher.close()

    def swap(self, bundle: ModelBundle) -> None:
        """Use ``bundle`` for batches that start from now on (load and warm it first)."""
        if not bundle.model.ready:
            raise RuntimeError("load the new model before swapping it in")
        self.bundle = bundle

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def score(self, requests: list[ScoreRequest]) -> tuple[list[Decision], RefreshWork]:
        """Score a batch; also returns what the cache refresh needs after publishing."""
        bundle = self.bundle  # hot swap: this batch stays on this model
        txs = [r.tx for r in requests]
        users = [t.user_id for t in txs]
        records = records_from_transactions(txs)
        wet = [i for i, r in enumerate(requests) if not r.dry_run]
        s0 = time.time_ns()
        if len(wet) == len(requests):
            prior = await self.store.append_and_read(users, records)
        else:
            prior = await self.store.read_batch(users)
            if wet:
                await self.store.append_batch([users[i] for i in wet], records[wet])
        s1 = time.time_ns()
        dry = np.array([r.dry_run for r in requests], dtype=bool)
        await self.settle()  # the previous batch's statistics are in before we read them
        # the thresholds are read (read once; the update reuses them) while the profiles
        # are read and then the model runs
        s2 = time.time_ns()
        entity_stats = None
        if self.entities is None:
            scored, (stats, s3) = await asyncio.gather(
                self._off_loop(score_batch, bundle, prior, users, records, dry),
                _timed(self.thresholds.read(users)),
            )
        else:
            entity_stats, (stats, s3) = await asyncio.gather(
                self._observe_entities(self.entities, prior, users, records, dry),
                _timed(self.thresholds.read(users)),
            )
            scored = await self._off_loop(
                score_batch, bundle, prior, users, records, dry, entity_stats
            )
        probs = scored.probs
        thresholds = self.thresholds.thresholds_for(users, stats)
        alerts = np.flatnonzero(probs >= thresholds)
        s4 = time.time_ns()
        reasons, similar = await self._off_loop(
            explain_alerts, bundle, scored, alerts, self.reasons_top, self.similar_k
        )
        stages = {
            "store": (s0, s1),
            "thresholds": (s2, s3),
            **scored.times,
            "explain": (s4, time.time_ns()),
        }
        if wet:
            # written while the caller publishes; ``settle`` (the caller, before it acks,
            # and the next batch, before it reads) waits for it and raises its failure
            self._writes = asyncio.ensure_future(
                self.thresholds.update([users[i] for i in wet], probs[wet], thresholds[wet], stats)
            )
        shadow_scores = None
        if self.shadow is not None:  # featurized with the shadow's own spec
            shadow_scores = await self._off_loop(
                score_alone, self.shadow, prior, users, records, dry, entity_stats
            )
        now, scored_at, version = time.monotonic(), datetime.now(UTC), bundle.model.version
        shadow_version = None if self.shadow is None else self.shadow.version
        fb = scored.features
        scores, bars, lengths = probs.tolist(), thresholds.tolist(), fb.hist_len.tolist()
        shadows = [None] * len(requests) if shadow_scores is None else shadow_scores.tolist()
        decisions = [
            Decision(
                tx=req.tx,
                score=scores[i],
                threshold=bars[i],
                model_version=version,
                sequence_length=lengths[i],
                latency_ms=(now - req.received) * 1000.0,
                reasons=reasons.get(i, []),
                similar_cases=similar.get(i, []),
                shadow_score=shadows[i],
                shadow_model_version=shadow_version,
                entity=None if entity_stats is None else entity_stats[i],
                received=req.received,
                scored_at=scored_at,
                stages=stages,
            )
            for i, req in enumerate(requests)
        ]
        rows = np.asarray(wet, int)
        work = RefreshWork(
            bundle, [users[i] for i in wet], take_windows(scored.windows, rows), fb.take(rows)
        )
        return decisions, work

    @staticmethod
    async def _observe_entities(
        entities: EntityStore,
        prior: dict[str, np.ndarray],
        users: list[str],
        records: np.ndarray,
        dry: np.ndarray,
    ) -> np.ndarray:
        """Merchant/device statistics before each event, after the card append (which
        says which events are new): a replayed event or a dry run reads its profiles and
        changes nothing."""
        write = new_events(prior, users, records) & ~dry
        return await entities.observe(records, hash_ids(users), write)

    async def refresh_cache(self, work: RefreshWork) -> int:
        """After publish: cache each user's embedding including their newest event."""
        return await self.refresher.refresh(work)

    async def feedback(
        self, user_id: str, transaction_id: str, label: str, known_ms: int | None = None
    ) -> float:
        """Apply a label (``scoring.feedback``); returns the card's new threshold.

        ``known_ms``: when the label was given (the feedback's ``at``); now by default.
        """
        return await self.labels.apply(user_id, transaction_id, label, known_ms)


def new_events(prior: dict[str, np.ndarray], users: list[str], records: np.ndarray) -> np.ndarray:
    """True for each row whose transaction the card's stored history did not hold and
    that no earlier row of the batch repeats: the events the store appended.

    Vectorized on a 64-bit key per (card, transaction): the transaction hash mixed with
    the card's position in the batch (a collision, ~2⁻⁶⁴, would skip one profile update).
    """
    code = {u: i for i, u in enumerate(dict.fromkeys(users))}
    mix = np.uint64(0x9E3779B97F4A7C15)
    codes = np.fromiter((code[u] for u in users), np.uint64, len(users))
    with np.errstate(over="ignore"):
        keys = records["tx"] ^ ((codes + np.uint64(1)) * mix)
        stored = [
            p["tx"] ^ np.uint64((i + 1) * 0x9E3779B97F4A7C15 % 2**64)
            for u, i in code.items()
            if (p := prior.get(u)) is not None and p.size
        ]
    known = np.concatenate(stored) if stored else np.zeros(0, np.uint64)
    fresh = ~np.isin(keys, known)
    first = np.zeros(len(users), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return fresh & first
