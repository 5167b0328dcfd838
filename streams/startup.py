"""Before the Faust app starts: wait for the broker while /healthz already answers.

Faust's own producer gives up at once when the broker is unreachable, and an orchestrator
would kill a worker whose liveness probe gets no answer while it waits. So the worker
first creates its topics (off the event loop: the admin client polls) behind a small
placeholder server on the HTTP port — ``/healthz`` 200, ``/readyz`` 503 — and only then
hands the port and the loop to Faust. A broker still absent after
``kafka.startup_timeout_s`` is an infrastructure failure (exit 70, one line).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from streams.errors import InfrastructureError
from streams.kafka.admin import ensure_topics
from streams.settings import Settings

log = logging.getLogger(__name__)


async def wait_for_broker(settings: Settings) -> None:
    """Create the topics, retrying until the broker answers or the start-up time is up."""
    runner = None
    if settings.http.port:
        app = web.Application()
        app.router.add_get("/healthz", _health)
        app.router.add_get("/readyz", _not_ready)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.http.host, settings.http.port).start()
    k, t = settings.kafka, settings.topics
    deadline = time.monotonic() + k.startup_timeout_s
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                await loop.run_in_executor(
                    None,
                    ensure_topics,
                    k.confluent_config(),
                    t.all(),
                    t.partitions,
                    t.replication_factor,
                    5.0,
                )
                return
            except InfrastructureError as exc:
                if time.monotonic() >= deadline:
                    raise InfrastructureError(
                        f"the broker at {k.bootstrap_servers} did not answer within "
                        f"{k.startup_timeout_s:.0f} s: {exc.one_line()}"
                    ) from None
                log.warning("waiting for the broker at %s: %s", k.bootstrap_servers, exc)
                await asyncio.sleep(1.0)
    finally:
        if runner is not None:
            await runner.cleanup()


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "phase": "waiting for the broker"})


async def _not_ready(_request: web.Request) -> web.Response:
    return web.json_response({"ready": False, "broker": False}, status=503)
