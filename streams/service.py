"""The one place that builds the worker's components, once, from the settings.

Constructors do no I/O; ``start()`` connects, loads and warms the model, restores the
embedding cache and creates topics; ``ready()`` reflects the dependencies for /readyz.
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

from features.errors import RiskstreamError
from features.sequence_store import RedisSequenceStore
from models.artifact import load_artifact
from scoring.batcher import MicroBatcher
from scoring.case_memory import FraudCaseMemory
from scoring.embedding_cache import FaissEmbeddingCache
from scoring.engine import Decision, ModelBundle, ScoreRequest, ScoringEngine
from scoring.onnx_model import OnnxModelConfig, OnnxRiskModel
from scoring.thresholds import RedisThresholdPolicy
from streams.metrics import MODEL_INFO, READY
from streams.pipeline import BatchPipeline
from streams.publisher import DecisionPublisher
from streams.settings import Settings

log = logging.getLogger(__name__)


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
    """Everything a worker process needs, built from ``settings``."""

    settings: Settings
    redis: aioredis.Redis | None = field(default=None, init=False)
    engine: ScoringEngine | None = field(default=None, init=False)
    batcher: MicroBatcher[ScoreRequest, tuple[Decision, object]] | None = field(
        default=None, init=False
    )
    publisher: DecisionPublisher | None = field(default=None, init=False)
    pipeline: BatchPipeline | None = field(default=None, init=False)
    cache_restored: bool = field(default=False, init=False)
    exit_code: int | None = field(default=None, init=False)
    _stopped: bool = field(default=False, init=False)
    _failing: asyncio.Future[None] | None = field(default=None, init=False)
    _inflight: set[asyncio.Future[Any]] = field(default_factory=set, init=False)

    def track(self, task: asyncio.Future[Any]) -> None:
        """Remember a batch in flight so ``stop`` can let it finish."""
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    @property
    def snapshot_dir(self) -> Path:
        return self.settings.data_dir / "cache"

    def fail(self, code: int) -> None:
        """Stop the worker through its normal shutdown, then exit with ``code``.

        The graceful stop (SIGTERM to ourselves: Faust stops the agents, ``stop`` lets the
        batch in flight finish, snapshots the cache and flushes the producer) runs first;
        ``run_worker`` turns the recorded code into the exit status. Idempotent.
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

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        url = s.redis.url.get_secret_value()
        options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2}
        if s.redis.password is not None:
            options["password"] = s.redis.password.get_secret_value()
        if url.startswith("rediss://") and s.redis.ssl_ca_certs:
            options["ssl_ca_certs"] = str(s.redis.ssl_ca_certs)
        self.redis = aioredis.Redis.from_url(url, **options)
        store = RedisSequenceStore(
            self.redis, s.sequence, s.redis.retry_attempts, s.redis.retry_backoff_s
        )
        bundle = await loop.run_in_executor(None, load_bundle, s.model.path, s)
        await loop.run_in_executor(None, self._restore, bundle)
        self.cache_restored = True
        thresholds = RedisThresholdPolicy(
            self.redis,
            bundle.model.artifact.global_threshold,
            s.thresholds.resolved(s.sequence.key_prefix),
            s.redis.retry_attempts,
            s.redis.retry_backoff_s,
            cluster_mode=s.sequence.cluster_mode,
        )
        shadow = None
        if s.model.shadow_path is not None:
            shadow = (await loop.run_in_executor(None, load_bundle, s.model.shadow_path, s)).model
        self.engine = ScoringEngine(bundle, store, thresholds, shadow)
        k = s.kafka
        self.publisher = DecisionPublisher(
            k.confluent_config(),
            linger_ms=k.linger_ms,
            message_timeout_ms=k.message_timeout_ms,
            retries=k.publish_retries,
            retry_backoff_s=k.publish_retry_backoff_s,
        )
        self.publisher.start()
        self.batcher = MicroBatcher(self._score_many, s.batch.max_batch, s.batch.max_wait_ms)
        await self.batcher.start()
        self.pipeline = BatchPipeline(
            self._score_via_batcher,
            self.publisher,
            s.topics,
            refresh=self._refresh,
            settle=self.engine.settle,
        )
        MODEL_INFO.info(
            {"version": bundle.model.version, "providers": ",".join(bundle.model.providers())}
        )
        READY.set(1)

    def _restore(self, bundle: ModelBundle) -> None:
        if bundle.cache is not None:
            n = bundle.cache.restore(self.snapshot_dir)
            log.info("embedding cache: %d entries restored", n)
        if bundle.memory is not None:
            n = bundle.memory.restore(self.snapshot_dir)
            log.info("fraud-case memory: %d cases learned from feedback restored", n)

    def snapshot(self) -> None:
        """Write the cache and the learned fraud cases (blocking: call it off the loop)."""
        if self.engine is None:
            return
        bundle = self.engine.bundle
        try:
            if bundle.cache is not None:
                bundle.cache.snapshot(self.snapshot_dir)
            if bundle.memory is not None:
                bundle.memory.snapshot(self.snapshot_dir)
        except OSError as exc:
            log.warning("snapshot failed: %s", exc)

    async def _score_many(self, reqs: list[ScoreRequest]) -> list[tuple[Decision, object]]:
        """The batcher's function: one engine call for requests from every source."""
        if self.engine is None:
            raise RuntimeError("service not started")
        decisions, pending = await self.engine.score(reqs)
        return [(d, pending) for d in decisions]

    async def _score_via_batcher(self, reqs: list[ScoreRequest]) -> tuple[list[Decision], object]:
        if self.batcher is None:
            raise RuntimeError("service not started")
        results = await self.batcher.submit_many(reqs, complete=True)
        pendings = list({id(p): p for _, p in results}.values())
        return [d for d, _ in results], pendings

    async def _refresh(self, pendings: object) -> int:
        if self.engine is None:
            return 0
        total = 0
        for pending in pendings:  # type: ignore[attr-defined]
            total += await self.engine.refresh_cache(pending)
        return total

    async def ready(self) -> dict[str, bool]:
        """What /readyz reports: each dependency and the overall verdict."""
        redis_ok = False
        if self.redis is not None:
            try:
                redis_ok = bool(await asyncio.wait_for(self.redis.ping(), 1.0))
            except Exception:
                redis_ok = False
        model_ok = self.engine is not None and self.engine.bundle.model.ready
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
        if self.pipeline is not None:
            await self.pipeline.drain()
        if self.batcher is not None:
            await self.batcher.stop()
        if self.engine is not None:
            try:
                await self.engine.settle()  # an HTTP batch's threshold write
            except RiskstreamError as exc:
                log.warning("last threshold write failed: %s", exc.one_line())
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.snapshot)
            await loop.run_in_executor(None, self.engine.close)
        if self.publisher is not None:
            left = await asyncio.get_running_loop().run_in_executor(None, self.publisher.close)
            if left:
                log.warning("%d messages still unacknowledged at shutdown", left)
        if self.redis is not None:
            await self.redis.aclose()
        READY.set(0)
