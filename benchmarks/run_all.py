"""Run every benchmark in sequence (``make bench``); each prints JSON lines.

The figures in docs/BENCHMARKS.md come from these scripts. Takes ~5 minutes on 2 cores.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    ["benchmarks.bench_simulator"],
    ["benchmarks.bench_sequence_store", "--users", "3000", "--days", "30"],
    ["benchmarks.bench_export_matrix"],
    ["benchmarks.bench_scoring"],
    ["benchmarks.bench_e2e", "--events", "10000", "--rates", "200,500", "--seconds", "10"],
)


def main() -> int:
    failed = 0
    for args in BENCHMARKS:
        print(f"== {args[0]}", flush=True)
        failed += subprocess.run([sys.executable, "-m", *args], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
