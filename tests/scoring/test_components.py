"""Unit tests: batcher, cache, thresholds, case memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from scoring.batcher import MicroBatcher
from scoring.case_memory import FraudCaseMemory
from scoring.embedding_cache import FaissEmbeddingCache
from scoring.thresholds import ThresholdConfig, UserStats, threshold_for


async def test_batcher_closes_on_size_and_on_time() -> None:
    sizes: list[int] = []

    async def fn(reqs: list[int]) -> list[int]:
        sizes.append(len(reqs))
        return [r * 2 for r in reqs]

    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=4, max_wait_ms=20)
    await b.start()
    try:
        assert await b.submit_many(list(range(10))) == [r * 2 for r in range(10)]
        assert sizes[:2] == [4, 4]
        assert await b.submit(21) == 42  # a lone request waits at most max_wait_ms
    finally:
        await b.stop()


async def test_batcher_closes_a_complete_group_without_waiting() -> None:
    sizes: list[int] = []

    async def fn(reqs: list[int]) -> list[int]:
        sizes.append(len(reqs))
        return reqs

    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=100, max_wait_ms=2000)
    await b.start()
    try:
        t0 = asyncio.get_running_loop().time()
        assert await b.submit_many([1, 2, 3], complete=True) == [1, 2, 3]
        assert asyncio.get_running_loop().time() - t0 < 1.0  # not the 2 s wait
        lone = asyncio.ensure_future(b.submit(7))  # an HTTP request waiting for company
        await asyncio.sleep(0.05)
        assert await b.submit_many([8, 9], complete=True) == [8, 9]
        assert await lone == 7
        assert sizes == [3, 3]  # the lone request rode along with the complete group
    finally:
        await b.stop()


async def test_an_idle_batcher_dispatches_at_once_and_batches_what_queues_while_busy() -> None:
    """With no linger (the worker's HTTP setting) a lone request never waits for company;
    requests that arrive while the model is busy go together in the next batch (#22)."""
    sizes: list[int] = []
    busy, release = asyncio.Event(), asyncio.Event()

    async def fn(reqs: list[int]) -> list[int]:
        sizes.append(len(reqs))
        if reqs[0] == 0:  # the first batch holds the model until released
            busy.set()
            await release.wait()
        return reqs

    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=100, max_wait_ms=0)
    await b.start()
    try:
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(b.submit(0))
        await busy.wait()  # dispatched alone, at once
        queued = [asyncio.ensure_future(b.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.01)
        release.set()
        assert await first == 0 and [await q for q in queued] == [1, 2, 3, 4, 5]
        assert sizes == [1, 5]  # the five that came while busy went as one batch
        t0 = loop.time()
        assert await b.submit(9) == 9
        assert loop.time() - t0 < 0.05 and sizes[-1] == 1
    finally:
        await b.stop()


async def test_stopping_fails_a_group_split_over_batches_instead_of_hanging() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def fn(reqs: list[int]) -> list[int]:
        started.set()
        await release.wait()
        return reqs

    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=2, max_wait_ms=1)
    await b.start()
    group = asyncio.ensure_future(b.submit_many([1, 2, 3, 4, 5]))
    later = asyncio.ensure_future(b.submit(6))
    await started.wait()  # [1, 2] in flight, [3, 4, 5] carried, 6 queued
    await b.stop()
    for fut in (group, later):
        with pytest.raises(RuntimeError, match="stopped"):
            await asyncio.wait_for(fut, 1)


async def test_a_group_that_failed_is_not_computed_further() -> None:
    seen: list[list[int]] = []

    async def fn(reqs: list[int]) -> list[int]:
        seen.append(list(reqs))
        if 1 in reqs:
            raise ValueError("bad batch")
        return reqs

    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=2, max_wait_ms=1)
    await b.start()
    try:
        with pytest.raises(ValueError, match="bad batch"):
            await b.submit_many([1, 2, 3, 4, 5])
        assert await b.submit(6) == 6  # the batcher goes on with the next group
    finally:
        await b.stop()
    assert seen == [[1, 2], [6]]  # the failed group's rest [3, 4], [5] never ran


