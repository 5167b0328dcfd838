"""Everything a started worker serves with, built once by ``WorkerService.start``.

Frozen and complete: agents and HTTP views receive a ``Runtime`` and use its parts
without checking whether each one exists yet. Before start-up finishes there is no
runtime at all (views answer 503; agents wait for it once).
"""

from __future__ import annotations

from dataclasses import dataclass

from scoring.batcher import MicroBatcher
from scoring.cache_refresh import RefreshWork
from scoring.decision import Decision, ScoreRequest
from scoring.engine import ScoringEngine
from scoring.state.redis_retry import RedisClient
from streams.kafka.publisher import Publisher
from streams.model_follower import RegistryFollower
from streams.pipeline import BatchPipeline
from streams.tracing import Tracing

ScoredRequest = tuple[Decision, RefreshWork]


@dataclass(frozen=True)
class Runtime:
    """The started worker's clients and components."""

    redis: RedisClient
    engine: ScoringEngine
    batcher: MicroBatcher[ScoreRequest, ScoredRequest]
    publisher: Publisher
    pipeline: BatchPipeline
    tracing: Tracing | None = None  # None when tracing is off
    follower: RegistryFollower | None = None  # applies the model registry's roles
