"""The worker's HTTP views: /healthz, /readyz, /metrics and POST /v1/score.

``/healthz`` answers as long as the event loop runs (liveness); ``/readyz`` reports the
dependencies; ``/v1/score`` scores through the same micro-batcher as the stream, so an
HTTP decision is the decision the stream would have made, and publishes it unless it is
a dry run.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE,
)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from features.errors import RiskstreamError
from scoring.decision import ScoreRequest
from streams.http_auth import bearer_ok
from streams.http_body import MAX_HTTP_BODY, BodyError, parse_score_body
from streams.metrics import EVENTS
from streams.service import WorkerService
from streams.settings import Settings


def add_views(app: faust.App, service: WorkerService, settings: Settings) -> None:
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
            if "application/openmetrics-text" in request.headers.get("Accept", ""):
                # OpenMetrics carries the exemplars (a traced observation's trace id)
                return self.bytes(
                    openmetrics_latest(REGISTRY), headers={"Content-Type": OPENMETRICS_CONTENT_TYPE}
                )
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
    """POST /v1/score: the status and the JSON answer (never raises)."""
    try:
        txs, dry_run = parse_score_body(raw)
    except BodyError as exc:
        return exc.http_status, {"error": str(exc)}
    rt = service.runtime
    if rt is None:
        return 503, {"error": "not ready: the model is still loading"}
    try:
        results = await rt.batcher.submit_many([ScoreRequest(t, dry_run=dry_run) for t in txs])
        decisions = [d for d, _ in results]
        if not dry_run:
            tracker = rt.publisher.tracker()  # this request's deliveries only
            rt.pipeline.publish_decisions(decisions, tracker)
            await rt.publisher.deliver(tracker)
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
