"""The console's HTTP routes on the worker's web server (Faust views, aiohttp underneath).

``/console`` serves one framework-free page (HTML/CSS/JS shipped in the package: no
Node at build or run time); everything else is JSON under ``/console/api/`` plus one
server-sent-events stream. Labels go to the ``feedback`` topic, the same contract any
other tool uses; the worker's feedback agent applies them, and ``decide`` waits briefly
for the user's threshold to move so the analyst sees the effect of the click.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from faust.web import Request, Response, View

from features.contracts import CHANNELS, Feedback
from streams.console.auth import COOKIE, SESSION_S, ConsoleAuth, LoginError
from streams.console.bodies import DecisionBody, LoginBody, parse
from streams.console.case import history_rows, profile_rows
from streams.console.state import AlertFilter, ConsoleState, Review

if TYPE_CHECKING:
    import faust

    from streams.service import WorkerService
    from streams.settings import Settings

STATIC = {
    "console.js": "application/javascript",
    "console.css": "text/css",
}
EFFECT_WAIT_S = 5.0
MAX_BODY = 4096


def add_console_views(
    app: faust.App, service: WorkerService, settings: Settings, state: ConsoleState
) -> None:
    token = settings.http.token.get_secret_value() if settings.http.token else None
    auth = ConsoleAuth.create(token)

    def who(request: Request) -> str | None:
        return auth.analyst(
            request.cookies.get(COOKIE),
            request.headers.get("Authorization"),
            request.headers.get("X-Analyst"),
        )

    def denied(view: View) -> Response:
        return view.json(
            {"error": "log in first", "needs_password": auth.needs_password}, status=401
        )

    @app.page("/console")
    class Page(View):
        async def get(self, request: Request) -> Response:
            html = _static_text("index.html")
            return self.text(html, content_type="text/html", headers=_NO_FRAMES)

    @app.page("/console/static/{name}")
    class Static(View):
        async def get(self, request: Request, name: str) -> Response:
            if name not in STATIC:  # a fixed list: no path ever reaches the filesystem
                return self.json({"error": "not found"}, status=404)
            return self.text(_static_text(name), content_type=STATIC[name])

    @app.page("/console/api/login")
    class Login(View):
        async def post(self, request: Request) -> Response:
            body = parse(LoginBody, await _json_body(request))
            if body is None:
                return self.json({"error": "expected a JSON object"}, status=400)
            try:
                cookie = auth.login(body.analyst, body.password)
            except LoginError as exc:
                return self.json({"error": str(exc)}, status=401)
            resp = cast(web.Response, self.json({"analyst": auth.analyst(cookie)}))
            resp.set_cookie(
                COOKIE, cookie, max_age=SESSION_S, httponly=True, samesite="Strict", path="/"
            )
            return cast(Response, resp)

    @app.page("/console/api/logout")
    class Logout(View):
        async def post(self, request: Request) -> Response:
            resp = cast(web.Response, self.json({"analyst": None}))
            resp.del_cookie(COOKIE, path="/")
            return cast(Response, resp)

    @app.page("/console/api/me")
    class Me(View):
        async def get(self, request: Request) -> Response:
            analyst = who(request)
            if analyst is None:
                return denied(self)
            return self.json({"analyst": analyst, "channels": list(CHANNELS)})

    @app.page("/console/api/alerts")
    class Alerts(View):
        async def get(self, request: Request) -> Response:
            if who(request) is None:
                return denied(self)
            try:
                flt, limit = _filter(request.query)
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"alerts": state.queue(flt, limit)})

    @app.page("/console/api/numbers")
    class Numbers(View):
        async def get(self, request: Request) -> Response:
            if who(request) is None:
                return denied(self)
            return self.json(state.numbers())

    @app.page("/console/api/stream")
    class Stream(View):
        async def get(self, request: Request) -> Any:
            if who(request) is None:
                return denied(self)
            return await _event_stream(request, state)

    @app.page("/console/api/case/{alert_id}")
    class Case(View):
        async def get(self, request: Request, alert_id: str) -> Response:
            if who(request) is None:
                return denied(self)
            alert = state.alert(alert_id)
            if alert is None:
                return self.json({"error": f"no recent alert {alert_id!r}"}, status=404)
            rt = service.runtime
            if rt is None:
                return self.json({"error": "not ready"}, status=503)
            engine = rt.engine
            user = alert["user_id"]
            records = (await engine.store.read_batch([user]))[user]
            threshold = float((await engine.threshold_policy(user).thresholds([user]))[0])
            return self.json(
                {
                    "alert": alert,
                    "history": history_rows(records, alert["transaction_id"]),
                    "profiles": profile_rows(alert),
                    "current_threshold": round(threshold, 6),
                }
            )

    @app.page("/console/api/decision")
    class Decide(View):
        async def post(self, request: Request) -> Response:
            analyst = who(request)
            if analyst is None:
                return denied(self)
            body = parse(DecisionBody, await _json_body(request))
            if body is None:
                error = 'expected {"alert_id", "label": fraud|legit}'
                return self.json({"error": error}, status=400)
            alert = state.alert(body.alert_id)
            if alert is None:
                return self.json({"error": "no such recent alert"}, status=404)
            status, payload = await decide(service, settings, state, alert, body.label, analyst)
            return self.json(payload, status=status)

    del Page, Static, Login, Logout, Me, Alerts, Numbers, Stream, Case, Decide


async def decide(
    service: WorkerService,
    settings: Settings,
    state: ConsoleState,
    alert: dict[str, Any],
    label: str,
    analyst: str,
) -> tuple[int, dict[str, Any]]:
    """Publish one label per (transaction, label); report the user's threshold move.

    The check and the local record happen before the first ``await``, so two clicks
    racing on the event loop cannot both publish. The same label from another console
    process is caught once the feed has read it from ``feedback`` (the worker applies
    labels idempotently anyway, see docs/contracts.md).
    """
    tx, user = alert["transaction_id"], alert["user_id"]
    existing = state.reviews.get(tx)
    if existing is not None and existing.label == label:
        return 200, {"status": "already", "review": existing.as_dict()}
    rt = service.runtime
    if rt is None:
        return 503, {"error": "not ready"}
    engine, publisher = rt.engine, rt.publisher
    at = datetime.now(UTC)
    fb = Feedback(transaction_id=tx, user_id=user, label=label, analyst=analyst, at=at)
    state.reviews[tx] = Review(label, analyst, at.isoformat())
    try:
        before = float((await engine.threshold_policy(user).thresholds([user]))[0])
        tracker = publisher.tracker()  # this label's delivery only
        trace = alert.get("traceparent")
        headers = [("traceparent", str(trace).encode("ascii"))] if trace else None
        publisher.publish(
            settings.topics.feedback, user, fb.model_dump_json().encode(), tracker, headers
        )
        await publisher.deliver(tracker)
    except Exception as exc:
        if existing is None:
            state.reviews.pop(tx, None)
        else:
            state.reviews[tx] = existing
        return 503, {"error": f"the label was not sent: {exc}"}
    after = before
    deadline = asyncio.get_running_loop().time() + EFFECT_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        after = float((await engine.threshold_policy(user).thresholds([user]))[0])
        if not math.isclose(after, before, abs_tol=1e-9):
            break
        await asyncio.sleep(0.1)
    return 200, {
        "status": "sent",
        "review": state.reviews[tx].as_dict(),
        "threshold_before": round(before, 6),
        "threshold_after": round(after, 6),
        "applied": not math.isclose(after, before, abs_tol=1e-9),
    }


async def _event_stream(request: Request, state: ConsoleState) -> web.StreamResponse:
    """Server-sent events: ``alert`` and ``review`` messages, a comment every 15 s."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx and friends must not buffer the stream
        }
    )
    await resp.prepare(request)  # type: ignore[arg-type]
    queue = state.subscribe()
    try:
        await resp.write(b": connected\n\n")
        while True:
            try:
                kind, data = await asyncio.wait_for(queue.get(), 15)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            await resp.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        state.unsubscribe(queue)
    return resp


def _filter(query: Any) -> tuple[AlertFilter, int]:
    try:
        min_score = float(query.get("min_score") or 0)
        limit = int(query.get("limit") or 200)
    except ValueError:
        raise ValueError("min_score must be a number and limit an integer") from None
    if not (0 <= min_score <= 1) or not (1 <= limit <= 1000):
        raise ValueError("min_score must be within 0..1 and limit within 1..1000")
    status = query.get("status") or "all"
    if status not in ("all", "open", "reviewed"):
        raise ValueError("status must be all, open or reviewed")
    return (
        AlertFilter(
            min_score=min_score,
            channel=(query.get("channel") or "")[:32],
            country=(query.get("country") or "")[:2],
            query=(query.get("q") or "").strip()[:128],
            status=status,
        ),
        limit,
    )


async def _json_body(request: Request) -> Any:
    raw = await request.read()
    if len(raw) > MAX_BODY or "json" not in request.headers.get("Content-Type", ""):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _static_text(name: str) -> str:
    return resources.files("streams.console").joinpath("static", name).read_text("utf-8")


_NO_FRAMES = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
