"""The merchant/device profiles' round trip overlaps the sequence model.

Neither the encoder nor the incremental step reads the profiles; only the head and the
tree do. So the engine sends the profile script call first and runs the sequence part of
the model while Redis answers (``ScoringEngine.score``). Checked on a real Redis: when
the sequence part starts, Redis has already received the call and the engine has not yet
read its reply. Before, the model started only after the reply was read; and if a client
upgrade made the request leave later (more loop turns than ``_SEND_TURNS``), Redis
would not receive it while the model holds the loop, and this test fails.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis

import scoring.engine
from scoring.artifact import load_artifact
from scoring.bundle import ModelBundle
from scoring.decision import ScoreRequest
from scoring.embedding_cache import FaissEmbeddingCache
from scoring.engine import ScoringEngine
from scoring.onnx_model import OnnxRiskModel
from scoring.state.entity_store import RedisEntityStore
from scoring.state.sequence_store import InMemorySequenceStore
from scoring.thresholds import InMemoryThresholdPolicy
from tests.service_helpers import transactions


def _script_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_the_profile_request_is_on_its_way_while_the_sequence_model_runs(
    stack, unique_name, monkeypatch
) -> None:
    """A small batch, whose model runs on the event loop itself: the case where the
    request must have left before the model starts."""
    model = OnnxRiskModel(load_artifact()).load()
    assert model.artifact.spec.entity  # the packaged model reads merchant/device profiles
    client = aioredis.Redis.from_url(stack.redis_url)
    probe = redis.Redis.from_url(stack.redis_url)
    entities = RedisEntityStore(client, unique_name("overlap") + ":")
    engine = ScoringEngine(
        ModelBundle(
            model, FaissEmbeddingCache(model.artifact.embedding_dim, 100, model.version), None
        ),
        InMemorySequenceStore(),  # the profiles are the batch's only Redis calls
        InMemoryThresholdPolicy(model.artifact.global_threshold),
        entities=entities,
        inline_max_batch=32,
    )
    txs = transactions(users=3, days=10, seed=21)
    replied = False
    observe = entities.observe

    async def observed(*args: Any) -> np.ndarray:
        nonlocal replied
        out = await observe(*args)
        replied = True
        return out

    seen: list[tuple[bool, bool]] = []
    encode = scoring.engine._encode_groups

    def encoding(*args: Any) -> Any:
        replied_first, received = replied, False
        deadline = time.monotonic() + 2.0  # the model holding the loop a while
        while not received and time.monotonic() < deadline:
            received = _script_calls(probe) > calls_at_start
            time.sleep(0.005)
        seen.append((received, replied_first))
        return encode(*args)

    try:
        await engine.score([ScoreRequest(t) for t in txs[:-4]])  # loads the script
        await engine.states_stored()
        monkeypatch.setattr(entities, "observe", observed)
        monkeypatch.setattr(scoring.engine, "_encode_groups", encoding)
        calls_at_start = _script_calls(probe)
        decisions, _ = await engine.score([ScoreRequest(t) for t in txs[-4:]])
    finally:
        engine.close()
        await client.aclose()
        probe.close()
    assert len(decisions) == 4 and replied
    assert seen == [(True, False)]  # received by Redis, its reply not yet read
    assert decisions[0].entity is not None  # the head did get the profiles
