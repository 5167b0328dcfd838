"""Entity profiles on the embedded Redis: server time per event and memory per entity.

Streams simulated transactions (oldest first, batches as the worker sends them) through
``RedisEntityStore.observe`` and reports, from Redis' own ``INFO``:

* Redis server µs per event (``commandstats`` of the observe script, and the server's CPU
  from ``INFO cpu``), the commands the script ran per event, and the client-side events/s
  of the round trips;
* memory per merchant and per device with their real, bounded state, extrapolated to
  1M entities (``used_memory`` before and after, divided by the entities created).

    python -m benchmarks.bench_entity_store --users 5000 --days 30
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np
import redis.asyncio as aioredis

from benchmarks.common import report
from features.events import hash_ids, records_from_table, sort_key
from scoring.state.entity_store import RedisEntityStore
from streams.devtools.embedded import running_stack
from streams.devtools.simulator import SimulatorConfig, simulate


async def _bench(url: str, rec: np.ndarray, cards: np.ndarray, batch: int) -> dict[str, object]:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    await client.config_resetstat()
    mem0 = int((await client.info("memory"))["used_memory"])
    cpu0 = await client.info("cpu")
    store = RedisEntityStore(client, "bench:")
    write = np.ones(batch, dtype=bool)
    t = 0.0
    for s in range(0, rec.size, batch):
        part = rec[s : s + batch]
        t0 = time.perf_counter()
        await store.observe(part, cards[s : s + batch], write[: part.size])
        t += time.perf_counter() - t0
    mem1 = int((await client.info("memory"))["used_memory"])
    cpu1 = await client.info("cpu")
    stats = await client.info("commandstats")
    cpu_s = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_user", "used_cpu_sys"))
    calls = {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name != "cmdstat_evalsha" and int(v["calls"]) >= rec.size // 100
    }
    script = stats.get("cmdstat_evalsha", {})
    merchants = int(np.unique(rec["merchant"][rec["merchant"] != 0]).size)
    devices = int(np.unique(rec["device"][rec["device"] != 0]).size)
    merchant_keys = device_keys = 0
    mem_merchant = mem_device = 0
    async for key in client.scan_iter("bench:ent:*", count=1000):
        used = int(await client.memory_usage(key) or 0)
        if b"{m:" in key:
            merchant_keys += 1
            mem_merchant += used
        else:
            device_keys += 1
            mem_device += used
    await client.aclose()
    return {
        "events": int(rec.size),
        "merchants": merchants,
        "devices": devices,
        "client_events_per_s": round(rec.size / t),
        "redis_us_per_event": round(float(script.get("usec", 0)) / rec.size, 2),
        # the server process' CPU, everything included (the script, I/O, the event loop)
        "redis_cpu_us_per_event": round(cpu_s * 1e6 / rec.size, 2),
        # the commands the scripts ran, per event
        "commands_per_event": {k: round(v / rec.size, 2) for k, v in sorted(calls.items())},
        "used_memory_delta_mb": round((mem1 - mem0) / 2**20, 1),
        "bytes_per_merchant": round(mem_merchant / max(merchants, 1)),
        "bytes_per_device": round(mem_device / max(devices, 1)),
        "gib_per_1m_merchants": round(mem_merchant / max(merchants, 1) * 1e6 / 2**30, 2),
        "gib_per_1m_devices": round(mem_device / max(devices, 1) * 1e6 / 2**30, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    table = simulate(SimulatorConfig(users=args.users, days=args.days, seed=1))
    rec = records_from_table(table)
    cards = hash_ids(table.column("user_id").to_pylist())
    order = sort_key(rec)
    with running_stack() as stack:
        figures = asyncio.run(_bench(stack.redis_url, rec[order], cards[order], args.batch))
    report("entity_store", batch=args.batch, **figures)


if __name__ == "__main__":
    main()
