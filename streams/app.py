"""The Faust app: agents and HTTP views wired to a ``WorkerService``. Thin by design.

* ``transactions`` agent: ``busy_batches(stream, max_batch, linger)`` (streams.batching)
  yields raw events; each batch is scored and published, and its events are acked (so
  Faust may commit their offsets) only after every decision of the batch, and of the
  batches before it, was acknowledged by the broker (``streams.delivery_chain``, which
  awaits those acks while the next batch is scored): at-least-once.
* No exception escapes an agent loop (an escaped exception kills the actor while the
  worker looks alive — faust-streaming #175). A poison event is dead-lettered by the
  pipeline and the batch carries on. Infrastructure failures that survived the retries,
  or any error outside the pipeline, stop the worker through its normal shutdown (the
  failed batch stays unacked; snapshot; producer flush) and then exit with code 70, so
  an orchestrator restarts it and the unacked batch is replayed.
* ``feedback`` agent: analyst labels → thresholds and fraud-case memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import faust
import mode
from faust.types import StreamT

from features.contracts import DecodeError, decode_feedback
from features.errors import RiskstreamError
from streams.batching import busy_batches
from streams.delivery_chain import DeliveryChain
from streams.faust_settings import faust_settings
from streams.faust_tuning import apply_eager_delivery, apply_fetch_wait
from streams.heap import freeze_startup_heap
from streams.http_views import add_views
from streams.log_privacy import user_ref
from streams.metrics import LABELS_BY_SOURCE, THRESHOLD_UPDATES
from streams.pipeline import RawMessage
from streams.service import WorkerService
from streams.settings import Settings

log = logging.getLogger(__name__)
EXIT_INFRASTRUCTURE = 70


def create_app(
    settings: Settings, service: WorkerService | None = None
) -> tuple[faust.App, WorkerService]:
    """Build the Faust app around a (not yet started) service."""
    svc = service or WorkerService(settings)
    apply_fetch_wait(settings.kafka.fetch_max_wait_ms)
    if settings.kafka.eager_delivery:
        apply_eager_delivery()
    app = faust.App(settings.app_id, **faust_settings(settings))
    tx_topic = app.topic(settings.topics.transactions, value_serializer="raw", key_serializer="raw")
    fb_topic = app.topic(settings.topics.feedback, value_serializer="raw", key_serializer="raw")

    class Lifecycle(mode.Service):
        """Start the service with the app; on stop finish the batch in flight, snapshot."""

        async def on_start(self) -> None:
            await svc.start()
            frozen = freeze_startup_heap()
            log.info("worker ready (%d startup objects kept out of garbage collection)", frozen)

        async def on_stop(self) -> None:
            log.info("stopping: finishing the batch in flight, snapshotting the cache")
            await svc.stop()

    app.service(Lifecycle)
    if settings.console.enabled:
        _add_console(app, svc, settings)

    @app.agent(tx_topic)
    async def score_transactions(stream: StreamT[Any]) -> None:
        linger = settings.batch.max_wait_ms / 1000.0
        rt = await svc.started()  # events stay unacked until the worker is ready
        chain = DeliveryChain(stream.ack, lambda step: _completed(step, svc), svc.track)
        async for events in busy_batches(stream, settings.batch.max_batch, linger, ack=False):
            now = time.monotonic()
            batch = [
                RawMessage(
                    e.value,
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    now,
                    _headers(e.message.headers),
                )
                for e in events
            ]
            # shielded: a SIGTERM mid-batch lets the batch finish before the service stops
            task = asyncio.ensure_future(rt.pipeline.start(batch))
            svc.track(task)
            if not await _completed(asyncio.shield(task), svc):
                await _parked()  # never returns: the failed batch is never acked
            # its events are acked once its decisions are delivered; a full batch means a
            # backlog, so the next batch is scored meanwhile; otherwise wait for the acks
            backlog = len(events) >= settings.batch.max_batch
            if not await chain.add(events, rt.pipeline.finish(task.result()), wait=not backlog):
                await _parked()  # a delivery failed: nothing more is acked

    hash_key = settings.log_hash_key.get_secret_value() if settings.log_hash_key else None

    @app.agent(fb_topic)
    async def apply_feedback(stream: StreamT[Any]) -> None:
        rt = await svc.started()
        async for events in busy_batches(stream, 256, 0.2):
            for event in events:
                try:
                    fb = decode_feedback(event.value or b"")
                except DecodeError as exc:
                    log.warning(
                        "ignoring malformed feedback at offset %s: %s", event.message.offset, exc
                    )
                    continue
                step = asyncio.ensure_future(
                    rt.engine.feedback(
                        fb.user_id,
                        fb.transaction_id,
                        fb.label,
                        round(fb.at.timestamp() * 1000),
                    )
                )
                if not await _completed(step, svc):
                    await _parked()
                THRESHOLD_UPDATES.labels(fb.label).inc()
                LABELS_BY_SOURCE.labels(fb.source).inc()
                trace_id = None
                if rt.tracing is not None:  # the label joins the alert's trace
                    trace_id = rt.tracing.feedback(
                        _headers(event.message.headers),
                        {
                            "riskstream.transaction_id": fb.transaction_id,
                            "riskstream.label": fb.label,
                            "riskstream.threshold_after": step.result(),
                        },
                    )
                log.info(
                    "label %s for transaction %s of %s applied: threshold now %.4f%s",
                    fb.label,
                    fb.transaction_id,
                    user_ref(fb.user_id, settings.log_user_ids, hash_key),
                    step.result(),
                    f" trace_id={trace_id}" if trace_id else "",
                )

    @app.timer(interval=60.0)
    async def snapshot_cache() -> None:
        await asyncio.get_running_loop().run_in_executor(None, svc.snapshot)

    add_views(app, svc, settings)
    return app, svc


def _add_console(app: faust.App, svc: WorkerService, settings: Settings) -> None:
    """The analyst console: a topic feed started and stopped with the app, and its views."""
    from streams.console.feed import ConsoleFeed
    from streams.console.state import ConsoleState
    from streams.console.views import add_console_views

    c = settings.console
    state = ConsoleState(capacity=c.capacity, horizon_s=max(c.lookback_s, 86_400))
    t = settings.topics
    feed = ConsoleFeed(
        settings.kafka.confluent_config(), state, t.alerts, t.feedback, t.scores, c.lookback_s
    )

    class ConsoleService(mode.Service):
        async def on_start(self) -> None:
            feed.start(asyncio.get_running_loop())

        async def on_stop(self) -> None:
            await asyncio.get_running_loop().run_in_executor(None, feed.stop)

    app.service(ConsoleService)
    add_console_views(app, svc, settings, state)


def _headers(raw: Any) -> list[tuple[str, bytes | None]] | None:
    """A Faust message's headers as (key, value) pairs (the driver gives a list or a dict)."""
    if not raw:
        return None
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v) for k, v in items]


