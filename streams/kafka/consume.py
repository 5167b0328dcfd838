"""Read what a confluent-kafka consumer has ready, without waiting for a full batch.

``Consumer.consume(n, timeout)`` returns early only once ``n`` messages are in; below
that rate it waits out the whole timeout. At a few hundred events/s a
``consume(1000, 0.05)`` reader therefore held every message for 25 ms on average and
50 ms at worst, and the benchmark reported that as broker latency: the "embedded
broker's two-hop floor" of p50 ~65 / p99 ~110 ms recorded until 2026-11-23 was this
reader and the relay's, not the broker. Every reader whose timing matters (the demo's
latency watcher, the console feed, the benchmarks) uses this instead: block for the
first message, then take whatever else is already fetched.
"""

from __future__ import annotations

from confluent_kafka import Consumer, Message


def ready_messages(
    consumer: Consumer, max_messages: int = 1000, timeout_s: float = 0.1
) -> list[Message]:
    """Up to ``max_messages``: the first as soon as it arrives (or none by ``timeout_s``),
    then the ones already buffered. Error events are included, as ``consume`` does."""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, 0)]