async def test_failing_batch_fails_only_its_requests() -> None:
    async def fn(reqs: list[int]) -> list[int]:
        if 13 in reqs:
            raise ValueError("bad batch")
        return reqs

    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=1, max_wait_ms=1)
    await b.start()
    try:
        ok, bad = await asyncio.gather(b.submit(1), b.submit(13), return_exceptions=True)
        assert ok == 1 and isinstance(bad, ValueError)
        assert await b.submit(2) == 2  # the loop survived
    finally:
        await b.stop()


def test_cache_versions_lru_and_snapshot(tmp_path: Path) -> None:
    cache = FaissEmbeddingCache(4, capacity=2, model_version="m1")
    v = np.array([11, 22, 33], dtype=np.uint64)
    e = np.eye(3, 4, dtype=np.float32)
    cache.put(["a", "b"], v[:2], e[:2])
    hit, out = cache.get(["a", "b"], np.array([11, 99], dtype=np.uint64))
    assert hit.tolist() == [True, False]  # a stale version is never used
    np.testing.assert_array_equal(out[0], e[0])
    cache.put(["c"], v[2:], e[2:])  # evicts the least recently used: b
    assert cache.get(["b"], v[1:2])[0].tolist() == [False]
    assert cache.evictions == 1
    cache.snapshot(tmp_path)
    warm = FaissEmbeddingCache(4, capacity=2, model_version="m1")
    assert warm.restore(tmp_path) == 2
    assert warm.get(["a", "c"], np.array([11, 33], dtype=np.uint64))[0].all()
    other = FaissEmbeddingCache(4, capacity=2, model_version="m2")
    assert other.restore(tmp_path) == 0  # another model's embeddings are discarded


def test_threshold_policy_blends_with_credibility_and_clamps() -> None:
    cfg = ThresholdConfig(k=3, credibility_n=50, min_ratio=0.8, max_ratio=4, upper=0.9)
    assert threshold_for(UserStats(), 0.2, cfg) == pytest.approx(0.2)
    noisy = UserStats()
    for s in [0.3, 0.5, 0.1, 0.4] * 50:
        noisy.add(s)
    t = threshold_for(noisy, 0.2, cfg)
    assert 0.2 < t <= 0.8  # a habitually high-scoring user gets a higher bar
    calm = UserStats()
    for _ in range(200):
        calm.add(0.001)
    assert threshold_for(calm, 0.2, cfg) == pytest.approx(0.16)  # floored at 0.8 x global
    # feedback applies after the band: an analyst's label moves even a floored bar
    assert threshold_for(UserStats(n=1000, mean=0.01, adj=-0.05), 0.2, cfg) == pytest.approx(0.06)
    assert threshold_for(UserStats(adj=-5), 0.2, cfg) == pytest.approx(cfg.lower)
    assert threshold_for(UserStats(adj=5), 0.2, cfg) == pytest.approx(cfg.upper)


def test_case_memory_nearest_and_dedup() -> None:
    mem = FraudCaseMemory(3, max_cases=2)
    mem.add(["x", "y"], np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32))
    assert mem.add(["x"], np.array([[1, 0, 0]], dtype=np.float32)) == 0
    (near,) = mem.nearest(np.array([[0.9, 0.1, 0]], dtype=np.float32), k=1)
    assert near[0][0] == "x" and near[0][1] > 0.9
    mem.add(["z"], np.array([[0, 0, 1]], dtype=np.float32))  # FIFO drops x
    assert mem.ids == ["y", "z"]


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_feedback_is_applied_once_per_transaction_and_corrections_undo(
    kind: str, stack, unique_name
) -> None:
    import redis.asyncio as aioredis

    from scoring.thresholds import InMemoryThresholdPolicy, RedisThresholdPolicy

    cfg = ThresholdConfig(key_prefix=unique_name("thr") + ":")
    client = aioredis.Redis.from_url(stack.redis_url) if kind == "redis" else None
    policy = RedisThresholdPolicy(client, 0.2, cfg) if client else InMemoryThresholdPolicy(0.2, cfg)
    try:
        base = float((await policy.thresholds(["u1"]))[0])
        lowered = await policy.feedback("u1", "fraud", "tx-1")
        assert lowered < base
        assert await policy.feedback("u1", "fraud", "tx-1") == pytest.approx(lowered)  # replay
        corrected = await policy.feedback("u1", "legit", "tx-1")  # undo fraud, apply legit
        assert corrected > base
        assert await policy.feedback("u1", "legit", "tx-2") > corrected  # another tx counts
    finally:
        if client is not None:
            await client.aclose()


