"""One Kafka hop through the embedded broker as its topic grows.

    python -m benchmarks.embedded_broker_growth [--messages 60000] [--rate 1000]

Starts a fresh embedded stack, produces messages at a fixed rate to one topic and reads
them back in the same process, and reports the hop's latency per window of messages. The
embedded Tansu broker keeps topics in memory and its cost per request grows with what it
holds, so any latency measured on it late in a long run (the demo's live phase, after its
history) is partly this growth and not the worker (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import threading

import numpy as np

from benchmarks.bench_e2e import count_until, produce_rows
from benchmarks.common import assigned_reader, report
from streams.devtools.embedded import running_stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=60_000)
    ap.add_argument("--rate", type=float, default=1000.0, help="Messages per second.")
    ap.add_argument("--windows", type=int, default=6, help="Windows reported.")
    ap.add_argument("--value-bytes", type=int, default=600)
    args = ap.parse_args()
    n, pad = args.messages, "x" * args.value_bytes
    rows = [(str(i), json.dumps({"transaction_id": str(i), "pad": pad}).encode()) for i in range(n)]
    sent: dict[str, float] = {}
    with running_stack(["growth"], 3) as stack:
        reader = assigned_reader(stack.bootstrap_servers, "growth")
        producer = threading.Thread(  # read while producing, as bench_e2e's paced phase does
            target=lambda: sent.update(
                produce_rows(stack.bootstrap_servers, "growth", rows, rate=args.rate)
            )
        )
        producer.start()
        _, seen = count_until(reader, n, n / args.rate + 120, key="transaction_id")
        producer.join()
        reader.close()
    size = n // args.windows
    windows = []
    for w in range(args.windows):
        ids = [str(i) for i in range(w * size, (w + 1) * size)]
        lat = np.array([(seen[t] - sent[t]) * 1000 for t in ids if t in seen and t in sent])
        windows.append(
            {
                "messages_in_topic": [w * size, (w + 1) * size],
                "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
                "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
                "received": int(lat.size),
            }
        )
    report("embedded_broker_growth", rate=args.rate, messages=n, windows=windows)


if __name__ == "__main__":
    main()
