"""The one producer: decisions, dead letters, labels, transactions (faster than Faust's
send, DESIGN §9).

``produce`` + ``poll(0)`` per message, then one flush per batch in a worker thread (it
blocks) so the event loop keeps serving. Delivery is tracked **per batch**: every batch
(a stream batch, one ``/v1/score`` request, one console label) has its own
``DeliveryTracker``, the delivery report of each message goes to the tracker it was
sent with, and ``deliver`` judges only that tracker. A flush running for one batch can
therefore never take another batch's failures: the stream batch whose message failed is
the one that is retried and, if its retries run out, left unacked for replay.

A failed message (the broker rejected it, or it timed out after ``message.timeout.ms``)
is produced again, up to ``retries`` times with a doubling backoff; only then does
``deliver`` raise ``PublishError``. A message still unacknowledged when the wait ends is
not produced again (it may yet be delivered): that also raises.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from features.errors import RiskstreamError
from streams.metrics import DELIVERY_FAILURES, DELIVERY_RETRIES


class PublishError(RiskstreamError):
    """The broker did not acknowledge every message of a batch."""

    http_status = 503


@dataclass(frozen=True)
class _Failed:
    topic: str
    key: bytes | None
    value: bytes
    headers: Any  # as librdkafka reported them: re-sent unchanged
    error: KafkaError


class DeliveryTracker:
    """The messages of one batch: how many are outstanding and which failed.

    Delivery reports arrive on whichever thread serves the producer's callbacks (the
    thread of any flush or poll), so the counters take a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outstanding = 0
        self._failed: list[_Failed] = []
        self.delivered = 0
        self.retried = 0

    def _sent(self) -> None:
        with self._lock:
            self._outstanding += 1

    def _unsent(self) -> None:
        with self._lock:
            self._outstanding -= 1

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            self._outstanding -= 1
            if err is None:
                self.delivered += 1
            else:
                headers = msg.headers()
                self._failed.append(
                    _Failed(msg.topic() or "", msg.key(), msg.value() or b"", headers, err)
                )

    @property
    def outstanding(self) -> int:
        with self._lock:
            return self._outstanding

    def take_failed(self) -> list[_Failed]:
        with self._lock:
            failed, self._failed = self._failed, []
            return failed


class Publisher:
    """One producer per process; ``publish(..., tracker)`` then ``await deliver(tracker)``
    (or, from blocking code such as ``riskstream produce``, ``flush`` and read the tracker)."""

    def __init__(
        self,
        client_conf: dict[str, Any],
        linger_ms: int = 2,
        message_timeout_ms: int = 30_000,
        retries: int = 3,
        retry_backoff_s: float = 0.5,
    ) -> None:
        self.conf = {
            **client_conf,
            "linger.ms": linger_ms,
            "message.timeout.ms": message_timeout_ms,
            "acks": "all",
            "enable.idempotence": False,
            "queue.buffering.max.messages": 500_000,
        }
        # every report is in (delivered or failed) once message.timeout.ms has passed
        self._wait_s = message_timeout_ms / 1000 + 5.0
        self._retries = retries
        self._backoff_s = retry_backoff_s
        self._producer: Producer | None = None

    def start(self) -> None:
        self._producer = Producer(self.conf)

    @staticmethod
    def tracker() -> DeliveryTracker:
        """A new batch's tracker."""
        return DeliveryTracker()

    def publish(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes,
        tracker: DeliveryTracker,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one message; its delivery report goes to ``tracker``."""
        producer = self._require()
        tracker._sent()
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=cast(Any, headers),
                    on_delivery=tracker.on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.01)
            except KafkaException as exc:
                tracker._unsent()  # refused before it was queued: nothing to wait for
                raise PublishError(f"the producer refused a message for {topic}: {exc}") from None
        producer.poll(0)

    async def wait(self, tracker: DeliveryTracker, timeout_s: float | None = None) -> None:
        """Until every message of ``tracker`` has a delivery report (or the time is up)."""
        producer = self._require()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + (self._wait_s if timeout_s is None else timeout_s)
        while tracker.outstanding > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # flush serves callbacks for every batch's messages; this tracker is done when
            # its own count reaches zero, whatever else is still queued
            await loop.run_in_executor(None, producer.flush, min(left, 0.5))

    async def deliver(self, tracker: DeliveryTracker, timeout_s: float | None = None) -> None:
        """Wait for this batch's messages; produce failed ones again; raise if any is lost."""
        backoff = self._backoff_s
        for attempt in range(self._retries + 1):
            await self.wait(tracker, timeout_s)
            failed = tracker.take_failed()
            outstanding = tracker.outstanding
            if not failed and not outstanding:
                return
            DELIVERY_FAILURES.inc(len(failed))
            if outstanding or attempt == self._retries:
                first = f": {failed[0].error}" if failed else ""
                raise PublishError(
                    f"{outstanding} messages unacknowledged, {len(failed)} failed"
                    f" after {attempt} retries{first}"
                )
            await asyncio.sleep(backoff)
            backoff *= 2
            tracker.retried += len(failed)
            DELIVERY_RETRIES.inc()
            for f in failed:
                self.publish(f.topic, f.key, f.value, tracker, f.headers)

    def _require(self) -> Producer:
        if self._producer is None:
            raise PublishError("publisher not started")
        return self._producer

    def flush(self, timeout_s: float = 60.0) -> int:
        """Block until everything queued has a report (or the time is up); messages left."""
        return int(self._require().flush(timeout_s))

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush what is queued (blocking: call it off the event loop); messages left."""
        remaining = 0
        if self._producer is not None:
            remaining = int(self._producer.flush(timeout_s))
            self._producer = None
        return remaining
