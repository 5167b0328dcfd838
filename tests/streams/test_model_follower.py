"""The registry follower: roles applied between batches, load failures, automatic rollback.

Component tier: a real registry folder and real ONNX models, in-memory stores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from features.contracts import Transaction
from scoring.artifact import DEFAULT_ARTIFACT, load_artifact
from scoring.decision import ScoreRequest
from scoring.engine import ScoringEngine
from scoring.model_registry import ModelRegistry
from scoring.state.sequence_store import InMemorySequenceStore
from scoring.thresholds import InMemoryThresholdPolicy, ThresholdConfig
from streams.metrics import CANARY_ROLLBACKS, MODEL_LOAD_FAILURES
from streams.model_follower import RegistryFollower
from streams.service import load_bundle
from streams.settings import CanaryGuardSettings, load_settings
from tests.model_versions import make_version
from tests.service_helpers import transactions

V1 = load_artifact().version


@pytest.fixture(scope="module")
def stream() -> list[Transaction]:
    return transactions(users=80, days=8, seed=3)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(tmp_path / "registry")
    reg.register(DEFAULT_ARTIFACT)
    # v2 alerts on everything: a zero global threshold (and no floor, below)
    reg.register(make_version(tmp_path, "v2", global_threshold=0.0))
    reg.promote(V1)
    return reg


def _follower(
    registry: ModelRegistry, guard: CanaryGuardSettings | None = None
) -> tuple[ScoringEngine, RegistryFollower]:
    settings = load_settings(**{"model.cache_capacity": 1000})
    primary = load_bundle(registry.artifact_path(V1), settings)
    policy = InMemoryThresholdPolicy(
        primary.model.artifact.global_threshold, ThresholdConfig(lower=0.0), V1
    )
    engine = ScoringEngine(primary, InMemorySequenceStore(), policy)
    return engine, RegistryFollower(
        registry, engine, lambda p: load_bundle(p, settings), 0.05, guard
    )


async def test_each_pointer_change_is_applied_once_between_batches(registry, stream) -> None:
    engine, follower = _follower(registry)
    try:
        assert await follower.poll() and follower.applied == 1
        assert not await follower.poll()  # nothing new
        registry.set_shadow("v2")
        assert await follower.poll()
        before = engine.roles
        batch = asyncio.ensure_future(engine.score([ScoreRequest(t) for t in stream[:50]]))
        await asyncio.sleep(0)  # the batch has started (it took its roles) and is waiting
        registry.set_canary("v2", 20)
        await follower.poll()  # swaps while that batch is in flight
        decisions, _ = await batch
        # the batch in flight finished on the roles it started with (v2 as shadow)
        assert all(d.shadow_model_version == "v2" for d in decisions)
        assert {d.model_version for d in decisions} == {V1}
        assert engine.roles is not before and engine.roles.describe()["canary"] == "v2"
        shadow_model = before.shadow
        assert shadow_model is not None and engine.roles.canary is shadow_model  # same state
        registry.promote("v2")
        await follower.poll()
        assert engine.roles.primary.version == "v2" and engine.roles.canary is None
        old_primary = before.primary
        registry.rollback()
        await follower.poll()
        # the demoted version was kept warm: rollback swaps back to the same object
        assert engine.roles.primary is old_primary
    finally:
        engine.close()


async def test_a_version_that_fails_to_load_leaves_the_current_one_serving(
    registry, tmp_path, stream
) -> None:
    engine, follower = _follower(registry)
    try:
        await follower.poll()
        registry.register(make_version(tmp_path / "b", "v-bad"))
        with (registry.artifact_path("v-bad") / "head.onnx").open("ab") as fh:
            fh.write(b"\0")  # damaged after registration
        failures = MODEL_LOAD_FAILURES.labels("v-bad")._value.get()
        registry.promote("v-bad")
        await follower.poll()
        assert engine.roles.primary.version == V1  # still serving
        assert MODEL_LOAD_FAILURES.labels("v-bad")._value.get() == failures + 1
        (failure,) = registry.failures("v-bad")
        assert "sha256 of head.onnx" in failure["reason"]
        assert follower.last_error is not None and "v-bad" in follower.last_error
        assert not await follower.poll()  # not retried every tick
        decisions, _ = await engine.score([ScoreRequest(t) for t in stream[:10]])
        assert {d.model_version for d in decisions} == {V1}
    finally:
        engine.close()


async def test_the_canary_guard_rolls_a_misbehaving_canary_back(registry, stream) -> None:
    guard = CanaryGuardSettings(enabled=True, max_alert_ratio=3.0, min_events=40)
    engine, follower = _follower(registry, guard)
    try:
        registry.set_canary("v2", 50)
        await follower.poll()
        assert engine.roles.canary is not None
        rollbacks = CANARY_ROLLBACKS.labels("alert_ratio")._value.get()
        for s in range(0, 400, 50):
            await engine.score([ScoreRequest(t) for t in stream[s : s + 50]])
        assert await follower.poll()
        assert engine.roles.canary is None
        pointer = registry.pointer()
        assert pointer is not None and pointer.canary is None
        assert "automatic rollback of v2" in pointer.reason
        assert pointer.changed_by.startswith("canary guard on ")
        assert CANARY_ROLLBACKS.labels("alert_ratio")._value.get() == rollbacks + 1
    finally:
        engine.close()
