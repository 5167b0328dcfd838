"""What the worker does with one batch of raw Kafka messages (no Faust imports here).

decode → dead letters for bad input → score (engine) → publish every decision to
``scores`` and alerts to ``alerts`` (``start``) → wait for acks → refresh the embedding
cache (``finish``; the refresh runs in the background). The worker runs ``start`` of the
next batch while ``finish`` of this one waits for the broker.

Failure policy: a ``RiskstreamError`` (infrastructure that failed after its retries:
Redis, the broker) propagates, and the caller stops the worker without acking the batch.
Any other exception while scoring is a defect triggered by some input: the batch is
scored again event by event, the event(s) that still fail go to the dead-letter topic
with a one-line reason and their source offsets, and the rest of the batch carries on.
The caller acks the batch to Kafka only when ``finish`` (or ``process``) returns, so a
crash anywhere replays the batch; idempotent store writes and deterministic alert ids
make the replay harmless.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from features.contracts import DeadLetter, DecodeError, decode_transaction
from features.errors import RiskstreamError
from scoring.decision import Decision, ScoreRequest
from streams.decision_codec import alert_json, score_json
from streams.kafka.publisher import DeliveryTracker, Publisher
from streams.metrics import (
    ALERTS,
    DEAD_LETTERS,
    EVENT_TO_PUBLISH_MS,
    EVENTS,
    INGEST_TO_PUBLISH_MS,
    STAGE_MS,
    reason_class,
)
from streams.settings import TopicSettings
from streams.tracing import Headers, TracedDecision, Tracing, forwarded, trace_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawMessage:
    """A consumed message, transport-independent."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    received: float  # time.monotonic()
    headers: Headers | None = None  # the Kafka headers (a bank's traceparent, if any)


def dead_letter(msg: RawMessage, error: str) -> bytes:
    """The DLQ record: the reason, the original bytes (base64 if not UTF-8), the source."""
    raw = msg.value or b""
    encoding: Literal["utf-8", "base64"]
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode(), "base64"
    record = DeadLetter(
        error=error,
        raw=text,
        raw_encoding=encoding,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        at=datetime.now(UTC),
    )
    return record.model_dump_json().encode()


@dataclass(frozen=True)
class PublishedBatch:
    """A batch scored and queued for the broker, its acks not yet awaited."""

    tracker: DeliveryTracker
    decisions: list[Decision]
    refresh: Any  # the cache refresh the engine asked for (None: nothing to refresh)
    traced: list[TracedDecision]
    started_ns: int
    decoded_ns: int
    scored_ns: int
    published_ns: int


