"""The one place that builds the worker's components, once, from the settings.

Constructors do no I/O; ``start()`` connects, loads and warms the model, restores the
embedding cache and hands back the frozen ``Runtime``; ``ready()`` reflects the
dependencies for /readyz; ``stop()`` finishes what is in flight, snapshots, flushes.
Topics are created before (``streams.startup``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from features.errors import RiskstreamError
from scoring.artifact import load_artifact
from scoring.batcher import MicroBatcher
from scoring.bundle import ModelBundle
from scoring.cache_refresh import RefreshWork
from scoring.case_memory import FraudCaseMemory
from scoring.decision import Decision, ScoreRequest
from scoring.embedding_cache import FaissEmbeddingCache
from scoring.engine import ScoringEngine
from scoring.model_registry import ModelRegistry
from scoring.onnx_model import OnnxModelConfig, OnnxRiskModel
from scoring.state.entity_store import RedisEntityStore
from scoring.state.redis_retry import RedisClient
from scoring.state.sequence_store import RedisSequenceStore
from scoring.thresholds import RedisThresholdPolicy
from streams.kafka.publisher import Publisher
from streams.metrics import READY
from streams.model_follower import RegistryFollower
from streams.pipeline import BatchPipeline
from streams.runtime import Runtime, ScoredRequest
from streams.settings import KafkaSettings, Settings
from streams.tracing import build_tracing

log = logging.getLogger(__name__)


def redis_client(s: Settings) -> RedisClient:
    """The worker's Redis client (no I/O until first used): a cluster client when
    ``redis.cluster`` (it discovers the nodes from the URL's seed), AUTH and TLS alike."""
    url = s.redis.url.get_secret_value()
    options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2}
    if s.redis.password is not None:
        options["password"] = s.redis.password.get_secret_value()
    if url.startswith("rediss://") and s.redis.ssl_ca_certs:
        options["ssl_ca_certs"] = str(s.redis.ssl_ca_certs)
    if s.redis.cluster:
        return RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)


async def redis_ready(client: RedisClient) -> bool:
    """PING; on a cluster also ``cluster_state:ok`` (every slot served)."""
    if not await client.ping():
        return False
    if isinstance(client, RedisCluster):
        info = await client.execute_command("CLUSTER INFO", target_nodes=RedisCluster.RANDOM)
        return bool(info.get("cluster_state") == "ok")
    return True


def decision_publisher(k: KafkaSettings) -> Publisher:
    """The worker's one producer, configured from the Kafka settings."""
    return Publisher(
        k.confluent_config(),
        linger_ms=k.linger_ms,
        message_timeout_ms=k.message_timeout_ms,
        retries=k.publish_retries,
        retry_backoff_s=k.publish_retry_backoff_s,
    )


def load_bundle(path: Path | None, settings: Settings) -> ModelBundle:
    """Load, verify and warm a model with a fresh cache and case memory."""
    artifact = load_artifact(path)
    model = OnnxRiskModel(
        artifact,
        OnnxModelConfig(
            providers=tuple(settings.model.providers),
            intra_op_threads=settings.model.intra_op_threads,
            io_binding=settings.model.io_binding,
            allow_spinning=settings.model.ort_spinning,
        ),
    ).load()
    cache = (
        FaissEmbeddingCache(artifact.embedding_dim, settings.model.cache_capacity, artifact.version)
        if settings.model.cache_capacity > 0
        else None
    )
    return ModelBundle(model, cache, FraudCaseMemory.from_artifact(artifact))


