"""The worker on a real Redis Cluster (3 masters, 3 replicas): faults on the cluster.

Each test gets its own cluster, because it kills nodes. Counts are printed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from streams.devtools.embedded_cluster import EmbeddedRedisCluster, start_cluster
from tests.worker_helpers import Worker, WorkerEnv, events_for, steady_stream, tx_id_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def fresh_cluster() -> Iterator[EmbeddedRedisCluster]:
    with start_cluster(3) as cluster:
        yield cluster


def _cluster_env(cluster: EmbeddedRedisCluster, **extra: str) -> dict[str, str]:
    return {"RISKSTREAM_REDIS__URL": cluster.url, "RISKSTREAM_REDIS__CLUSTER": "true", **extra}


def _ids(events: list[tuple[str, bytes]]) -> set[str]:
    return {json.loads(v)["transaction_id"] for _, v in events}


def _keys_per_master(cluster: EmbeddedRedisCluster, prefix: str) -> list[int]:
    """Keys under ``prefix`` on each live master (a promoted replica included)."""
    out = []
    for node in cluster.nodes:
        if not node.alive():
            continue
        with redis.Redis(host="127.0.0.1", port=node.port) as c:
            if c.info("replication")["role"] == "master":
                out.append(sum(1 for _ in c.scan_iter(f"{prefix}*", count=1000)))
    return out


def test_a_master_killed_mid_stream_loses_nothing(
    wenv: WorkerEnv, fresh_cluster: EmbeddedRedisCluster
) -> None:
    events = steady_stream(41)
    assert len(events) >= 20_000
    ids = _ids(events)
    worker = wenv.start(extra_env=_cluster_env(fresh_cluster))
    try:
        status, body = worker.get("/readyz")
        assert status == 200 and body["redis"]
        wenv.produce(events[: len(events) // 2])
        wenv.read("scores", expected=500, key_of=tx_id_of, timeout_s=60)
        victim = fresh_cluster.masters[1]
        slots_before = fresh_cluster.master_of_slot(8000).port
        fresh_cluster.kill(victim)
        wenv.produce(events[len(events) // 2 :])
        scores = wenv.read("scores", expected=len(ids), key_of=tx_id_of, timeout_s=240)
        scored = {json.loads(m.value())["transaction_id"] for m in scores}
        promoted = fresh_cluster.master_of_slot(8000).port
        spread = _keys_per_master(fresh_cluster, f"{wenv.name}:")
        print(
            f"\n[cluster-master-killed] in={len(ids)} scored={len(scored & ids)} "
            f"lost={len(ids - scored)} duplicates_delivered={len(scores) - len(scored)} "
            f"slot 8000: {slots_before} -> {promoted}"
        )
        assert ids <= scored, f"lost {len(ids - scored)}"
        assert promoted != slots_before == victim.port  # the replica took the slots over
        assert worker.alive(), "the worker died instead of riding through the failover"
        assert worker.get("/readyz")[0] == 200
        # every live master holds a share of the card holders' keys
        assert len(spread) == 3 and all(n > 0 for n in spread)
        assert not wenv.read("dlq", timeout_s=2)
    finally:
        worker.stop()


def test_a_whole_shard_down_stops_the_worker_cleanly_and_a_restart_resumes(
    wenv: WorkerEnv, fresh_cluster: EmbeddedRedisCluster
) -> None:
    events = events_for(n_users=300, days=8, seed=43)
    ids = _ids(events)
    env = _cluster_env(fresh_cluster, RISKSTREAM_REDIS__RETRY_ATTEMPTS="3")
    worker = wenv.start(extra_env=env)
    master, replica = fresh_cluster.masters[2], fresh_cluster.replicas[2]
    try:
        wenv.produce(events[: len(events) // 3])
        wenv.read("scores", expected=200, key_of=tx_id_of, timeout_s=60)
        fresh_cluster.kill(replica)
        fresh_cluster.kill(master)  # a third of the slots has nobody left
        wenv.produce(events[len(events) // 3 :])
        deadline = time.monotonic() + 90
        while worker.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        code = worker.stop()
        assert code == 70, f"exit code {code}"  # EX_SOFTWARE: the orchestrator restarts it
        fresh_cluster.restart(master)
        fresh_cluster.restart(replica)
        fresh_cluster.wait_healthy()
        worker = wenv.start(extra_env=env)
        scores = wenv.read("scores", expected=len(ids), key_of=tx_id_of, timeout_s=240)
        scored = {json.loads(m.value())["transaction_id"] for m in scores}
        print(
            f"\n[cluster-shard-down] in={len(ids)} scored={len(scored & ids)} "
            f"lost={len(ids - scored)} exit_code={code}"
        )
        assert ids <= scored, f"lost {len(ids - scored)}"
    finally:
        worker.stop()


async def test_readiness_follows_the_cluster_state(fresh_cluster: EmbeddedRedisCluster) -> None:
    """/readyz's Redis check: PING and ``cluster_state:ok``; a shard with no live node
    turns it red although the other nodes still answer PING."""
    from redis.asyncio.cluster import RedisCluster

    from streams.service import redis_ready

    client = RedisCluster.from_url(fresh_cluster.url)
    try:
        assert await redis_ready(client)
        fresh_cluster.kill(fresh_cluster.replicas[0])
        fresh_cluster.kill(fresh_cluster.masters[0])
        deadline = time.monotonic() + 30
        ready = True
        while ready and time.monotonic() < deadline:
            try:
                ready = await redis_ready(client)
            except (redis.RedisError, OSError):
                ready = False  # what /readyz reports for an error too
            await asyncio.sleep(0.2)
        assert not ready
    finally:
        await client.aclose()


def _cache_counts(worker: Worker) -> tuple[float, float]:
    """(hits, misses) of the worker's embedding cache so far, from its /metrics."""
    hits = misses = 0.0
    for line in worker.get_text("/metrics").splitlines():
        if line.startswith("riskstream_embedding_cache_total{"):
            value = float(line.rsplit(" ", 1)[1])
            if 'outcome="hit"' in line:
                hits += value
            elif 'outcome="miss"' in line:
                misses += value
    return hits, misses


