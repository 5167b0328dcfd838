"""Script calls on a real Redis Cluster: one call per node per batch, and a stale slot map
rerouted without running any entity's update twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import key_slot

from features.events import RECORD_DTYPE
from scoring.state.entity_store import InMemoryEntityStore, RedisEntityStore
from scoring.state.sequence_config import SequenceStoreConfig
from scoring.state.sequence_store import InMemorySequenceStore, RedisSequenceStore
from scoring.thresholds import RedisThresholdPolicy

pytestmark = pytest.mark.slow

T0 = 1_767_225_600_000  # 2026-01-01


def records(n: int, seed: int, merchants: int = 40, devices: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=RECORD_DTYPE)
    out["tx"] = rng.integers(1, 2**62, n).astype(np.uint64)
    out["ts"] = T0 + seed * 60_000 + np.arange(n) * 1000
    out["amount"] = np.round(rng.lognormal(3, 1, n), 2)
    out["merchant"] = rng.integers(1, merchants + 1, n)
    out["device"] = rng.integers(1, devices + 1, n)
    out["lat"] = out["lon"] = np.nan
    return out


def evalsha_calls(cluster: Any) -> int:
    """EVALSHA calls served so far, summed over the masters."""
    total = 0
    for master in cluster.masters:
        stats = redis.Redis(port=master.port).info("commandstats")
        total += int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return total


@pytest.fixture
async def client(redis_cluster: Any) -> AsyncIterator[RedisCluster]:
    c = RedisCluster.from_url(redis_cluster.url)
    await c.initialize()
    yield c
    await c.aclose()


async def test_a_batch_makes_one_script_call_per_node(
    redis_cluster: Any, client: RedisCluster, unique_name: Any
) -> None:
    users = [f"u{i}" for i in range(150)]
    recs = records(len(users), seed=1)
    store = RedisSequenceStore(
        client, SequenceStoreConfig(key_prefix=unique_name("cc") + ":", cluster_mode=True)
    )
    entities = RedisEntityStore(client, unique_name("ce") + ":", cluster_mode=True)
    policy = RedisThresholdPolicy(client, 0.2, cluster_mode=True, version=unique_name("v"))
    masters = len(redis_cluster.masters)
    cards = np.arange(1, len(users) + 1, dtype=np.uint64)
    write = np.ones(len(users), bool)
    # a first batch loads the scripts on every node (NOSCRIPT replies count as calls)
    await store.append_and_read(users, records(len(users), seed=0))
    await entities.observe(records(len(users), seed=0), cards, write)
    await policy.read(users)

    before = evalsha_calls(redis_cluster)
    prior = await store.append_and_read(users, recs)
    after_append = evalsha_calls(redis_cluster)
    stats = await policy.read(users)
    after_read = evalsha_calls(redis_cluster)
    await entities.observe(recs, cards, write)
    after_observe = evalsha_calls(redis_cluster)

    assert after_append - before <= masters  # was one call per card (150)
    assert after_read - after_append <= masters
    assert after_observe - after_read <= masters  # was one per merchant and device (70)
    assert all(len(prior[u]) == 1 for u in users)  # the first batch's event, no more
    assert set(stats) == set(users)
    again = await store.read_batch(users)
    assert all(int(again[u]["tx"][-1]) == int(r["tx"]) for u, r in zip(users, recs, strict=True))


def _make_stale(client: RedisCluster, keys: list[str]) -> int:
    """Point every other key's slot at another master, as a map from before a reshard
    would; returns how many slots now route wrongly."""
    nodes = client.nodes_manager
    masters = {n[0].name: n[0] for n in nodes.slots_cache.values()}
    stale = 0
    for key in keys[1::2]:
        slot = key_slot(key.encode())
        right = nodes.slots_cache[slot][0]
        wrong = next(m for name, m in masters.items() if name != right.name)
        if nodes.slots_cache[slot][0] is right:
            nodes.slots_cache[slot] = [wrong]
            stale += 1
    return stale


async def test_a_stale_slot_map_is_rerouted_and_no_update_runs_twice(
    client: RedisCluster, unique_name: Any
) -> None:
    """The entity script is not idempotent (it adds to counters). Calls routed to a node
    that does not serve some of their keys must fail before writing, then be resent:
    every statistic equals the in-memory reference's, batch after batch."""
    reference = InMemoryEntityStore()
    store = RedisEntityStore(client, unique_name("se") + ":", cluster_mode=True)
    seq_ref = InMemorySequenceStore()
    seq = RedisSequenceStore(
        client, SequenceStoreConfig(key_prefix=unique_name("ss") + ":", cluster_mode=True)
    )
    stale = 0
    for step in range(4):
        recs = records(120, seed=10 + step, merchants=25, devices=20)
        cards = np.random.default_rng(step).integers(1, 50, 120).astype(np.uint64)
        users = [f"c{int(c)}" for c in cards]
        write = np.ones(120, bool)
        keys = [store.key(k, int(e)) for k in ("merchant", "device") for e in range(1, 26)]
        stale += _make_stale(client, keys)
        stale += _make_stale(client, [seq.key(u) for u in dict.fromkeys(users)])
        got = await store.observe(recs, cards, write)
        want = await reference.observe(recs, cards, write)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        prior, prior_ref = (
            await seq.append_and_read(users, recs),
            await seq_ref.append_and_read(users, recs),
        )
        for u in prior_ref:
            assert prior[u].tobytes() == prior_ref[u].tobytes(), (step, u)
    assert stale > 20  # the map really was wrong for many calls


async def test_a_dead_shard_ends_the_round_at_its_first_item(unique_name: Any) -> None:
    """With a shard's master and replica down, a batch's items for it are not resent one
    by one to the end: the first that fails leaves the rest owed for the caller's retry.
    Before, every item was tried in turn, each after its own connection attempts, so a
    batch of 512 took longer to give up than the orchestrator waits (CI: exit -9, not 70).
    """
    import hashlib

    from scoring.state.cluster_calls import ScriptPair, cross_slot_source, per_node
    from streams.devtools.embedded_cluster import start_cluster

    source = "return #KEYS"
    cross = cross_slot_source(source, check_keys=False)
    pair = ScriptPair(
        hashlib.sha1(source.encode()).hexdigest(),
        source,
        hashlib.sha1(cross.encode()).hexdigest(),
        cross,
    )
    with start_cluster(3) as cluster:
        c = RedisCluster.from_url(cluster.url, socket_connect_timeout=0.5)
        await c.initialize()
        try:
            routing = [f"{unique_name('dead')}:{{u{i}}}" for i in range(120)]
            dead = cluster.masters[2]
            on_dead = [
                i
                for i, k in enumerate(routing)
                if cluster.master_of_slot(key_slot(k.encode())) == dead
            ]
            assert len(on_dead) > 10
            cluster.kill(cluster.replicas[2])
            cluster.kill(dead)
            built: list[list[int]] = []

            def build(idx: list[int]) -> tuple[list[str], list[Any]]:
                built.append(idx)
                return [routing[i] for i in idx], []

            outcome = await per_node(c, pair, routing, list(range(len(routing))), build)
            singles = [b for b in built if len(b) == 1]
            assert len(singles) == 1  # one item tried alone, not all of them
            assert sorted(outcome.pending) == on_dead
            answered = sorted(i for idx, _ in outcome.replies for i in idx)
            assert answered == [i for i in range(len(routing)) if i not in on_dead]
        finally:
            await c.aclose()
