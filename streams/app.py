"""The Faust app: agents and HTTP views wired to a ``WorkerService``. Thin by design.

* ``transactions`` agent: ``busy_batches(stream, max_batch, linger)`` (streams.batching)
  yields raw events; they are acked (so Faust may commit their offsets) only after the
  loop body returns, i.e. after every decision of the batch was acknowledged by the
  broker: at-least-once.
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
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any

import faust
import mode
from faust.types import StreamT
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from features.contracts import DecodeError, decode_feedback, decode_transaction
from features.errors import RiskstreamError
from scoring.engine import ScoreRequest
from streams.batching import busy_batches
from streams.faust_tuning import apply_eager_delivery, apply_fetch_wait
from streams.http_auth import bearer_ok
from streams.log_privacy import user_ref
from streams.metrics import EVENTS, THRESHOLD_UPDATES
from streams.pipeline import RawMessage
from streams.service import WorkerService
from streams.settings import Settings

log = logging.getLogger(__name__)
EXIT_INFRASTRUCTURE = 70
MAX_HTTP_BODY = 1 << 20
MAX_HTTP_ITEMS = 1000


def _faust_settings(s: Settings) -> dict[str, Any]:
    """Faust's settings derived from ours (never configured separately)."""
    k = s.kafka
    conf: dict[str, Any] = {
        "broker": [f"kafka://{h.strip()}" for h in k.bootstrap_servers.split(",")],
        "value_serializer": "raw",
        "key_serializer": "raw",
        "autodiscover": False,
        "store": "memory://",
        "topic_partitions": s.topics.partitions,
        "topic_allow_declare": False,  # topics are created up front by the service
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": k.session_timeout_ms / 1000,
        "broker_heartbeat_interval": k.heartbeat_interval_ms / 1000,
        "broker_rebalance_timeout": max(5.0, k.session_timeout_ms / 1000 * 2),
        "broker_commit_every": 1000,
        "broker_commit_interval": 0.5,
        "web_enabled": s.http.port != 0,
        "web_port": s.http.port or 6066,
        "web_bind": s.http.host,
        "web_host": s.http.host,
        "datadir": str(s.data_dir / "faust"),
        "logging_config": None,
        "stream_buffer_maxsize": k.stream_buffer,
    }
    if k.security_protocol != "PLAINTEXT":
        import ssl

        context = None
        if k.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
            if k.ssl_certfile:
                context.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile or ""))
        if k.sasl_mechanism:
            password = k.sasl_password.get_secret_value() if k.sasl_password else ""
            conf["broker_credentials"] = faust.SASLCredentials(
                username=k.sasl_username or "",
                password=password,
                mechanism=k.sasl_mechanism,
                ssl_context=context,
            )
        elif context is not None:
            conf["broker_credentials"] = faust.SSLCredentials(context)
    return conf


def create_app(
    settings: Settings, service: WorkerService | None = None
) -> tuple[faust.App, WorkerService]:
    """Build the Faust app around a (not yet started) service."""
    svc = service or WorkerService(settings)
    apply_fetch_wait(settings.kafka.fetch_max_wait_ms)
    if settings.kafka.eager_delivery:
        apply_eager_delivery()
    app = faust.App(settings.app_id, **_faust_settings(settings))
    tx_topic = app.topic(settings.topics.transactions, value_serializer="raw", key_serializer="raw")
    fb_topic = app.topic(settings.topics.feedback, value_serializer="raw", key_serializer="raw")

    class Lifecycle(mode.Service):
        """Start the service with the app; on stop finish the batch in flight, snapshot."""

        async def on_start(self) -> None:
            await svc.start()
            log.info("worker ready")

        async def on_stop(self) -> None:
            log.info("stopping: finishing the batch in flight, snapshotting the cache")
            await svc.stop()

    app.service(Lifecycle)
    if settings.console.enabled:
        _add_console(app, svc, settings)

    @app.agent(tx_topic)
    async def score_transactions(stream: StreamT[Any]) -> None:
        linger = settings.batch.max_wait_ms / 1000.0
        async for events in busy_batches(stream, settings.batch.max_batch, linger):
            while svc.pipeline is None:  # wait for start(); events stay unacked
                await asyncio.sleep(0.05)
            now = time.monotonic()
            batch = [
                RawMessage(e.value, e.message.topic, e.message.partition, e.message.offset, now)
                for e in events
            ]
            # shielded: a SIGTERM mid-batch lets the batch finish before the service stops
            task = asyncio.ensure_future(svc.pipeline.process(batch))
            svc.track(task)
            if not await _completed(asyncio.shield(task), svc):
                await _parked()  # never returns: the failed batch is never acked

    hash_key = settings.log_hash_key.get_secret_value() if settings.log_hash_key else None

    @app.agent(fb_topic)
    async def apply_feedback(stream: StreamT[Any]) -> None:
        async for events in busy_batches(stream, 256, 0.2):
            while svc.engine is None:
                await asyncio.sleep(0.05)
            for event in events:
                try:
                    fb = decode_feedback(event.value or b"")
                except DecodeError as exc:
                    log.warning(
                        "ignoring malformed feedback at offset %s: %s", event.message.offset, exc
                    )
                    continue
                step = asyncio.ensure_future(
                    svc.engine.feedback(fb.user_id, fb.transaction_id, fb.label)
                )
                if not await _completed(step, svc):
                    await _parked()
                THRESHOLD_UPDATES.labels(fb.label).inc()
                log.info(
                    "label %s for transaction %s of %s applied: threshold now %.4f",
                    fb.label,
                    fb.transaction_id,
                    user_ref(fb.user_id, settings.log_user_ids, hash_key),
                    step.result(),
                )

    @app.timer(interval=60.0)
    async def snapshot_cache() -> None:
        await asyncio.get_running_loop().run_in_executor(None, svc.snapshot)

    _add_views(app, svc, settings)
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


