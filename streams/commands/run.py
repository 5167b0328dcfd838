"""``worker``, ``alerts`` and ``demo``: run the service and watch what it decides."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from streams.commands.demo import demo_cmd


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("worker")(worker_cmd)
    app.command("alerts")(alerts_cmd)
    app.command("demo")(demo_cmd)


def worker_cmd(
    bootstrap_servers: str | None = typer.Option(None, "--bootstrap-servers", "-b"),
    redis_url: str | None = typer.Option(None, "--redis-url"),
    model: Path | None = typer.Option(None, "--model", "-m", help="Artifact folder."),
    port: int | None = typer.Option(None, "--port", help="HTTP port (0 disables)."),
    max_batch: int | None = typer.Option(None, "--max-batch", min=1, max=4096),
    max_wait_ms: float | None = typer.Option(None, "--max-wait-ms", min=0),
) -> None:
    """Run the streaming scoring worker (Faust) in the foreground."""
    from streams.app import run_worker
    from streams.cli import settings_from

    if model is not None and not (model / "model.json").exists():
        raise typer.BadParameter(f"{model}: not a model artifact", param_hint="--model")
    settings = settings_from(
        bootstrap_servers,
        redis_url,
        **{
            "model.path": str(model) if model else None,
            "http.port": port,
            "batch.max_batch": max_batch,
            "batch.max_wait_ms": max_wait_ms,
        },
    )
    run_worker(settings)


def alerts_cmd(
    bootstrap_servers: str | None = typer.Option(None, "--bootstrap-servers", "-b"),
    as_json: bool = typer.Option(False, "--json", help="One JSON alert per line."),
    from_beginning: bool = typer.Option(False, "--from-beginning"),
    limit: int | None = typer.Option(None, min=1, help="Stop after this many alerts."),
    timeout: float | None = typer.Option(None, min=0.1, help="Stop after this many idle seconds."),
) -> None:
    """Tail the alerts topic in a readable form (Ctrl-C stops)."""
    import time
    import uuid

    from streams.cli import settings_from
    from streams.commands.render import render_alert
    from streams.kafka.clients import consumer as kafka_consumer

    settings = settings_from(bootstrap_servers)
    consumer = kafka_consumer(
        settings.kafka.confluent_config(),
        f"riskstream-alerts-{uuid.uuid4().hex[:8]}",
        **{
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "session.timeout.ms": settings.kafka.session_timeout_ms,
        },
    )
    consumer.subscribe([settings.topics.alerts])
    seen = 0
    last = time.monotonic()
    try:
        while limit is None or seen < limit:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                if timeout is not None and time.monotonic() - last > timeout:
                    break
                continue
            last = time.monotonic()
            alert = json.loads(msg.value() or b"{}")
            typer.echo(json.dumps(alert) if as_json else render_alert(alert))
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
