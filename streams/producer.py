"""Publish labelled files or simulator output to the ``transactions`` topic.

confluent-kafka with batching: ``produce`` + ``poll(0)`` per message and one ``flush`` at
the end. A blocking poll or flush per message caps a producer near 110 msg/s; this one
is limited by the broker. Labels stay in the file unless ``with_labels`` is set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from confluent_kafka import KafkaError, Message, Producer

from streams.errors import InfrastructureError

LABEL_FIELDS = ("is_fraud", "scenario")


@dataclass
class ProduceReport:
    """What a produce run did."""

    sent: int
    delivered: int
    failed: int
    seconds: float

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


class TransactionProducer:
    """A batching producer with delivery accounting; ``close()`` flushes."""

    def __init__(self, client_conf: dict[str, Any], topic: str, linger_ms: int = 5) -> None:
        self._conf = {
            **client_conf,
            "linger.ms": linger_ms,
            "enable.idempotence": False,
            "acks": "all",
            "queue.buffering.max.messages": 500_000,
        }
        self.topic = topic
        self._producer: Producer | None = None
        self.sent = self.delivered = self.failed = 0
        self.last_error: KafkaError | None = None

    def start(self) -> None:
        self._producer = Producer(self._conf)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            self.last_error = err

    def send(self, key: str, value: bytes) -> None:
        """Queue one message; on a full local queue, serve callbacks and retry."""
        if self._producer is None:
            raise InfrastructureError("producer not started")
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent += 1
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        if self._producer is not None:
            remaining = self._producer.flush(timeout_s)
            if remaining:
                raise InfrastructureError(f"{remaining} messages not delivered in {timeout_s:.0f}s")

    def close(self) -> None:
        self.flush()
        self._producer = None


def produce_batches(
    producer: TransactionProducer,
    batches: Iterator[pa.RecordBatch],
    rate: float | None = None,
    replay_factor: float | None = None,
    with_labels: bool = False,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Send rows at ``rate`` msg/s, or with event-time gaps scaled by ``replay_factor``.

    Pacing sleeps between small bursts (not per message), so high rates stay accurate.
    """
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
            producer.send(key, value)
            n += 1
            if progress and n % 1000 == 0:
                progress(1000)
        if limit is not None and n >= limit:
            break
    producer.flush()
    if progress:
        progress(n % 1000)
    return ProduceReport(n, producer.delivered, producer.failed, time.monotonic() - started)
