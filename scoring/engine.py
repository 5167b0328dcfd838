"""The scoring coordinator: a batch of requests → decisions, with its I/O around the
pure scorer.

Per batch: one store round trip (append + read prior histories; dry runs only read),
the scorer in the model thread (``scoring.scorer``) while the thresholds are read, the
thresholds applied, reasons and similar cases for alerts, and the threshold write left
running while the caller publishes (``settle`` waits for it). What the cache refresh
needs afterwards comes back as a ``RefreshWork`` (``scoring.cache_refresh``); labels go
through ``scoring.feedback``.

Roles and hot swap (``scoring.model_roles``): every batch takes a reference to the
``ServingRoles`` in force when it starts, so in-flight batches finish on the versions
they started with. Each deciding version (the primary, a canary for its share of card
holders) scores its own rows with its own cache, thresholds and case memory; a shadow
scores every row, keeps its own threshold statistics and never decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from features.contracts import Reason, SimilarCase
from features.events import hash_ids, records_from_transactions
from scoring.bundle import ModelBundle
from scoring.cache_refresh import CacheRefresher, RefreshPart, RefreshWork
from scoring.decision import Decision, ScoreRequest
from scoring.feedback import FeedbackApplier
from scoring.metrics import VERSION_DECISIONS, VERSION_ERRORS, VERSION_LATENCY_MS, VERSION_SCORES
from scoring.model_roles import CANARY, PRIMARY, SHADOW, ServingModel, ServingRoles
from scoring.scorer import Scored, explain_alerts, score_alone, score_batch, store_next_states
from scoring.state.entity_store import EntityStore
from scoring.state.sequence_store import SequenceStore
from scoring.thresholds import ThresholdPolicy, UserStats

log = logging.getLogger(__name__)

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
        shadow: ModelBundle | None = None,
        similar_k: int = 3,
        reasons_top: int = 3,
        entities: EntityStore | None = None,
        inline_max_batch: int = 32,
    ) -> None:
        """``inline_max_batch``: batches of at most this many events run the model on
        the event loop itself (``_on_model``); 0: always on the model thread."""
        self.store = store
        self.inline_max_batch = inline_max_batch
        self.entities = entities
        self._policies = thresholds  # ``for_version`` gives each further version its own
        self.roles = ServingRoles(
            ServingModel(bundle, thresholds),
            shadow=None if shadow is None else self.serving_model(shadow),
        )
        self.similar_k = similar_k
        self.reasons_top = reasons_top
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riskstream-model")
        self.refresher = CacheRefresher()
        self.labels = FeedbackApplier(
            store, lambda: self.roles, self._off_loop, self.settle, entities
        )
        self._writes: asyncio.Future[Any] | None = None  # the last batch's threshold writes
        self._states: Future[int] | None = None  # the last batch's next-state caching

    @property
    def bundle(self) -> ModelBundle:
        """The primary version's bundle."""
        return self.roles.primary.bundle

    @property
    def thresholds(self) -> ThresholdPolicy:
        """The primary version's threshold policy."""
        return self.roles.primary.thresholds

    def threshold_policy(self, user_id: str) -> ThresholdPolicy:
        """The threshold policy of the version that decides for ``user_id``."""
        return self.roles.serving(user_id).thresholds

    def serving_model(self, bundle: ModelBundle) -> ServingModel:
        """``bundle`` with threshold statistics of its own version (adjustments shared)."""
        artifact = bundle.model.artifact
        return ServingModel(
            bundle,
            self._policies.for_version(
                artifact.version, artifact.global_threshold, artifact.threshold_policy
            ),
        )

    async def settle(self) -> None:
        """Wait for the last batch's threshold write; raise if it failed (retries spent)."""
        writes = self._writes
        if writes is not None:
            await writes  # a second awaiter of a failed write sees the same error
            if self._writes is writes:
                self._writes = None

    def _queue_states(self, groups: list[_Group]) -> None:
        """Step and cache the incremental versions' next states on the model thread,
        now: the decisions do not wait for it, the next batch's scoring queues behind it."""
        for g in groups:
            if g.scored.pending is not None:
                job = self._executor.submit(store_next_states, g.scored.pending)
                job.add_done_callback(_log_state_failure)
                self._states = job

    async def states_stored(self) -> None:
        """Wait until the last batch's next states are cached (tests, snapshots)."""
        job = self._states
        if job is not None:
            done = asyncio.wrap_future(job)
            await asyncio.wait([done])
            if not done.cancelled():
                done.exception()  # retrieved here; ``_log_state_failure`` logged it

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.refresher.close()

    def swap(self, bundle: ModelBundle) -> None:
        """Use ``bundle`` as the primary for batches that start from now on (load and
        warm it first); the canary and shadow stay."""
        r = self.roles
        self.set_roles(
            ServingRoles(self.serving_model(bundle), r.canary, r.canary_bps, r.shadow, r.generation)
        )

    def set_roles(self, roles: ServingRoles) -> None:
        """Serve with ``roles`` from the next batch on; batches in flight finish on theirs."""
        for m in roles.models():
            if not m.bundle.model.ready:
                raise RuntimeError(f"load model {m.version} before swapping it in")
        self.roles = roles

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _on_model(
        self, events: int, fn: Callable[..., T], *args: Any, reads_states: bool = True
    ) -> T:
        """Run a batch's model work: on the model thread, or, for a small batch, on the
        event loop.

        A hand-off to the thread and back costs two wake-ups, and while the thread runs
        Python the loop waits for the interpreter lock anyway; for a small batch that is
        a large share of its time (docs/BENCHMARKS.md) and the work it moves off the loop
        is short. Work that ``reads_states`` runs on the loop only
        when the last batch's next-state caching is done, so a batch never reads a
        card's state before the batch ahead of it stored it: with a job queued, it
        queues behind it on the thread.
        """
        states = self._states
        stored = not reads_states or states is None or states.done()
        if events <= self.inline_max_batch and stored:
            return fn(*args)
        return await self._off_loop(fn, *args)

    async def score(self, requests: list[ScoreRequest]) -> tuple[list[Decision], RefreshWork]:
        """Score a batch; also returns what the cache refresh needs after publishing."""
        roles = self.roles  # hot swap: this batch stays on these versions
        n = len(requests)
        txs = [r.tx for r in requests]
        users = [t.user_id for t in txs]
        records = records_from_transactions(txs)
        wet = np.array([not r.dry_run for r in requests], dtype=bool)
        await self.settle()  # the previous batch's statistics are in before we read them
        # each version's thresholds are read (once; the update reuses them) from the
        # start, while the store round trip, the profiles and then the model run: the
        # reads need only the card ids, so a request pays for one round trip, not two
        s2 = time.time_ns()
        plan = roles.deciders(users)
        group_users = [[users[i] for i in idx] for _, _, idx in plan]
        readers = [m.thresholds.read(gu) for (_, m, _), gu in zip(plan, group_users, strict=True)]
        if roles.shadow is not None:
            readers.append(roles.shadow.thresholds.read(users))
        reading = asyncio.ensure_future(_timed(asyncio.gather(*readers)))
        # a batch of dry runs writes no profile, so it need not wait for the card read
        # to know which events are new: its profile read goes out beside it
        profiles = None
        if self.entities is not None and not wet.any():
            profiles = asyncio.ensure_future(
                self.entities.observe(records, hash_ids(users), np.zeros(len(users), bool))
            )
        s0 = time.time_ns()
        try:
            if wet.all():
                prior = await self.store.append_and_read(users, records)
            else:
                prior = await self.store.read_batch(users)
                if wet.any():
                    await self.store.append_batch(
                        [u for u, w in zip(users, wet, strict=True) if w], records[wet]
                    )
        except BaseException:
            for pending in (reading, profiles):
                if pending is not None:
                    pending.cancel()
                    with contextlib.suppress(BaseException):
                        await pending
            raise
        s1 = time.time_ns()
        dry = ~wet
        entity_stats = None
        if self.entities is None:
            (groups, failed), (reads, s3) = await asyncio.gather(
                self._on_model(n, _score_groups, plan, prior, users, records, dry, None),
                reading,
            )
        else:
            observed = (
                profiles
                if profiles is not None
                else self._observe_entities(self.entities, prior, users, records, dry)
            )
            entity_stats, (reads, s3) = await asyncio.gather(observed, reading)
            groups, failed = await self._on_model(
                n, _score_groups, plan, prior, users, records, dry, entity_stats
            )
        self._queue_states(groups)
        stats_of = {role: st for (role, _, _), st in zip(plan, reads, strict=False)}
        if failed is not None:  # the canary failed: its rows are decided by the primary
            fallback = await self._on_model(
                n,
                _score_groups,
                [(PRIMARY, roles.primary, failed)],
                prior,
                users,
                records,
                dry,
                entity_stats,
                True,
            )
            self._queue_states(fallback[0])
            groups += fallback[0]
            roles.counters.count(CANARY, failed.size, 0, failed.size)
            stats_of[CANARY] = await roles.primary.thresholds.read([users[i] for i in failed])
        probs, bars = np.zeros(n), np.zeros(n)
        lengths = np.zeros(n, dtype=np.int64)
        version = [""] * n
        for g in groups:
            # the fallback group (primary rows in the canary's place) read its stats last
            stats = stats_of[CANARY] if g.fallback else stats_of[g.role]
            g.thresholds = g.model.thresholds.thresholds_for(g.users(users), stats)
            g.stats = stats
            probs[g.rows], bars[g.rows] = g.scored.probs, g.thresholds
            lengths[g.rows] = g.scored.features.hist_len
            for i in g.rows.tolist():
                version[i] = g.model.version
        s4 = time.time_ns()
        reasons: dict[int, list[Reason]] = {}
        similar: dict[int, list[SimilarCase]] = {}
        if (probs >= bars).any():  # no alert, nothing to explain: no thread hop either
            reasons, similar = await self._on_model(
                n,
                _explain_groups,
                groups,
                probs,
                bars,
                self.reasons_top,
                self.similar_k,
                reads_states=False,  # the head and the case memory (own lock) only
            )
        first = groups[0].scored
        stages = {
            "store": (s0, s1),
            "thresholds": (s2, s3),
            **first.times,
            "explain": (s4, time.time_ns()),
        }
        writes = [
            g.model.thresholds.update(
                [users[i] for i in g.rows[wet[g.rows]]],
                probs[g.rows][wet[g.rows]],
                bars[g.rows][wet[g.rows]],
                g.stats,
            )
            for g in groups
            if wet[g.rows].any()
        ]
        shadow_scores = None
        shadow = roles.shadow
        if shadow is not None:  # featurized with the shadow's own spec
            shadow_scores = await self._shadow_scores(
                shadow, prior, users, records, dry, entity_stats
            )
            if shadow_scores is not None and wet.any():
                # the shadow keeps statistics of its own scores, so a promoted version
                # starts with warm per-user thresholds
                st = reads[-1]
                shadow_bars = shadow.thresholds.thresholds_for(users, st)
                _count(SHADOW, shadow.version, shadow_scores, shadow_bars, roles)
                writes.append(
                    shadow.thresholds.update(
                        [u for u, w in zip(users, wet, strict=True) if w],
                        shadow_scores[wet],
                        shadow_bars[wet],
                        st,
                    )
                )
        if writes:
            # written while the caller publishes; ``settle`` (the caller, before it acks,
            # and the next batch, before it reads) waits for them and raises a failure
            self._writes = asyncio.ensure_future(asyncio.gather(*writes))
        for g in groups:
            _count(g.role, g.model.version, g.scored.probs, g.thresholds, roles)
        now, scored_at = time.monotonic(), datetime.now(UTC)
        shadow_version = None if shadow is None or shadow_scores is None else shadow.version
        scores, thresholds, hist = probs.tolist(), bars.tolist(), lengths.tolist()
        shadows = [None] * n if shadow_scores is None else shadow_scores.tolist()
        decisions = [
            Decision(
                tx=req.tx,
                score=scores[i],
                threshold=thresholds[i],
                model_version=version[i],
                sequence_length=hist[i],
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
        parts = []
        for g in groups:
            local = np.flatnonzero(wet[g.rows])
            # an incremental version cached its cards' next states while scoring
            if local.size and g.scored.states is None:
                parts.append(
                    RefreshPart(
                        g.model.bundle,
                        [users[i] for i in g.rows[local]],
                        g.scored.windows.take(local),
                        g.scored.features.take(local),
                    )
                )
        return decisions, RefreshWork(tuple(parts))

    async def _shadow_scores(
        self,
        shadow: ServingModel,
        prior: dict[str, np.ndarray],
        users: list[str],
        records: np.ndarray,
        dry: np.ndarray,
        entity_stats: np.ndarray | None,
    ) -> np.ndarray | None:
        """The shadow's scores, or None when it failed (counted; it never fails a batch)."""
        t0 = time.perf_counter()
        try:
            out = await self._on_model(
                len(users),
                score_alone,
                shadow.bundle.model,
                prior,
                users,
                records,
                dry,
                entity_stats,
            )
        except Exception:
            log.exception("shadow model %s failed on a batch", shadow.version)
            VERSION_ERRORS.labels(shadow.version, SHADOW).inc()
            return None
        VERSION_LATENCY_MS.labels(shadow.version, SHADOW).observe((time.perf_counter() - t0) * 1000)
        return out

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
        """After publish: cache each user's embedding including their newest event
        (window versions; incremental ones cached their states while scoring)."""
        await self.states_stored()
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


@dataclass
class _Group:
    """The rows one version decided in a batch, and what it computed for them."""

    role: str
    model: ServingModel
    rows: np.ndarray
    scored: Scored
    fallback: bool = False  # primary rows standing in for a failed canary
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stats: dict[str, UserStats] = field(default_factory=dict)

    def users(self, users: list[str]) -> list[str]:
        return [users[i] for i in self.rows]


def _score_groups(
    plan: list[tuple[str, ServingModel, np.ndarray]],
    prior: dict[str, np.ndarray],
    users: list[str],
    records: np.ndarray,
    dry: np.ndarray,
    entity_stats: np.ndarray | None,
    fallback: bool = False,
) -> tuple[list[_Group], np.ndarray | None]:
    """Score each version's rows (model thread). A canary that fails hands its rows back
    (second value) to be decided by the primary; a failing primary fails the batch.
    ``fallback``: these are the primary's run on a failed canary's rows."""
    groups: list[_Group] = []
    failed = None
    for role, model, rows in plan:
        t0 = time.perf_counter()
        try:
            scored = score_batch(
                model.bundle,
                prior,
                [users[i] for i in rows],
                records[rows],
                dry[rows],
                None if entity_stats is None else entity_stats[rows],
            )
        except Exception:
            if role == PRIMARY:
                raise
            log.exception("canary model %s failed on a batch; the primary decides", model.version)
            VERSION_ERRORS.labels(model.version, role).inc()
            failed = rows
            continue
        VERSION_LATENCY_MS.labels(model.version, role).observe((time.perf_counter() - t0) * 1000)
        groups.append(_Group(role, model, rows, scored, fallback))
    return groups, failed


def _log_state_failure(job: Future[int]) -> None:
    """The cache is an optimization: a failed state update costs a rebuild, not a batch."""
    if not job.cancelled() and job.exception() is not None:
        log.warning("caching the next states failed", exc_info=job.exception())


def _explain_groups(
    groups: list[_Group], probs: np.ndarray, bars: np.ndarray, reasons_top: int, similar_k: int
) -> tuple[dict[int, list[Reason]], dict[int, list[SimilarCase]]]:
    """Reasons and similar cases for the alerts, each by the version that decided it."""
    reasons: dict[int, list[Reason]] = {}
    similar: dict[int, list[SimilarCase]] = {}
    for g in groups:
        local = np.flatnonzero(probs[g.rows] >= bars[g.rows])
        why, near = explain_alerts(g.model.bundle, g.scored, local, reasons_top, similar_k)
        reasons.update({int(g.rows[i]): r for i, r in why.items()})
        similar.update({int(g.rows[i]): c for i, c in near.items()})
    return reasons, similar


def _count(
    role: str, version: str, scores: np.ndarray, bars: np.ndarray, roles: ServingRoles
) -> None:
    """Per-version metrics and the roles' own counters (the canary guard reads them)."""
    alerts = int(np.count_nonzero(scores >= bars))
    VERSION_DECISIONS.labels(version, role, "alert").inc(alerts)
    VERSION_DECISIONS.labels(version, role, "pass").inc(scores.size - alerts)
    hist = VERSION_SCORES.labels(version, role)
    for v in scores.tolist():
        hist.observe(v)
    roles.counters.count(role, scores.size, alerts)
