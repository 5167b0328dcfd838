"""Simulator speed: ≥ 1M labelled transactions in ≤ 2 minutes is the target.

python -m benchmarks.bench_simulator [--users 10000] [--days 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import report
from features.labelled_files import write_table
from streams.devtools.simulator import SimulatorConfig, simulate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=60)
    args = ap.parse_args()
    t0 = time.perf_counter()
    table = simulate(SimulatorConfig(users=args.users, days=args.days, seed=1))
    t1 = time.perf_counter()
    write_table(table, Path(tempfile.mkdtemp()) / "tx.parquet")
    t2 = time.perf_counter()
    report(
        "simulator",
        transactions=table.num_rows,
        simulate_s=round(t1 - t0, 2),
        write_parquet_s=round(t2 - t1, 2),
        transactions_per_s=round(table.num_rows / (t2 - t0)),
    )


if __name__ == "__main__":
    main()
