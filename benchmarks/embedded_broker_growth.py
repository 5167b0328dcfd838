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
import threading
import time

import numpy as np
from confluent_kafka import Producer

from benchmarks.common import assigned_reader, report
from streams.devtools.embedded import running_stack
from streams.kafka.consume import ready_messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=60_000)
    ap.add_argument("--rate", type=float, default=1000.0, help="Messages per second.")
    ap.add_argument("--windows", type=int, default=6, help="Windows reported.")
    ap.add_argument("--value-bytes", type=int, default=600)
    args = ap.parse_args()
    n, value = args.messages, b"x" * args.value_bytes
    with running_stack(["growth"], 3) as stack:
        reader = assigned_reader(stack.bootstrap_servers, "growth")
        producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "linger.ms": 2})
        sent: dict[bytes, float] = {}
        seen: dict[bytes, float] = {}

        def read() -> None:
            deadline = time.monotonic() + n / args.rate + 120
            while len(seen) < n and time.monotonic() < deadline:
                for m in ready_messages(reader, 500, 0.1):
                    key = m.key()
                    if not m.error() and key is not None:
                        seen[key] = time.monotonic()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        start = time.monotonic()
        for i in range(n):
            delay = start + i / args.rate - time.monotonic()
            if delay > 0.001:
                time.sleep(delay)
            key = str(i).encode()
            producer.produce("growth", key=key, value=value)
            producer.poll(0)
            sent[key] = time.monotonic()
        producer.flush(30)
        thread.join()
        reader.close()
    size = n // args.windows
    windows = []
    for w in range(args.windows):
        keys = [str(i).encode() for i in range(w * size, (w + 1) * size)]
        lat = np.array([(seen[k] - sent[k]) * 1000 for k in keys if k in seen])
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
