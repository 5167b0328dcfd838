"""The ``riskstream`` command line.

Errors are one clear line and a non-zero exit; ``--debug`` brings the traceback back.
Commands live in small modules under ``streams/commands``; this module only wires them.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from streams.errors import RiskstreamError
from streams.settings import Settings, load_settings, masked_dump

app = typer.Typer(
    name="riskstream",
    help="Streaming, real-time fraud risk scoring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
_state: dict[str, Any] = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    _state["debug"] = debug


def settings_from(
    bootstrap_servers: str | None = None, redis_url: str | None = None, **extra: Any
) -> Settings:
    """Settings from env with the common CLI flags layered on top."""
    return load_settings(
        **{"kafka.bootstrap_servers": bootstrap_servers, "redis.url": redis_url, **extra}
    )


BOOTSTRAP = typer.Option(None, "--bootstrap-servers", "-b", help="Kafka host:port list.")
REDIS_URL = typer.Option(None, "--redis-url", help="Redis URL (redis:// or rediss://).")


@app.command("config")
def config_cmd(
    bootstrap_servers: str | None = BOOTSTRAP,
    redis_url: str | None = REDIS_URL,
) -> None:
    """Print the effective configuration (env + flags) with secrets masked."""
    settings = settings_from(bootstrap_servers, redis_url)
    typer.echo(json.dumps(masked_dump(settings), indent=2))


@app.command("stack")
def stack_cmd(
    partitions: int = typer.Option(4, min=1, help="Partitions per created topic."),
    redis_cluster: int = typer.Option(
        0,
        "--redis-cluster",
        min=0,
        max=16,
        help="Also start a Redis Cluster of N masters (one replica each) and point at it.",
    ),
) -> None:
    """Run the embedded Kafka broker + Redis in the foreground until Ctrl-C."""
    from contextlib import ExitStack

    from streams.devtools.embedded import running_stack

    topics = Settings().topics.all()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with ExitStack() as servers:
        stack = servers.enter_context(running_stack(topics, partitions))
        cluster = None
        redis_env = f"RISKSTREAM_REDIS__URL={stack.redis_url}"
        if redis_cluster:
            from streams.devtools.embedded_cluster import start_cluster

            cluster = servers.enter_context(start_cluster(redis_cluster))
            redis_env = f"RISKSTREAM_REDIS__URL={cluster.url} RISKSTREAM_REDIS__CLUSTER=true"
        typer.echo(f"kafka  {stack.bootstrap_servers}")
        typer.echo(f"redis  {stack.redis_url}")
        if cluster is not None:
            ports = ",".join(str(n.port) for n in cluster.masters)
            typer.echo(f"redis cluster  {cluster.url} (masters on {ports}, one replica each)")
        typer.echo(
            f"export RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS={stack.bootstrap_servers} {redis_env}"
        )
        typer.echo("topics " + ", ".join(topics) + "  (Ctrl-C stops every server)")
        sys.stdout.flush()
        while not stop.wait(0.5):
            up = stack.kafka.alive() and stack.redis.alive()
            if not up or (cluster is not None and not cluster.alive()):
                raise RiskstreamError("an embedded server exited unexpectedly")
    typer.echo("stopped")


def _register_optional_commands() -> None:
    """Commands added by later modules register themselves here, in one place."""
    from streams.commands import register

    register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning known errors into one line and exit code 1/2."""
    _register_optional_commands()
    try:
        app(args=argv, standalone_mode=False)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("riskstream: interrupted")
        sys.exit(130)
    except Exception as exc:  # the single place errors become one line
        if _state["debug"] or "--debug" in sys.argv:
            raise
        sys.stderr.write(f"riskstream: error: {_one_line(exc)}\n")
        sys.exit(2 if _is_usage_error(exc) else 1)


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """Typer ≥ 0.20 vendors its own click; accept both."""
    import click

    types: list[type[BaseException]] = [click.UsageError]
    try:
        from typer._click.exceptions import UsageError as TyperUsageError

        types.append(TyperUsageError)
    except ImportError:  # pragma: no cover - older typer
        pass
    return tuple(types)


def _is_usage_error(exc: BaseException) -> bool:
    return isinstance(exc, (*_usage_error_types(), ValidationError))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, _usage_error_types()):
        hint = getattr(exc, "param_hint", None) or ""
        name = getattr(getattr(exc, "param", None), "opts", None)
        where = f"{name[0]}: " if name else (f"{hint}: " if isinstance(hint, str) and hint else "")
        return " ".join(f"{where}{exc.format_message()}".split())  # type: ignore[attr-defined]
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        return f"invalid setting {loc}: {msg}" if loc else f"invalid settings: {msg}"
    if isinstance(exc, RiskstreamError):
        return exc.one_line()
    return " ".join(f"{type(exc).__name__}: {exc}".split())


if __name__ == "__main__":  # pragma: no cover
    main()
