"""Publish labelled files or simulator output to the ``transactions`` topic.

Through the one ``Publisher`` (``produce`` + ``poll(0)`` per message, one flush at the
end; a blocking poll or flush per message would cap it at a round trip per message). Labels stay in
the file unless ``with_labels`` is set.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from streams.errors import InfrastructureError
from streams.kafka.publisher import Publisher

LABEL_FIELDS = ("is_fraud", "scenario")


@dataclass
class ProduceReport:
    """What a produce run did."""

    sent: int
    delivered: int
    failed: int
    seconds: float
    last_error: str | None = None

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def rows_as_json(batch: pa.RecordBatch, with_labels: bool) -> Iterator[tuple[str, bytes]]:
    """(user_id, JSON bytes) per row, dropping nulls and, by default, the labels."""
    for row in batch.to_pylist():
        if not with_labels:
            for key in LABEL_FIELDS:
                row.pop(key, None)
        payload = {k: v for k, v in row.items() if v is not None}
        yield str(row["user_id"]), json.dumps(payload, separators=(",", ":")).encode()


def new_traceparent() -> list[tuple[str, bytes]]:
    """A ``traceparent`` header opening a new sampled trace (W3C Trace Context, version 00)."""
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return [("traceparent", f"00-{trace_id}-{span_id}-01".encode())]


def produce_batches(
    publisher: Publisher,
    topic: str,
    batches: Iterator[pa.RecordBatch],
    rate: float | None = None,
    replay_factor: float | None = None,
    with_labels: bool = False,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    trace_ratio: float = 0.0,
) -> ProduceReport:
    """Send rows at ``rate`` msg/s, or with event-time gaps scaled by ``replay_factor``.

    ``trace_ratio``: the share of messages sent with a new, sampled W3C ``traceparent``
    header, as a bank's traced producer would (the worker's trace continues it).

    Pacing sleeps between small bursts (not per message), so high rates stay accurate.
    """
    tracker = publisher.tracker()
    rng = random.Random()
    started = time.monotonic()
    first_ts: int | None = None
    n = 0
    for batch in batches:
        ts_col = batch.column("timestamp").to_pylist()
        for i, (key, value) in enumerate(rows_as_json(batch, with_labels)):
            if limit is not None and n >= limit:
                break
            if rate:
                due = started + n / rate
            elif replay_factor:
                first_ts = ts_col[i] if first_ts is None else first_ts
                due = started + (ts_col[i] - first_ts) / 1000.0 / replay_factor
            else:
                due = 0.0
            delay = due - time.monotonic()
            if delay > 0.002:
                time.sleep(delay)
            headers = new_traceparent() if trace_ratio and rng.random() < trace_ratio else None
            publisher.publish(topic, key, value, tracker, headers)
            n += 1
            if progress and n % 1000 == 0:
                progress(1000)
        if limit is not None and n >= limit:
            break
    left = publisher.flush(60.0)
    if progress:
        progress(n % 1000)
    failed = tracker.take_failed()
    if left:
        raise InfrastructureError(f"{left} messages not delivered in 60s")
    report = ProduceReport(n, tracker.delivered, len(failed), time.monotonic() - started)
    report.last_error = str(failed[-1].error) if failed else None
    return report