@pytest.mark.integration
@pytest.mark.parametrize(
    "cluster_mode", [False, True, pytest.param("cluster", marks=pytest.mark.slow)]
)
async def test_redis_thresholds_follow_the_in_memory_policy(
    cluster_mode: bool | str, stack, unique_name, request: pytest.FixtureRequest
) -> None:
    """The batch scripts give the reference policy's thresholds, batch after batch, also
    after Redis lost its scripts (``SCRIPT FLUSH``, as after a restart) half-way."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    from scoring.thresholds import InMemoryThresholdPolicy, RedisThresholdPolicy

    cfg = ThresholdConfig(key_prefix=unique_name("thr") + ":", credibility_n=5)
    client: aioredis.Redis | RedisCluster = aioredis.Redis.from_url(stack.redis_url)
    if cluster_mode == "cluster":  # a real Redis Cluster (3 masters, 3 replicas)
        await client.aclose()
        client = RedisCluster.from_url(request.getfixturevalue("redis_cluster").url)
    redis_policy = RedisThresholdPolicy(client, 0.2, cfg, cluster_mode=bool(cluster_mode))
    reference = InMemoryThresholdPolicy(0.2, cfg)
    rng = np.random.default_rng(7)
    try:
        await redis_policy.feedback("u3", "legit", "tx-0")
        await reference.feedback("u3", "legit", "tx-0")
        for step in range(12):
            if step == 6:
                await client.script_flush()
            users = [f"u{i}" for i in rng.integers(0, 6, size=20)]  # repeats within a batch
            scores = rng.beta(1, 8, size=20)
            stats = await redis_policy.read(users)
            got = redis_policy.thresholds_for(users, stats)
            want = await reference.thresholds(users)
            np.testing.assert_allclose(got, want, rtol=1e-12)
            await redis_policy.update(users, scores, got, stats)
            await reference.update(users, scores, want)
        assert (await redis_policy.read(["u0"]))["u0"].n == reference.stats["u0"].n > 0
        ttl = await client.ttl(redis_policy.key("u0"))
        assert 0 < ttl <= cfg.ttl_s
        assert await redis_policy.read([]) == {}
    finally:
        await client.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("cluster_mode", [False, True])
async def test_a_global_policy_keeps_no_statistics_and_still_applies_feedback(
    cluster_mode: bool, stack, unique_name
) -> None:
    """Under a global policy (what training learns when per-user bars do not pay) nothing
    is written per event, and the analyst's adjustment still moves the card's bar."""
    import redis.asyncio as aioredis

    from scoring.thresholds import RedisThresholdPolicy

    cfg = ThresholdConfig(key_prefix=unique_name("thg") + ":", per_user=False)
    client = aioredis.Redis.from_url(stack.redis_url)
    policy = RedisThresholdPolicy(client, 0.2, cfg, cluster_mode=cluster_mode)
    try:
        users = ["a", "b", "a"]
        for _ in range(3):
            stats = await policy.read(users)
            bars = policy.thresholds_for(users, stats)
            np.testing.assert_allclose(bars, [0.2, 0.2, 0.2])
            await policy.update(users, np.array([0.01, 0.02, 0.03]), bars, stats)
        assert not await client.exists(policy.key("a"), policy.key("b"))
        lowered = await policy.feedback("a", "fraud", "tx-1")
        assert lowered < 0.2
        stats = await policy.read(["a", "b"])
        assert stats["a"].adj < 0 and stats["b"].adj == 0 and stats["a"].n == 0
        np.testing.assert_allclose(policy.thresholds_for(["a", "b"], stats), [lowered, 0.2])
        # the same keys with statistics kept: a per-user version writes them
        per_user = policy.for_version("", 0.2, {"per_user": True})
        stats = await per_user.read(["b"])
        await per_user.update(["b"], np.array([0.01]), per_user.thresholds_for(["b"], stats), stats)
        assert await client.exists(per_user.key("b")) == 1
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_a_batch_write_does_not_undo_feedback_given_meanwhile(stack, unique_name) -> None:
    """A batch reads a user's statistics, an analyst's label lands, then the batch writes:
    the label's adjustment must survive (each writer writes only its own fields)."""
    import redis.asyncio as aioredis

    from scoring.thresholds import RedisThresholdPolicy

    cfg = ThresholdConfig(key_prefix=unique_name("thr") + ":")
    client = aioredis.Redis.from_url(stack.redis_url)
    policy = RedisThresholdPolicy(client, 0.2, cfg)
    try:
        stats = await policy.read(["u1"])  # the batch's read
        before = policy.thresholds_for(["u1"], stats)
        lowered = await policy.feedback("u1", "fraud", "tx-1")  # meanwhile
        await policy.update(["u1"], np.array([0.01]), before, stats)  # the batch's write
        after = await policy.read(["u1"])
        assert after["u1"].adj < 0 and after["u1"].n == 1
        assert float((await policy.thresholds(["u1"]))[0]) < float(before[0])
        assert lowered < float(before[0])
    finally:
        await client.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_score_statistics_belong_to_a_version_and_adjustments_to_the_card(
    stack, unique_name, backend: str
) -> None:
    """A new model version is not judged against the old one's scores, while an analyst's
    adjustment of a card holds for every version (docs/deploy.md)."""
    import redis.asyncio as aioredis

    from scoring.thresholds import InMemoryThresholdPolicy, RedisThresholdPolicy, ThresholdPolicy

    cfg = ThresholdConfig(key_prefix=unique_name("thv") + ":", credibility_n=2)
    client = aioredis.Redis.from_url(stack.redis_url)
    v1: ThresholdPolicy = (
        RedisThresholdPolicy(client, 0.2, cfg, version="v1")
        if backend == "redis"
        else InMemoryThresholdPolicy(0.2, cfg, "v1")
    )
    v2 = v1.for_version("v2", 0.1)
    try:
        users = ["a", "b"]
        for _ in range(5):  # v1 learns that these cards score ~0.05
            stats = await v1.read(users)
            await v1.update(users, np.array([0.05, 0.05]), v1.thresholds_for(users, stats), stats)
        learned = (await v1.read(users))["a"]
        assert learned.n == 5
        fresh = (await v2.read(users))["a"]
        assert fresh.n == 0  # v2 starts from its own global threshold
        np.testing.assert_allclose(await v2.thresholds(users), [0.1, 0.1])
        await v2.feedback("a", "fraud", "tx-1")  # a confirmed fraud lowers card a's bar
        assert (await v1.read(["a"]))["a"].adj == (await v2.read(["a"]))["a"].adj < 0
        assert float((await v1.thresholds(["a"]))[0]) < float((await v1.thresholds(["b"]))[0])
        assert (await v1.read(["a"]))["a"].n == 5  # the label left v1's statistics alone
        # a version's learned parameters are its own; the operator's settings stay
        v3 = v2.for_version("v3", 0.1, {"per_user": False})
        assert v3.config.per_user is False and v3.config.key_prefix == cfg.key_prefix
        assert v3.for_version("v4", 0.1).config.per_user is True
    finally:
        await client.aclose()
