"""Read what a confluent-kafka consumer has ready, without waiting for a full batch.

``Consumer.consume(n, timeout)`` returns early only once ``n`` messages are in; below
that rate it waits out the whole timeout, so at a few hundred events/s such a reader
holds every message for half its timeout on average, and a benchmark reports that as
broker latency (it once did: docs/BENCHMARKS.md). Every reader whose timing matters (the demo's
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
