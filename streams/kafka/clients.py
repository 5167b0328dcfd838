"""Consumers, built from the same librdkafka configuration as every other client.

Two kinds: ``consumer`` for a group member (``riskstream alerts``), ``reader`` for a
process that must see every partition and never commits (the console feed, the demo's
watcher, the benchmarks, the load tests, the test helpers). A reader assigns the
partitions itself: the embedded broker under-reports end offsets, and a reader that
joined the workers' group would get only a share of the partitions.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

# The embedded broker holds every fetch for the full wait, data or not: a reader that
# times what it reads adds at most this much, and a shorter wait costs the broker CPU
# (docs/BENCHMARKS.md, readers).
READER_FETCH_WAIT_MS = 10


def consumer(client_conf: dict[str, Any], group: str | None = None, **overrides: Any) -> Consumer:
    """A consumer that commits nothing by itself; a unique group when none is given."""
    return Consumer(
        {
            **client_conf,
            "group.id": group or f"riskstream-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **overrides,
        }
    )


def reader(
    client_conf: dict[str, Any],
    topics: Sequence[str],
    start: Literal["beginning", "end"] = "beginning",
    **overrides: Any,
) -> Consumer:
    """A consumer assigned every partition of ``topics`` from ``start``; never commits."""
    c = consumer(
        client_conf,
        "riskstream-reader-unused",
        **{
            "fetch.wait.max.ms": READER_FETCH_WAIT_MS,
            **overrides,
        },
    )
    offset = 0 if start == "beginning" else OFFSET_END
    parts: list[TopicPartition] = []
    for name in topics:
        meta = c.list_topics(name, timeout=10).topics[name]
        parts += [TopicPartition(name, p, offset) for p in meta.partitions]
    c.assign(parts)
    return c
