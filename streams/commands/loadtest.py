"""``riskstream loadtest``: Locust, headless, against a worker on the embedded stack.

Bounded in time (``--duration``) and in rate (``--users`` × ``--rate``); loopback only.
Writes Locust's CSV files and ``summary.json`` (achieved rate, p50/p95/p99 end-to-end
latency, failures) to ``--out``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console

console = Console(soft_wrap=True)
LOCUSTFILE = Path(__file__).resolve().parents[2] / "load_tests" / "locustfile.py"


def register(app: typer.Typer) -> None:
    app.command("loadtest")(loadtest_cmd)


def loadtest_cmd(
    duration: int = typer.Option(30, min=5, max=1800, help="Seconds of load."),
    users: int = typer.Option(4, min=1, max=200, help="Locust users."),
    rate: float = typer.Option(100.0, min=1, max=5000, help="Transactions/s per user."),
    kind: str = typer.Option("kafka", help="kafka (end-to-end) or http (/v1/score)."),
    out: Path = typer.Option(Path("loadtest-results"), "--out", "-o", help="Result folder."),
) -> None:
    """Run Locust headless against the embedded stack and summarise the results."""
    from streams.devtools.embedded import running_stack
    from streams.devtools.local_worker import start_worker
    from streams.settings import Settings

    if kind not in ("kafka", "http"):
        raise typer.BadParameter("use kafka or http", param_hint="--kind")
    if not LOCUSTFILE.exists():
        raise typer.BadParameter(f"{LOCUSTFILE} not found: run from a source checkout")
    import importlib.util

    # find_spec, not import: importing locust monkey-patches this process with gevent,
    # which breaks the threads and child processes of the embedded stack
    if importlib.util.find_spec("locust") is None:
        from streams.errors import MissingExtraError

        raise MissingExtraError("the load extra is missing: pip install 'riskstream[load]'")
    topics = Settings().topics
    out.mkdir(parents=True, exist_ok=True)
    with running_stack(topics.all(), topics.partitions) as stack:
        worker = start_worker(stack, Path(tempfile.mkdtemp(prefix="riskstream-load-")))
        try:
            with console.status("starting the worker"):
                worker.wait_ready()
            user_class = "KafkaTransactionsUser" if kind == "kafka" else "ScoreApiUser"
            env = {
                **os.environ,
                "RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS": stack.bootstrap_servers,
                "LOADTEST_RATE": str(rate),
                "PYTHONPATH": str(LOCUSTFILE.parents[1]),
            }
            console.print(f"locust: {users} × {rate:.0f}/s {kind} for {duration}s")
            started = time.monotonic()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "locust",
                    "-f",
                    str(LOCUSTFILE),
                    "--headless",
                    "-u",
                    str(users),
                    "-r",
                    str(users),
                    "-t",
                    f"{duration}s",
                    "--csv",
                    str(out / "locust"),
                    "--only-summary",
                    "--stop-timeout",
                    "10",
                    "--host",
                    f"http://127.0.0.1:{worker.port}",
                    user_class,
                ],
                env=env,
                check=False,
                timeout=duration + 120,
            )
            elapsed = time.monotonic() - started
        finally:
            worker.stop()
    summary = summarize(out / "locust_stats.csv", kind, elapsed)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print_json(json.dumps(summary))


def summarize(stats_csv: Path, kind: str, elapsed: float) -> dict[str, object]:
    """Pick the latency row out of Locust's stats CSV."""
    name = "e2e" if kind == "kafka" else "/v1/score"
    with stats_csv.open() as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    row = rows.get(name) or {}
    failures = sum(
        int(r.get("Failure Count", 0) or 0) for r in rows.values() if r["Name"] != "Aggregated"
    )
    return {
        "kind": kind,
        "requests": int(row.get("Request Count", 0) or 0),
        "achieved_rate_per_s": float(row.get("Requests/s", 0) or 0),
        "p50_ms": float(row.get("50%", 0) or 0),
        "p95_ms": float(row.get("95%", 0) or 0),
        "p99_ms": float(row.get("99%", 0) or 0),
        "failures": failures,
        "wall_s": round(elapsed, 1),
    }
