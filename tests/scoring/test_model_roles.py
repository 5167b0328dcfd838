"""Roles at run time: canary routing, shadow scores, state per version, the canary guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.contracts import Transaction
from scoring.artifact import load_artifact
from scoring.bundle import ModelBundle
from scoring.canary_guard import canary_verdict
from scoring.case_memory import FraudCaseMemory
from scoring.decision import ScoreRequest
from scoring.embedding_cache import FaissEmbeddingCache
from scoring.engine import ScoringEngine
from scoring.model_roles import (
    CANARY,
    PRIMARY,
    RoleCounters,
    ServingRoles,
    canary_bucket,
    in_canary,
)
from scoring.onnx_model import OnnxRiskModel
from scoring.state.sequence_store import InMemorySequenceStore
from scoring.thresholds import InMemoryThresholdPolicy
from tests.model_versions import make_version
from tests.service_helpers import transactions


@pytest.fixture(scope="module")
def stream() -> list[Transaction]:
    return transactions(users=60, days=10, seed=5)


def _bundle(path: Path | None = None) -> ModelBundle:
    model = OnnxRiskModel(load_artifact(path)).load()
    cache = FaissEmbeddingCache(model.artifact.embedding_dim, 1000, model.version)
    return ModelBundle(model, cache, FraudCaseMemory.from_artifact(model.artifact))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelBundle, ModelBundle]:
    # v2 alerts on far more: a different global threshold, so its decisions differ
    v2 = make_version(tmp_path_factory.mktemp("v"), "v2", global_threshold=0.002)
    return _bundle(), _bundle(v2)


def test_the_canary_share_is_stable_and_close_to_its_target() -> None:
    users = [f"card-{i}" for i in range(20_000)]
    share = in_canary(users, 1000).mean()
    assert abs(share - 0.10) < 0.006
    assert [canary_bucket(u) for u in users[:50]] == [canary_bucket(u) for u in users[:50]]
    assert not in_canary(users, 0).any()
    # a bigger share keeps every card of a smaller one (widening never moves a card back)
    assert (in_canary(users, 2000) | ~in_canary(users, 1000)).all()


def _engine(bundles: tuple[ModelBundle, ModelBundle]) -> ScoringEngine:
    v1, _ = bundles
    policy = InMemoryThresholdPolicy(v1.model.artifact.global_threshold, version=v1.model.version)
    return ScoringEngine(v1, InMemorySequenceStore(), policy)


async def test_the_canary_decides_for_its_card_holders_with_its_own_state(bundles, stream) -> None:
    v1, v2 = bundles
    engine = _engine(bundles)
    canary = engine.serving_model(v2)
    engine.set_roles(ServingRoles(engine.roles.primary, canary, 3000))
    try:
        decisions = []
        for s in range(0, len(stream), 64):
            out, work = await engine.score([ScoreRequest(t) for t in stream[s : s + 64]])
            await engine.refresh_cache(work)
            decisions += out
        await engine.settle()
        users = [d.tx.user_id for d in decisions]
        routed = in_canary(users, 3000)
        assert 0 < routed.sum() < len(users)
        versions = np.array([d.model_version for d in decisions])
        assert (versions[routed] == "v2").all() and (versions[~routed] == v1.model.version).all()
        # each version judged its own cards against its own score statistics
        primary_policy = engine.roles.primary.thresholds
        assert isinstance(primary_policy, InMemoryThresholdPolicy)
        assert isinstance(canary.thresholds, InMemoryThresholdPolicy)
        in_v1 = {u for u, st in primary_policy.stats.items() if st.n > 0}
        in_v2 = {u for u, st in canary.thresholds.stats.items() if st.n > 0}
        assert in_v1 and in_v2 and not in_v1 & in_v2
        assert in_v2 <= {u for u, r in zip(users, routed, strict=True) if r}
        # ... and its own calibration: v2's global threshold is far lower
        bar = {
            v: np.mean([d.threshold for d in decisions if d.model_version == v])
            for v in ("v2", v1.model.version)
        }
        assert bar["v2"] < bar[v1.model.version] / 3
        # each version caches its own embeddings
        assert v2.cache is not None and v1.cache is not None
        assert len(v2.cache) == len(in_v2) and len(v1.cache) == len(set(users) - set(in_v2))
        counters = engine.roles.counters
        assert counters.events[CANARY] == routed.sum()
        assert counters.events[PRIMARY] == (~routed).sum()
        # the analyst adjustment follows the card across versions
        user = next(u for u, r in zip(users, routed, strict=True) if r)
        before = float((await primary_policy.thresholds([user]))[0])
        await engine.feedback(user, decisions[users.index(user)].tx.transaction_id, "legit")
        assert float((await primary_policy.thresholds([user]))[0]) > before
    finally:
        engine.close()


async def test_a_shadow_scores_everything_decides_nothing_and_warms_its_thresholds(
    bundles, stream
) -> None:
    v1, v2 = bundles
    engine = _engine(bundles)
    shadow = engine.serving_model(ModelBundle(v2.model, None, None))
    engine.set_roles(ServingRoles(engine.roles.primary, shadow=shadow))
    try:
        decisions, _ = await engine.score([ScoreRequest(t) for t in stream[:200]])
        await engine.settle()
        assert all(d.model_version == v1.model.version for d in decisions)
        assert all(d.shadow_model_version == "v2" and d.shadow_score is not None for d in decisions)
        assert isinstance(shadow.thresholds, InMemoryThresholdPolicy)
        warmed = sum(st.n for st in shadow.thresholds.stats.values())
        assert 0 < warmed <= len(decisions)
        engine.set_roles(ServingRoles(engine.roles.primary))
        plain, _ = await engine.score([ScoreRequest(t) for t in stream[200:210]])
        assert all(d.shadow_score is None and d.shadow_model_version is None for d in plain)
    finally:
        engine.close()


class _Broken(OnnxRiskModel):
    """A model that loads and warms, then fails every batch (a runtime fault)."""

    broken = False

    def score(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.broken:
            raise RuntimeError("injected scoring fault")
        return super().score(*args, **kwargs)


async def test_a_failing_canary_hands_its_rows_to_the_primary(bundles, stream, tmp_path) -> None:
    v1, _ = bundles
    engine = _engine(bundles)
    broken = _Broken(load_artifact(make_version(tmp_path, "v-broken"))).load()
    broken.broken = True
    engine.set_roles(
        ServingRoles(
            engine.roles.primary, engine.serving_model(ModelBundle(broken, None, None)), 5000
        )
    )
    try:
        decisions, _ = await engine.score([ScoreRequest(t) for t in stream[:100]])
        assert len(decisions) == 100
        assert all(d.model_version == v1.model.version for d in decisions)
        c = engine.roles.counters
        assert c.errors[CANARY] == c.events[CANARY] > 0
    finally:
        engine.close()


def _counters(**kw: tuple[int, int, int]) -> RoleCounters:
    c = RoleCounters()
    for role, (n, alerts, errors) in kw.items():
        c.count(role, n, alerts, errors)
    return c


def test_canary_verdicts() -> None:
    judge = lambda c: canary_verdict(c, 0.01, 3.0, 1000)  # noqa: E731
    assert judge(_counters(primary=(5000, 25, 0), canary=(500, 50, 0))) is None  # too young
    assert judge(_counters(primary=(5000, 25, 0), canary=(1000, 5, 0))) is None  # in bounds
    high = judge(_counters(primary=(5000, 25, 0), canary=(1000, 40, 0)))
    assert high is not None and high.cause == "alert_ratio"
    silent = judge(_counters(primary=(5000, 100, 0), canary=(2000, 0, 0)))
    assert silent is not None and silent.cause == "alert_ratio"
    errors = judge(_counters(primary=(10, 0, 0), canary=(1000, 5, 20)))
    assert errors is not None and errors.cause == "error_rate"
