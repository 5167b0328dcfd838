"""Reading what a topic holds, robustly on the embedded broker.

Tansu under-reports high watermarks, so tests count messages instead: assign every
partition from the beginning and read until ``expected`` distinct keys arrived or the
deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from streams.kafka.clients import reader


def read_topic(
    bootstrap: str,
    topic: str,
    expected: int | None = None,
    timeout_s: float = 30.0,
    idle_s: float = 2.0,
    key_of: Callable[[Any], Any] | None = None,
    until_keys: Collection[Any] | None = None,
) -> list[Any]:
    """All messages of ``topic`` (assign, no group).

    Stops at ``expected`` distinct keys, or once every key of ``until_keys`` arrived. Use
    ``until_keys`` when the topic also carries messages the test did not count (HTTP
    decisions on ``scores``): a count would be reached by those and stop the read while
    counted ones are still on their way, which reads as a loss.
    """
    consumer = reader({"bootstrap.servers": bootstrap}, [topic])
    out: list[Any] = []
    seen: set[Any] = set()
    missing = set(until_keys) if until_keys is not None else None
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, 0.2)
            for m in msgs:
                if m.error():
                    continue
                out.append(m)
                key = key_of(m) if key_of else (m.partition(), m.offset())
                seen.add(key)
                if missing is not None:
                    missing.discard(key)
                last = time.monotonic()
            if expected is not None and len(seen) >= expected:
                break
            if missing is not None and not missing:
                break
            if (
                expected is None
                and missing is None
                and not msgs
                and time.monotonic() - last > idle_s
            ):
                break
    finally:
        consumer.close()
    return out
