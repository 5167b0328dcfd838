"""The broker path alone: consume from one topic, produce to another, flush per batch.

    python -m benchmarks.kafka_relay BOOTSTRAP IN_TOPIC OUT_TOPIC

Run by ``bench_e2e`` as its own process, like the worker it stands in for, so the
relay does not compete for the GIL with the benchmark's producer and reader threads.
It reads and flushes the way the worker does (first message as soon as it arrives, then
what is already fetched; one flush per batch), with no Faust and no scoring: the latency
it adds is the floor that no worker on this broker can go below.
"""

from __future__ import annotations

import signal
import sys

from benchmarks.common import assigned_reader
from streams.kafka.consume import ready_messages
from streams.kafka.publisher import Publisher


def main() -> None:
    bootstrap, source, sink = sys.argv[1:4]
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    consumer = assigned_reader(bootstrap, source, from_end=True)
    producer = Publisher({"bootstrap.servers": bootstrap}, linger_ms=2)
    producer.start()
    print("ready", flush=True)
    while not stop:
        batch = [m for m in ready_messages(consumer, 500, 0.05) if not m.error()]
        tracker = producer.tracker()
        for m in batch:
            producer.publish(sink, m.key(), m.value() or b"", tracker)
        if batch:
            producer.flush(10)
    consumer.close()


if __name__ == "__main__":
    main()