def test_three_workers_twelve_partitions_on_the_cluster(
    stack, redis_cluster: EmbeddedRedisCluster, tmp_path
) -> None:
    """Three workers in one group over 12 partitions, state on the cluster; one worker
    leaves mid-stream (a rebalance) and comes back. Lost 0; each card's first decisions
    arrive in the card's event order with the whole earlier history seen (one worker at a
    time scored the card: two at once would have missed each other's appends)."""
    env = WorkerEnv(stack, tmp_path, f"mw{uuid.uuid4().hex[:8]}")
    stack.create_topics(list(env.topics.values()), partitions=12)
    events = steady_stream(47)
    assert len(events) >= 20_000
    ids = _ids(events)
    extra = {**_cluster_env(redis_cluster), "RISKSTREAM_TOPICS__PARTITIONS": "12"}
    workers = [env.start(extra_env=extra) for _ in range(3)]
    try:
        third = len(events) // 3
        env.produce(events[:third])
        env.read("scores", expected=third // 2, key_of=tx_id_of, timeout_s=120)
        assert workers[2].stop() == 0  # leaves the group: its partitions move
        before = [_cache_counts(w) for w in workers[:2]]
        env.produce(events[third : 2 * third])
        env.read("scores", expected=2 * third - 500, key_of=tx_id_of, timeout_s=180)
        after = [_cache_counts(w) for w in workers[:2]]
        workers[2] = env.start(extra_env=extra)  # rejoins: another rebalance
        env.produce(events[2 * third :])
        scores = env.read("scores", expected=len(ids), key_of=tx_id_of, timeout_s=240)
    finally:
        codes = [w.stop() for w in workers]
    records = [json.loads(m.value()) for m in scores]
    scored = {r["transaction_id"] for r in records}
    hits = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    misses = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    order: dict[str, list[str]] = {}
    for _, value in events:  # produced oldest first per card
        tx = json.loads(value)
        order.setdefault(tx["user_id"], []).append(tx["transaction_id"])
    first: dict[str, dict] = {}
    for r in records:
        first.setdefault(r["transaction_id"], r)
    out_of_order = 0
    for txs in order.values():
        lengths = [first[t]["sequence_length"] for t in txs if t in first]
        out_of_order += sum(1 for k, n in enumerate(lengths) if n != min(k, 64))
    print(
        f"\n[three-workers-cluster] in={len(ids)} scored={len(scored & ids)} "
        f"lost={len(ids - scored)} duplicates_delivered={len(records) - len(scored)} "
        f"cache_hit_rate_after_rebalance={hits / max(1.0, hits + misses):.3f} "
        f"(hits={hits:.0f}, misses={misses:.0f}) decisions_missing_history={out_of_order}"
    )
    assert ids <= scored, f"lost {len(ids - scored)}"
    assert codes == [0, 0, 0]
    assert out_of_order == 0


def test_a_worker_authenticates_to_a_cluster_that_requires_a_password(wenv: WorkerEnv) -> None:
    """AUTH as for one node: credentials in the URL, or ``redis.password`` beside a bare
    URL; a wrong password keeps /readyz red (Redis false) instead of scoring."""
    with start_cluster(3, password="s3cret-pw") as cluster:
        events = events_for(n_users=60, days=5, seed=45)
        ids = _ids(events)
        worker = wenv.start(extra_env=_cluster_env(cluster))  # redis://:pw@host:port/0
        try:
            wenv.produce(events)
            scores = wenv.read("scores", expected=len(ids), key_of=tx_id_of, timeout_s=120)
            assert {tx_id_of(m) for m in scores} >= ids
        finally:
            assert worker.stop() == 0
        bare = cluster.url.replace(":s3cret-pw@", "")
        for password, ready in (("s3cret-pw", True), ("wrong", False)):
            env = {**_cluster_env(cluster), "RISKSTREAM_REDIS__URL": bare}
            worker = wenv.start(
                wait_ready=False, extra_env={**env, "RISKSTREAM_REDIS__PASSWORD": password}
            )
            try:
                deadline, body = time.monotonic() + 60, {}
                while time.monotonic() < deadline:
                    try:
                        status, body = worker.get("/readyz")
                    except OSError:
                        status = 0
                    if status == 200 or (status == 503 and "redis" in body and body.get("model")):
                        break
                    time.sleep(0.2)
                assert body.get("redis") is ready, body
            finally:
                worker.stop()