class BatchPipeline:
    """Decode, score, publish; one instance per worker."""

    def __init__(
        self,
        score: Callable[[list[ScoreRequest]], Awaitable[tuple[list[Decision], Any]]],
        publisher: Publisher,
        topics: TopicSettings,
        refresh: Callable[[Any], Awaitable[int]] | None = None,
        settle: Callable[[], Awaitable[None]] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.score = score
        self._settle = settle
        self._refresh = refresh
        self.publisher = publisher
        self.topics = topics
        self.tracing = tracing
        self._refreshing: asyncio.Task[int] | None = None

    async def process(self, messages: list[RawMessage]) -> list[Decision]:
        """Score and publish a batch, then wait for its acks (``start`` then ``finish``)."""
        return await self.finish(await self.start(messages))

    async def start(self, messages: list[RawMessage]) -> PublishedBatch:
        """Decode, dead-letter bad input, score, and queue every decision on its topic.

        Returns before the broker acknowledged anything: the worker scores the next
        batch while ``finish`` waits for this one's acks (``streams.delivery_chain``).
        """
        tracker = self.publisher.tracker()  # this batch's deliveries, judged on their own
        started_ns = time.time_ns()
        requests: list[ScoreRequest] = []
        sources: list[RawMessage] = []
        for msg in messages:
            try:
                tx = decode_transaction(msg.value or b"")
            except DecodeError as exc:
                error = str(exc)
                self.publisher.publish(self.topics.dlq, None, dead_letter(msg, error), tracker)
                DEAD_LETTERS.labels(reason_class(error)).inc()
                EVENTS.labels("dead_letter").inc()
                continue
            requests.append(ScoreRequest(tx, received=msg.received))
            sources.append(msg)
        decisions: list[Decision] = []
        pending = None
        traced: list[TracedDecision] = []
        headers: dict[str, list[tuple[str, bytes]]] | None = None
        decoded_ns = scored_ns = time.time_ns()
        if requests:
            t0 = time.perf_counter()
            try:
                decisions, pending = await self.score(requests)
            except RiskstreamError:
                raise
            except Exception as exc:  # a defect some event triggers: find it, keep the rest
                log.error(
                    "scoring a batch of %d failed (%s: %s); scoring its events one by one",
                    len(requests),
                    type(exc).__name__,
                    _one_line(exc),
                )
                decisions, pending = await self._score_isolating(requests, sources, tracker)
            STAGE_MS.labels("score").observe((time.perf_counter() - t0) * 1000)
            scored_ns = time.time_ns()
            if self.tracing is not None:
                incoming = {
                    r.tx.transaction_id: m.headers
                    for r, m in zip(requests, sources, strict=True)
                    if m.headers
                }
                traced, headers = self._trace(decisions, incoming, started_ns)
            self.publish_decisions(decisions, tracker, headers)
        return PublishedBatch(
            tracker, decisions, pending, traced, started_ns, decoded_ns, scored_ns, time.time_ns()
        )

    async def finish(self, batch: PublishedBatch) -> list[Decision]:
        """Wait for the batch's acks (and its threshold write); then its metrics, traces
        and cache refresh. Raises when a message stayed unacknowledged after retries."""
        decisions, tracker = batch.decisions, batch.tracker
        t1 = time.perf_counter()
        if self._settle is not None:  # the batch's threshold write, made while publishing
            await asyncio.gather(self.publisher.deliver(tracker), self._settle())
        else:
            await self.publisher.deliver(tracker)
        STAGE_MS.labels("publish").observe((time.perf_counter() - t1) * 1000)
        now_mono, now_wall = time.monotonic(), time.time()
        exemplars: dict[str, str] = {}
        traced = batch.traced
        if traced:
            acked_ns = time.time_ns()
            ours = {
                "decode": (batch.started_ns, batch.decoded_ns),
                "publish": (batch.scored_ns, batch.published_ns),
                "ack": (batch.published_ns, acked_ns),
            }
            engine = {id(d.stages): d.stages for d in decisions if d.stages is not None}
            assert self.tracing is not None
            self.tracing.finish_batch(traced, [ours, *engine.values()], len(decisions), acked_ns)
            # a slow observation's trace, one click from the latency histogram
            exemplars = {t.decision.tx.transaction_id: t.trace_id for t in traced}
        for d in decisions:
            trace_id = exemplars.get(d.tx.transaction_id) if exemplars else None
            ingest = (now_mono - d.received) * 1000
            event = max(0.0, (now_wall - d.tx.timestamp.timestamp()) * 1000)
            if trace_id is None:
                INGEST_TO_PUBLISH_MS.observe(ingest)
                EVENT_TO_PUBLISH_MS.observe(event)
            else:
                INGEST_TO_PUBLISH_MS.observe(ingest, exemplar={"trace_id": trace_id})
                EVENT_TO_PUBLISH_MS.observe(event, exemplar={"trace_id": trace_id})
        EVENTS.labels("scored").inc(len(decisions))
        if batch.refresh is not None and self._refresh is not None:
            # The refresh (an encoder run per scored user, so their next event finds a
            # fresh cache entry) runs in the background: the next batch can be fetched
            # and scored meanwhile. Refreshes stay in order: each waits for the previous,
            # so a user's newer embedding is never overwritten by an older one, and a
            # batch whose users' refresh is still running just misses the cache.
            previous = self._refreshing
            self._refreshing = asyncio.ensure_future(self._refresh_after(previous, batch.refresh))
        return decisions

    def _trace(
        self, decisions: list[Decision], incoming: dict[str, Headers], started_ns: int
    ) -> tuple[list[TracedDecision], dict[str, list[tuple[str, bytes]]]]:
        """Start the spans of the transactions to trace; the headers each record carries."""
        tracing = self.tracing
        assert tracing is not None
        traced: list[TracedDecision] = []
        headers: dict[str, list[tuple[str, bytes]]] = {}
        for d in decisions:
            raw = incoming.get(d.tx.transaction_id)
            parent = tracing.parent(raw)
            if tracing.wanted(parent, d.is_alert):
                t = tracing.start_decision(d, parent, started_ns)
                traced.append(t)
                headers[d.tx.transaction_id] = t.headers
            elif raw is not None:
                kept = forwarded(raw)  # not traced here: the bank's context goes on as it came
                if kept:
                    headers[d.tx.transaction_id] = kept
        return traced, headers

    async def _score_isolating(
        self,
        requests: list[ScoreRequest],
        sources: list[RawMessage],
        tracker: DeliveryTracker,
    ) -> tuple[list[Decision], list[Any]]:
        """Each event alone; the ones that still fail are dead-lettered as poison."""
        decisions: list[Decision] = []
        pendings: list[Any] = []
        for req, msg in zip(requests, sources, strict=True):
            try:
                got, pending = await self.score([req])
            except RiskstreamError:
                raise
            except Exception as exc:
                error = f"poison: scoring failed with {type(exc).__name__}: {_one_line(exc)}"
                self.publisher.publish(self.topics.dlq, None, dead_letter(msg, error), tracker)
                DEAD_LETTERS.labels("poison").inc()
                EVENTS.labels("dead_letter").inc()
                log.error(
                    "dead-lettered a poison event at %s[%d]@%d: %s%s",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    error,
                    _trace_field(msg.headers),
                )
                continue
            decisions.extend(got)
            pendings.extend(pending if isinstance(pending, list) else [pending])
        return decisions, pendings

    async def _refresh_after(self, previous: asyncio.Task[int] | None, pending: Any) -> int:
        if previous is not None:
            await asyncio.wait([previous])
        assert self._refresh is not None
        try:
            return await self._refresh(pending)
        except Exception:  # the cache is an optimization: a failed refresh only costs a miss
            log.warning("embedding cache refresh failed", exc_info=True)
            return 0

    async def drain(self) -> None:
        """Wait for the background cache refresh (before a snapshot or shutdown)."""
        if self._refreshing is not None:
            await asyncio.wait([self._refreshing])

    def publish_decisions(
        self,
        decisions: list[Decision],
        tracker: DeliveryTracker,
        headers: dict[str, list[tuple[str, bytes]]] | None = None,
    ) -> None:
        """Queue every decision on ``scores`` and alerts on ``alerts`` (key = user id);
        ``headers`` (trace context) by transaction id, for the records that carry some."""
        publish = self.publisher.publish
        for d in decisions:
            h = headers.get(d.tx.transaction_id) if headers else None
            publish(self.topics.scores, d.tx.user_id, score_json(d), tracker, h)
            if d.is_alert:
                publish(self.topics.alerts, d.tx.user_id, alert_json(d), tracker, h)
                ALERTS.inc()


def _trace_field(headers: Headers | None) -> str:
    """`` trace_id=...`` for a log line about a message that carries a trace context."""
    parent = trace_headers(headers).get("traceparent", "")
    parts = parent.split("-")
    return f" trace_id={parts[1]}" if len(parts) == 4 else ""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
