"""Sequence store append+read round trips and featurization, on the embedded Redis.

python benchmarks/bench_sequence_store.py [--users 5000] [--days 30] [--batch 256]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np
import redis.asyncio as aioredis

from benchmarks.common import report
from features.events import records_from_table, sort_key
from features.featurize import (
    FeatureSpec,
    featurize_windows,
)
from features.serving_windows import windows_for_batch
from scoring.state.sequence_store import RedisSequenceStore
from streams.devtools.embedded import running_stack
from streams.devtools.simulator import SimulatorConfig, simulate


async def _store_bench(url: str, rec: np.ndarray, users: list[str], batch: int) -> dict:
    client = aioredis.Redis.from_url(url)
    store = RedisSequenceStore(client)
    n = rec.size
    spec = FeatureSpec.identity()
    t_store = t_feat = 0.0
    seqs = steps = 0
    for s in range(0, n, batch):
        b_rec, b_users = rec[s : s + batch], users[s : s + batch]
        t0 = time.perf_counter()
        prior = await store.append_and_read(b_users, b_rec)
        t1 = time.perf_counter()
        win = windows_for_batch(prior, b_users, b_rec, spec)
        featurize_windows(win, spec)
        t2 = time.perf_counter()
        t_store += t1 - t0
        t_feat += t2 - t1
        seqs += b_rec.size
        steps += int((win.hist_len + 1).sum())
    await client.aclose()
    return {
        "events": n,
        "append_read_events_per_s": round(n / t_store),
        "featurize_sequences_per_s": round(seqs / t_feat),
        "featurize_steps_per_s": round(steps / t_feat),
        "mean_history": round(steps / seqs - 1, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    table = simulate(SimulatorConfig(users=args.users, days=args.days, seed=1))
    rec = records_from_table(table)
    users = np.array(table.column("user_id").to_pylist())
    order = sort_key(rec)
    rec, user_list = rec[order], users[order].tolist()
    with running_stack() as stack:
        figures = asyncio.run(_store_bench(stack.redis_url, rec, user_list, args.batch))
    report("sequence_store+featurize", batch=args.batch, **figures)


if __name__ == "__main__":
    main()