@dataclass
class WorkerService:
    """Everything a worker process needs, built from ``settings``; ``runtime`` once started."""

    settings: Settings
    runtime: Runtime | None = field(default=None, init=False)
    cache_restored: bool = field(default=False, init=False)
    exit_code: int | None = field(default=None, init=False)
    _stopped: bool = field(default=False, init=False)
    _failing: asyncio.Future[None] | None = field(default=None, init=False)
    _inflight: set[asyncio.Future[Any]] = field(default_factory=set, init=False)
    _started: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def track(self, task: asyncio.Future[Any]) -> None:
        """Remember a batch in flight so ``stop`` can let it finish."""
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def started(self) -> Runtime:
        """The runtime, once ``start`` has built it (agents wait here; events stay unacked)."""
        await self._started.wait()
        assert self.runtime is not None  # set before the event
        return self.runtime

    @property
    def snapshot_dir(self) -> Path:
        return self.settings.data_dir / "cache"

    def version_snapshot_dir(self, version: str) -> Path:
        """A version's cache and learned cases: each model's embeddings apart."""
        return self.snapshot_dir / version

    def fail(self, code: int) -> None:
        """Stop the worker through its normal shutdown, then exit with ``code``.

        The graceful stop (``stop`` lets the batch in flight finish, snapshots the cache
        and flushes the producer) runs first; then the process exits. Idempotent.
        """
        if self.exit_code is not None:
            return
        self.exit_code = code
        self._failing = asyncio.ensure_future(self._stop_and_exit(code))

    async def _stop_and_exit(self, code: int) -> None:
        # Faust's own stop would wait forever for the failed batch's ack (wait_empty):
        # stop our side (in-flight batches, snapshot, producer flush), then exit; the
        # uncommitted batch is consumed again by the restarted worker.
        try:
            await asyncio.wait_for(self.stop(), 60)
        except Exception:
            log.exception("the stop after a failure did not complete")
        log.critical("stopped after an infrastructure failure; exiting with %d", code)
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)

    async def start(self) -> Runtime:
        """Connect, load and warm the model, restore the cache; build the runtime once.

        The registry's primary (when one was promoted) serves instead of ``model.path``,
        with its canary and shadow; otherwise ``model.path`` and ``model.shadow_path``.
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        client = redis_client(s)
        sequence = s.sequence.model_copy(update={"cluster_mode": s.cluster_mode})
        store = RedisSequenceStore(
            client, sequence, s.redis.retry_attempts, s.redis.retry_backoff_s
        )
        registry = ModelRegistry(s.registry_dir)
        pointer = None
        if s.model.follow_registry:
            try:
                pointer = await loop.run_in_executor(None, registry.pointer)
            except RiskstreamError as exc:
                log.error("model registry unreadable, serving model.path: %s", exc.one_line())
        path = s.model.path
        if pointer is not None and pointer.primary is not None:
            path = registry.artifact_path(pointer.primary)
        bundle = await loop.run_in_executor(None, self.load_version, path)
        self.cache_restored = True
        thresholds = RedisThresholdPolicy(
            client,
            bundle.model.artifact.global_threshold,
            s.thresholds.resolved(s.sequence.key_prefix),
            s.redis.retry_attempts,
            s.redis.retry_backoff_s,
            cluster_mode=s.cluster_mode,
            version=bundle.model.version,
            learned=bundle.model.artifact.threshold_policy,
        )
        shadow = None
        if s.model.shadow_path is not None and pointer is None:
            shadow = await loop.run_in_executor(None, self.load_version, s.model.shadow_path)
        entities = None
        if s.entity.enabled:
            entities = RedisEntityStore(
                client,
                s.sequence.key_prefix,
                s.entity.profile(),
                cluster_mode=s.cluster_mode,
                retry_attempts=s.redis.retry_attempts,
                retry_backoff_s=s.redis.retry_backoff_s,
            )
        engine = ScoringEngine(
            bundle,
            store,
            thresholds,
            shadow,
            entities=entities,
            inline_max_batch=s.model.inline_max_batch,
        )
        follower = RegistryFollower(
            registry, engine, self.load_version, s.model.watch_interval_s, s.model.canary_guard
        )
        if pointer is not None:
            await follower.poll()  # the canary and shadow before the first event
        if s.model.follow_registry:
            follower.start()
        publisher = decision_publisher(s.kafka)
        publisher.start()

        async def score_many(reqs: list[ScoreRequest]) -> list[ScoredRequest]:
            # the batcher's function: one engine call for requests from every source
            decisions, work = await engine.score(reqs)
            return [(d, work) for d in decisions]

        batcher = MicroBatcher(score_many, s.batch.max_batch, s.batch.idle_linger_ms)
        await batcher.start()

        async def score_via_batcher(
            reqs: list[ScoreRequest],
        ) -> tuple[list[Decision], list[RefreshWork]]:
            results = await batcher.submit_many(reqs, complete=True)
            works = list({id(w): w for _, w in results}.values())
            return [d for d, _ in results], works

        async def refresh(works: list[RefreshWork]) -> int:
            return sum([await engine.refresh_cache(w) for w in works])

        tracing = build_tracing(s.tracing)
        pipeline = BatchPipeline(
            score_via_batcher,
            publisher,
            s.topics,
            refresh=refresh,
            settle=engine.settle,
            tracing=tracing,
        )
        self.runtime = Runtime(client, engine, batcher, publisher, pipeline, tracing, follower)
        self._started.set()
        READY.set(1)
        return self.runtime

    def load_version(self, path: Path | None) -> ModelBundle:
        """Load and warm a model, then restore its own cache and learned cases (blocking)."""
        bundle = load_bundle(path, self.settings)
        folder = self.version_snapshot_dir(bundle.model.version)
        if bundle.cache is not None:
            n = bundle.cache.restore(folder)
            log.info("embedding cache of %s: %d entries restored", bundle.model.version, n)
        if bundle.memory is not None:
            n = bundle.memory.restore(folder)
            log.info("fraud-case memory of %s: %d learned cases restored", bundle.model.version, n)
        return bundle

    def snapshot(self) -> None:
        """Write each held version's cache and learned fraud cases (blocking: call it
        off the loop)."""
        rt = self.runtime
        if rt is None:
            return
        held = rt.follower.held() if rt.follower is not None else rt.engine.roles.models()
        for model in held:
            bundle, folder = model.bundle, self.version_snapshot_dir(model.version)
            try:
                if bundle.cache is not None:
                    bundle.cache.snapshot(folder)
                if bundle.memory is not None:
                    bundle.memory.snapshot(folder)
            except OSError as exc:
                log.warning("snapshot of %s failed: %s", model.version, exc)

    async def ready(self) -> dict[str, bool]:
        """What /readyz reports: each dependency and the overall verdict."""
        rt = self.runtime
        redis_ok = False
        if rt is not None:
            try:
                redis_ok = await asyncio.wait_for(redis_ready(rt.redis), 1.0)
            except Exception:
                redis_ok = False
        model_ok = rt is not None and rt.engine.bundle.model.ready
        checks = {"redis": redis_ok, "model": model_ok, "cache_restored": self.cache_restored}
        READY.set(1 if all(checks.values()) else 0)
        return checks

    async def stop(self) -> None:
        """Finish batches in flight, drain the batcher, snapshot the cache, close clients."""
        if self._stopped:
            return
        self._stopped = True
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=30)
        rt = self.runtime
        if rt is None:
            return
        loop = asyncio.get_running_loop()
        if rt.follower is not None:
            await rt.follower.stop()
        await rt.pipeline.drain()
        await rt.batcher.stop()
        try:
            await rt.engine.settle()  # an HTTP batch's threshold write
        except RiskstreamError as exc:
            log.warning("last threshold write failed: %s", exc.one_line())
        await loop.run_in_executor(None, self.snapshot)
        await loop.run_in_executor(None, rt.engine.close)
        left = await loop.run_in_executor(None, rt.publisher.close)
        if left:
            log.warning("%d messages still unacknowledged at shutdown", left)
        await rt.redis.aclose()
        if rt.tracing is not None:
            await loop.run_in_executor(None, rt.tracing.shutdown)
        READY.set(0)