async def _completed(step: Awaitable[Any], service: WorkerService) -> bool:
    """Await one batch step; on a failure that survived its retries, stop the worker.

    Returns False when the step failed: the worker is then stopping (normal shutdown,
    then exit 70) and the caller must not ack what it was processing.
    """
    try:
        await step
        return True
    except asyncio.CancelledError:
        raise
    except RiskstreamError as exc:
        log.critical("infrastructure failure, stopping for a restart: %s", exc.one_line())
    except Exception:
        log.critical(
            "unexpected error in the processing loop, stopping for a restart", exc_info=True
        )
    service.fail(EXIT_INFRASTRUCTURE)
    return False


async def _parked() -> None:
    """Wait until the stopping worker cancels this agent (its batch is never acked)."""
    await asyncio.Event().wait()


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until SIGTERM/SIGINT (graceful stop)."""
    from faust.worker import Worker

    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        import uvloop  # a faster event loop for the batched agent (DESIGN §9)

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a core dependency on Linux
        pass
    from streams.errors import InfrastructureError
    from streams.startup import wait_for_broker

    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()  # kept: Faust's worker runs on this loop afterwards
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(wait_for_broker(settings))
    except InfrastructureError as exc:
        log.critical("%s", exc.one_line())
        raise SystemExit(EXIT_INFRASTRUCTURE) from None
    app, _service = create_app(settings)
    worker = Worker(
        app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.execute_from_commandline()
