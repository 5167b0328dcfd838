"""Publishing decisions and dead letters with confluent-kafka (DESIGN §9: 3× Faust's send).

``produce`` + ``poll(0)`` per message, then one ``flush`` per batch in a worker thread
(it blocks) so the event loop keeps serving; the batch is acked to Faust only after
every message of it was acknowledged by the broker. Any delivery failure raises, so
the batch is not committed and will be replayed.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from features.errors import RiskstreamError


class PublishError(RiskstreamError):
    """The broker did not acknowledge every message of a batch."""

    http_status = 503


class DecisionPublisher:
    """One producer per worker; ``publish`` then ``await flush()`` per batch."""

    def __init__(self, client_conf: dict[str, Any], linger_ms: int = 2) -> None:
        self._conf = {
            **client_conf,
            "linger.ms": linger_ms,
            "acks": "all",
            "enable.idempotence": False,
            "queue.buffering.max.messages": 500_000,
        }
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._errors: list[KafkaError] = []

    def start(self) -> None:
        self._producer = Producer(self._conf)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._errors.append(err)

    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        if self._producer is None:
            raise PublishError("publisher not started")
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.01)
        self._producer.poll(0)

    async def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued message to be acknowledged; raise on any failure."""
        if self._producer is None:
            raise PublishError("publisher not started")
        remaining = await asyncio.get_running_loop().run_in_executor(
            None, self._producer.flush, timeout_s
        )
        with self._lock:
            errors, self._errors = self._errors, []
        if remaining or errors:
            raise PublishError(
                f"{remaining} messages unacknowledged, {len(errors)} failed"
                + (f": {errors[0]}" if errors else "")
            )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