def _add_views(app: faust.App, service: WorkerService, settings: Settings) -> None:
    token = settings.http.token.get_secret_value() if settings.http.token else None

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            checks = await service.ready()
            ok = all(checks.values())
            return self.json({"ready": ok, **checks}, status=200 if ok else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # text/plain is Prometheus' text exposition format (aiohttp adds the charset)
            return self.text(generate_latest().decode(), content_type="text/plain")

    @app.page("/v1/score")
    class Score(View):
        async def post(self, request: Request) -> Response:
            if not bearer_ok(request.headers.get("Authorization"), token):
                return self.json({"error": "missing or wrong bearer token"}, status=401)
            raw = await request.read()
            if len(raw) > MAX_HTTP_BODY:
                return self.json({"error": f"body over {MAX_HTTP_BODY} bytes"}, status=413)
            status, body = await score_http(service, raw)
            return self.json(body, status=status)

    del Healthz, Readyz, Metrics, Score  # registered by the decorators


async def score_http(service: WorkerService, raw: bytes) -> tuple[int, dict[str, Any]]:
    """POST /v1/score: one transaction, a list, or {"transactions": [...], "dry_run": bool}."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        return 400, {"error": f"body is not JSON: {' '.join(str(exc).split())[:200]}"}
    dry_run = False
    if isinstance(data, dict) and "transactions" in data:
        dry_run = data.get("dry_run") is True
        items = data["transactions"]
    elif isinstance(data, dict):
        dry_run = data.pop("dry_run", False) is True
        items = [data]
    else:
        items = data
    if not isinstance(items, list) or not items:
        return 400, {"error": "expected a transaction object or a non-empty list"}
    if len(items) > MAX_HTTP_ITEMS:
        return 413, {"error": f"at most {MAX_HTTP_ITEMS} transactions per request"}
    txs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            return 400, {"error": f"item {i}: expected a JSON object"}
        try:
            txs.append(decode_transaction(item))
        except DecodeError as exc:
            return 400, {"error": f"item {i}: {exc}"}
    if service.batcher is None or service.pipeline is None:
        return 503, {"error": "not ready: the model is still loading"}
    try:
        results = await service.batcher.submit_many([ScoreRequest(t, dry_run=dry_run) for t in txs])
        decisions = [d for d, _ in results]
        if not dry_run:
            tracker = service.pipeline.publisher.tracker()  # this request's deliveries only
            service.pipeline.publish_decisions(decisions, tracker)
            await service.pipeline.publisher.deliver(tracker)
    except RiskstreamError as exc:
        return exc.http_status if exc.http_status >= 400 else 503, {"error": exc.one_line()}
    EVENTS.labels("scored_http").inc(len(decisions))
    return 200, {
        "decisions": [
            {
                "transaction_id": d.tx.transaction_id,
                "score": round(d.score, 6),
                "threshold": round(d.threshold, 6),
                "decision": "review" if d.is_alert else "approve",
                "model_version": d.model_version,
                "reasons": [r.model_dump() for r in d.reasons],
                "similar_cases": [c.model_dump() for c in d.similar_cases],
                "dry_run": dry_run,
                "latency_ms": round(d.latency_ms, 3),
            }
            for d in decisions
        ]
    }


def _no_constants(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until SIGTERM/SIGINT (graceful stop)."""
    from faust.worker import Worker

    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        import uvloop  # DESIGN §9: +10-25 % on the batched agent

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
