"""Feeds ``ConsoleState`` from Kafka: one consumer thread, no consumer group.

The console must show *every* alert whichever worker published it, so it assigns all
partitions of ``alerts``, ``feedback`` and ``scores`` itself instead of joining the
workers' group (where it would get a share of partitions) and never commits. It starts
``lookback_s`` back in time (``offsets_for_times``; from the beginning where the broker
cannot answer that) so a restarted console shows the last day again.

Decoding stays cheap on the thread (scores are only counted, never parsed); state
changes run on the event loop via ``call_soon_threadsafe`` in batches.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from streams.console.state import ConsoleState
from streams.kafka.clients import consumer as kafka_consumer
from streams.kafka.consume import ready_messages

log = logging.getLogger(__name__)


class ConsoleFeed:
    """Tails the three topics into ``state`` until ``stop``."""

    def __init__(
        self,
        client_conf: dict[str, Any],
        state: ConsoleState,
        alerts_topic: str,
        feedback_topic: str,
        scores_topic: str,
        lookback_s: int,
    ) -> None:
        self._conf = client_conf
        self.state = state
        self.topics = {"alerts": alerts_topic, "feedback": feedback_topic, "scores": scores_topic}
        self.lookback_s = lookback_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        meta = consumer.list_topics(timeout=10)
        since_ms = int(time.time() * 1000) - self.lookback_s * 1000
        wanted: list[TopicPartition] = []
        for topic in self.topics.values():
            parts = meta.topics.get(topic)
            if parts is None or parts.error is not None:
                continue
            wanted.extend(TopicPartition(topic, p, since_ms) for p in parts.partitions)
        try:
            found = consumer.offsets_for_times(wanted, timeout=10)
            return [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -1)
                for tp in found
            ]  # -1 = OFFSET_END: nothing in the lookback window yet
        except KafkaException as exc:
            log.info("console: no time index on the broker (%s); reading from the start", exc)
            return [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in wanted]

    def _run(self) -> None:
        # a group id is required but never used to commit: partitions are assigned here
        consumer = kafka_consumer(
            self._conf, f"riskstream-console-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 50}
        )
        try:
            assignment: list[TopicPartition] = []
            while not self._stop.is_set() and not assignment:
                try:
                    assignment = self._assignment(consumer)
                except KafkaException as exc:
                    log.warning("console: waiting for the topics: %s", exc)
                if not assignment:
                    self._stop.wait(1.0)
            consumer.assign(assignment)
            while not self._stop.is_set():
                messages = ready_messages(consumer, 500, 0.2)
                batch = [
                    (m.topic() or "", m.value() or b"", m.timestamp()[1], _traceparent(m))
                    for m in messages
                    if m.error() is None
                ]
                if batch and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._apply, batch)
        except Exception:  # the console is optional: never take the worker down with it
            log.exception("console feed stopped")
        finally:
            consumer.close()

    def _apply(self, batch: list[tuple[str, bytes, int, str | None]]) -> None:
        alerts, feedback = self.topics["alerts"], self.topics["feedback"]
        for topic, value, ts_ms, traceparent in batch:
            if topic == alerts:
                self.state.add_alert(value or b"", ts_ms, traceparent)
            elif topic == feedback:
                self.state.add_feedback(value or b"", ts_ms)
            else:
                self.state.add_scored(ts_ms)


def _traceparent(message: Message) -> str | None:
    """The W3C ``traceparent`` header of an alert record, if it has one."""
    headers = message.headers()
    for key, value in headers.items() if isinstance(headers, dict) else headers or ():
        if key == "traceparent" and isinstance(value, bytes):
            return value.decode("ascii", "replace")
    return None
