"""The sequence store on one Redis versus a Redis Cluster: CPU per event on each side.

    python -m benchmarks.bench_cluster_store [--batches 150] [--batch 256] [--rounds 2]

The same batches of appends (``append_and_read``, ``--batch`` events over 20,000 card
holders) go to one embedded valkey, to one valkey with a replica (the like-for-like
control: every cluster master feeds a replica too), and to an embedded cluster of 3
masters with one replica each, alternating, in one run. Reported per event: the client's
CPU (this process: redis-py packing and parsing, the cluster pipeline's routing) and the
servers' CPU (masters and replicas apart). It isolates what the cluster costs per script
call, which bench_e2e's cluster phase shows for the whole worker.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from benchmarks.common import redis_cpu_seconds, replicate, report
from features.events import RECORD_DTYPE
from scoring.state.redis_retry import RedisClient
from scoring.state.sequence_config import SequenceStoreConfig
from scoring.state.sequence_store import RedisSequenceStore
from streams.devtools.embedded import _start_redis
from streams.devtools.embedded_cluster import PRODUCTION_NODE_TIMEOUT_MS, start_cluster

T0 = 1_767_225_600_000


async def _drive(
    client: RedisClient, cluster_mode: bool, prefix: str, batches: int, size: int
) -> float:
    """Client CPU seconds spent on ``batches`` appends."""
    store = RedisSequenceStore(
        client, SequenceStoreConfig(key_prefix=prefix, cluster_mode=cluster_mode)
    )
    rng = np.random.default_rng(0)
    start = time.process_time()
    for b in range(batches):
        users = [f"u{i}" for i in rng.integers(0, 20_000, size)]
        recs = np.zeros(size, dtype=RECORD_DTYPE)
        recs["tx"] = rng.integers(1, 2**62, size).astype(np.uint64)
        recs["ts"] = T0 + b * 1000
        await store.append_and_read(users, recs)
    return time.process_time() - start


async def _round(
    args: argparse.Namespace, n: int, single_port: int, cluster: Any
) -> dict[str, float]:
    events = args.batches * args.batch
    out: dict[str, float] = {}
    client: RedisClient = aioredis.Redis(port=single_port)
    single_at = cluster["single_port"]
    server0 = redis_cpu_seconds(single_at)
    used = await _drive(client, False, f"s{n}:", args.batches, args.batch)
    out["single_client_us"] = used / events * 1e6
    out["single_redis_us"] = (redis_cpu_seconds(single_at) - server0) / events * 1e6
    await client.aclose()
    primary, replica = cluster["replicated"]
    client = aioredis.Redis(port=primary.port)
    p0, q0 = redis_cpu_seconds(primary.port), redis_cpu_seconds(replica.port)
    used = await _drive(client, False, f"r{n}:", args.batches, args.batch)
    out["replicated_client_us"] = used / events * 1e6
    out["replicated_master_us"] = (redis_cpu_seconds(primary.port) - p0) / events * 1e6
    out["replicated_replica_us"] = (redis_cpu_seconds(replica.port) - q0) / events * 1e6
    await client.aclose()
    emb = cluster["cluster"]
    masters, replicas = [m.port for m in emb.masters], [r.port for r in emb.replicas]
    m0, r0 = sum(map(redis_cpu_seconds, masters)), sum(map(redis_cpu_seconds, replicas))
    client = RedisCluster.from_url(emb.url)
    used = await _drive(client, True, f"c{n}:", args.batches, args.batch)
    out["cluster_client_us"] = used / events * 1e6
    out["cluster_masters_us"] = (sum(map(redis_cpu_seconds, masters)) - m0) / events * 1e6
    out["cluster_replicas_us"] = (sum(map(redis_cpu_seconds, replicas)) - r0) / events * 1e6
    await client.aclose()
    return {k: round(v, 1) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=150)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    single = _start_redis(Path(tempfile.mkdtemp(prefix="bench-cluster-")))
    primary = _start_redis(Path(tempfile.mkdtemp(prefix="bench-cluster-p-")))
    replica = _start_redis(Path(tempfile.mkdtemp(prefix="bench-cluster-r-")))
    try:
        replicate(primary.port, replica.port)
        with start_cluster(3, node_timeout_ms=PRODUCTION_NODE_TIMEOUT_MS) as emb:
            handles = {"single_port": single.port, "cluster": emb, "replicated": (primary, replica)}
            rounds = [
                asyncio.run(_round(args, n, single.port, handles)) for n in range(args.rounds)
            ]
    finally:
        for server in (single, primary, replica):
            server.stop()
    med = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}
    cluster_servers = med["cluster_masters_us"] + med["cluster_replicas_us"]
    replicated_servers = med["replicated_master_us"] + med["replicated_replica_us"]
    report(
        "cluster_store",
        batches=args.batches,
        batch=args.batch,
        rounds=rounds,
        median_us_per_event=med,
        ratio_cluster_masters_over_single=round(
            med["cluster_masters_us"] / med["single_redis_us"], 2
        ),
        ratio_cluster_servers_over_replicated_single=round(cluster_servers / replicated_servers, 2),
        ratio_cluster_masters_over_replicated_master=round(
            med["cluster_masters_us"] / med["replicated_master_us"], 2
        ),
        ratio_cluster_client_over_single=round(
            med["cluster_client_us"] / med["single_client_us"], 2
        ),
    )


if __name__ == "__main__":
    main()
