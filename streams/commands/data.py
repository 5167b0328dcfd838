"""``simulate`` and ``produce``: make labelled traffic and publish it to Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from features.errors import RiskstreamError

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("simulate")(simulate_cmd)
    app.command("produce")(produce_cmd)


def _parse_start(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO date: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def simulate_cmd(
    users: int = typer.Option(1000, min=1, max=5_000_000, help="Number of card holders."),
    days: int = typer.Option(30, min=1, max=3650, help="Length of the period."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical files."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .parquet, .csv or .jsonl file."),
    fraud_rate: float = typer.Option(0.003, min=0.0, max=0.5, help="Share of fraudulent tx."),
    start: str = typer.Option("2026-01-01", help="First day (ISO date, UTC)."),
    summary: bool = typer.Option(False, "--summary", help="Print per-scenario counts."),
) -> None:
    """Write labelled simulated transactions to a file."""
    from features.labelled_files import file_format, write_table
    from streams.devtools.simulator import SimulatorConfig, simulate, summarize

    file_format(out)
    cfg = SimulatorConfig(
        users=users, days=days, seed=seed, fraud_rate=fraud_rate, start=_parse_start(start)
    )
    with console.status(f"simulating {users} users over {days} days"):
        table = simulate(cfg)
        write_table(table, out)
    console.print(f"wrote {table.num_rows} transactions to {out}")
    if summary:
        typer.echo(json.dumps(summarize(table), indent=2))


def produce_cmd(
    file: Path | None = typer.Option(None, "--file", "-f", help="Labelled file to publish."),
    simulate_users: int = typer.Option(
        0, "--simulate-users", min=0, help="Publish a fresh simulation instead of a file."
    ),
    days: int = typer.Option(7, min=1, help="Days to simulate with --simulate-users."),
    seed: int = typer.Option(0, help="Simulator seed."),
    rate: float | None = typer.Option(None, min=0.1, help="Messages per second (default: max)."),
    replay: float | None = typer.Option(
        None, min=0.001, help="Keep event-time gaps, sped up by this factor."
    ),
    limit: int | None = typer.Option(None, min=1, help="Stop after this many messages."),
    with_labels: bool = typer.Option(False, "--with-labels", help="Include is_fraud (tests)."),
    topic: str | None = typer.Option(None, help="Topic (default: settings' transactions)."),
    column_map: str | None = typer.Option(
        None, "--map", help="Map a foreign layout onto the contract: a preset or a YAML file."
    ),
    trace_ratio: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Share of messages sent with a new sampled traceparent."
    ),
    bootstrap_servers: str | None = typer.Option(None, "--bootstrap-servers", "-b"),
) -> None:
    """Publish transactions to Kafka (key = user_id), batching with linger + poll(0)."""
    from features.labelled_files import iter_batches
    from streams.cli import settings_from
    from streams.devtools.simulator import SimulatorConfig, simulate
    from streams.file_producer import produce_batches
    from streams.kafka.publisher import Publisher

    if (file is None) == (simulate_users == 0):
        raise typer.BadParameter("give exactly one of --file or --simulate-users")
    if rate and replay:
        raise typer.BadParameter("--rate and --replay are exclusive")
    settings = settings_from(bootstrap_servers)
    if file is not None:
        mapping = None
        if column_map is not None:
            from features.column_mapping import load_mapping

            mapping = load_mapping(column_map)
        batches = iter_batches(file, mapping=mapping)
        total = None
    else:
        table = simulate(SimulatorConfig(users=simulate_users, days=days, seed=seed))
        batches = iter(table.to_batches(65_536))
        total = table.num_rows
    k = settings.kafka
    publisher = Publisher(
        k.confluent_config(), linger_ms=k.linger_ms, message_timeout_ms=k.message_timeout_ms
    )
    publisher.start()
    with Progress(
        TextColumn("producing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("produce", total=limit or total)
        report = produce_batches(
            publisher,
            topic or settings.topics.transactions,
            batches,
            rate=rate,
            replay_factor=replay,
            with_labels=with_labels,
            limit=limit,
            progress=lambda k: bar.advance(task, k),
            trace_ratio=trace_ratio,
        )
    if report.failed:
        raise RiskstreamError(
            f"{report.failed} of {report.sent} messages failed: {report.last_error}"
        )
    console.print(
        f"delivered {report.delivered} messages in {report.seconds:.1f}s ({report.rate:,.0f} msg/s)"
    )
