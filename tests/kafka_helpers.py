"""Reading what a topic holds, robustly on the embedded broker.

Tansu under-reports high watermarks, so tests count messages instead: assign every
partition from the beginning and read until ``expected`` distinct keys arrived or the
deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition


def read_topic(
    bootstrap: str,
    topic: str,
    expected: int | None = None,
    timeout_s: float = 30.0,
    idle_s: float = 2.0,
    key_of: Callable[[Any], Any] | None = None,
) -> list[Any]:
    """All messages of ``topic`` (assign, no group); stops at ``expected`` distinct keys."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader-unused",
            "fetch.wait.max.ms": 10,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    meta = consumer.list_topics(topic, timeout=10)
    parts = [TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions]
    consumer.assign(parts)
    out: list[Any] = []
    seen: set[Any] = set()
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, 0.2)
            for m in msgs:
                if m.error():
                    continue
                out.append(m)
                seen.add(key_of(m) if key_of else (m.partition(), m.offset()))
                last = time.monotonic()
            if expected is not None and len(seen) >= expected:
                break
            if expected is None and not msgs and time.monotonic() - last > idle_s:
                break
    finally:
        consumer.close()
    return out
