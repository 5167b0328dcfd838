"""``riskstream demo``: the whole product on the embedded stack, in one command.

1. start the embedded broker + Redis and a worker process (default model);
2. load 30 days of simulated history for the demo's card holders, as fast as possible;
3. stream live simulated bank traffic at ``--rate`` for ``--duration`` seconds, with a few
   malformed messages mixed in, printing alerts as they arrive;
4. print a summary — events, alerts, precision/recall against the simulator's labels,
   throughput, end-to-end latency p50/p99, dead letters — and stop everything it started.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from streams.kafka.clients import reader
from streams.kafka.consume import ready_messages

console = Console(soft_wrap=True)

MALFORMED = (
    b"\xff\xfe garbage bytes",
    b'{"transaction_id": "bad-1", "user_id": "u1"}',
    b'{"transaction_id": "bad-2", "user_id": "u1", "timestamp": "2026-01-01T00:00:00Z",'
    b' "amount": "-12", "currency": "USD", "mcc": "5411", "channel": "online"}',
    b'{"transaction_id": "bad-3", "user_id": "u1", "timestamp": "yesterday",'
    b' "amount": "12", "currency": "USD", "mcc": "5411", "channel": "online"}',
)


@dataclass
class Watcher:
    """Reads scores, alerts and dead letters in a background thread (assign, no group)."""

    bootstrap: str
    topics: dict[str, str]
    show_alerts: bool = True
    scored_at: dict[str, float] = field(default_factory=dict)
    alerts: dict[str, dict[str, object]] = field(default_factory=dict)
    dead: int = 0
    live_from: float = float("inf")
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="demo-watcher")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        from streams.commands.render import render_alert

        consumer = reader({"bootstrap.servers": self.bootstrap}, list(self.topics.values()))
        try:
            while not self._stop.is_set():
                for msg in ready_messages(consumer, 500, 0.1):
                    if msg.error():
                        continue
                    now = time.monotonic()
                    topic = msg.topic()
                    if topic == self.topics["dlq"]:
                        self.dead += 1
                        continue
                    data = json.loads(msg.value() or b"{}")
                    tx = data["transaction_id"]
                    if topic == self.topics["scores"]:
                        self.scored_at.setdefault(tx, now)
                    elif tx not in self.alerts:
                        self.alerts[tx] = data
                        if self.show_alerts and now >= self.live_from:
                            console.print(render_alert(data), highlight=False, markup=False)
        finally:
            consumer.close()


def _wait_scored(watcher: Watcher, ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(1 for t in ids if t in watcher.scored_at) >= len(ids):
            return
        time.sleep(0.1)


def demo_cmd(
    rate: float = typer.Option(200.0, min=1, max=20_000, help="Live transactions per second."),
    duration: float = typer.Option(60.0, min=1, max=3600, help="Live phase length, seconds."),
    users: int = typer.Option(600, min=10, max=200_000, help="Simulated card holders."),
    fraud_rate: float = typer.Option(0.005, min=0.0, max=0.2, help="Simulated fraud share."),
    seed: int = typer.Option(7, help="Simulator seed."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Artifact (default packaged)."),
    quiet_alerts: bool = typer.Option(False, "--quiet-alerts", help="Summary only."),
    analyst_console: bool = typer.Option(
        False,
        "--console",
        help="Serve the analyst console and keep running after the traffic until Ctrl-C.",
    ),
) -> None:
    """Run the embedded stack, a worker and simulated traffic; show alerts and a summary."""
    from streams.devtools.embedded import running_stack
    from streams.devtools.local_worker import start_worker
    from streams.devtools.simulator import SimulatorConfig, simulate
    from streams.file_producer import rows_as_json
    from streams.kafka.publisher import Publisher
    from streams.settings import Settings

    topics = Settings().topics
    sent_at: dict[str, float] = {}
    live_s = 0.0
    n_live = int(rate * duration)
    days = 30
    table = simulate(
        SimulatorConfig(
            users=users,
            days=days + max(1, n_live // max(users, 1)),
            seed=seed,
            fraud_rate=fraud_rate,
        )
    )
    rows = list(rows_as_json(table, with_labels=False))
    labels = dict(
        zip(
            table.column("transaction_id").to_pylist(),
            table.column("is_fraud").to_pylist(),
            strict=True,
        )
    )
    n_live = min(n_live, len(rows) // 3)
    history, live = rows[: len(rows) - n_live], rows[len(rows) - n_live :]
    console.print(
        f"[bold]riskstream demo[/]: {users} card holders, {len(history)} historical "
        f"and {len(live)} live transactions at {rate:.0f}/s"
    )
    with running_stack(topics.all(), topics.partitions) as stack:
        console.print(
            f"embedded stack up: kafka {stack.bootstrap_servers}, redis {stack.redis_url}"
        )
        workdir = Path(tempfile.mkdtemp(prefix="riskstream-demo-"))
        env = {"RISKSTREAM_MODEL__PATH": str(model)} if model is not None else {}
        if analyst_console:
            env["RISKSTREAM_CONSOLE__ENABLED"] = "true"
        worker = start_worker(stack, workdir, env)
        log_path = worker.log_path
        watcher = Watcher(
            stack.bootstrap_servers,
            {"scores": topics.scores, "alerts": topics.alerts, "dlq": topics.dlq},
            show_alerts=not quiet_alerts,
        )
        try:
            with console.status("starting the worker (model load + warm-up)"):
                worker.wait_ready()
            if analyst_console:
                console.print(
                    f"[bold]analyst console[/]: http://127.0.0.1:{worker.port}/console "
                    "(any name signs in on loopback)"
                )
            watcher.start()
            producer = Publisher({"bootstrap.servers": stack.bootstrap_servers}, linger_ms=5)
            producer.start()
            sent = producer.tracker()
            t0 = time.monotonic()
            with console.status(f"loading {len(history)} historical transactions"):
                for key, value in history:
                    producer.publish(topics.transactions, key, value, sent)
                producer.flush()
                hist_ids = [json.loads(v)["transaction_id"] for _, v in history]
                _wait_scored(watcher, hist_ids, timeout_s=600)
            hist_s = time.monotonic() - t0
            console.print(
                f"history scored: {len(history)} events in {hist_s:.1f}s "
                f"({len(history) / hist_s:,.0f}/s, one worker)"
            )
            watcher.live_from = time.monotonic()
            console.print(f"[bold]live traffic[/] for {duration:.0f}s — alerts appear below")
            start = time.monotonic()
            bad = iter(MALFORMED)
            for i, (key, value) in enumerate(live):
                due = start + i / rate
                delay = due - time.monotonic()
                if delay > 0.002:
                    time.sleep(delay)
                producer.publish(topics.transactions, key, value, sent)
                sent_at[json.loads(value)["transaction_id"]] = time.monotonic()
                if i and i % max(1, len(live) // (len(MALFORMED) + 1)) == 0:
                    payload = next(bad, None)
                    if payload is not None:
                        producer.publish(topics.transactions, "u-malformed", payload, sent)
            producer.flush(60)
            producer.close()
            live_s = time.monotonic() - start
            _wait_scored(watcher, list(sent_at), timeout_s=60)
            time.sleep(1.0)  # let the last alerts and dead letters arrive
            if analyst_console:
                _hold_for_console(worker.port)
        finally:
            watcher.stop()
            worker_rc = worker.stop()
        _summary(watcher, sent_at, labels, live_s, worker_rc, log_path)


def _hold_for_console(port: int) -> None:
    console.print(
        f"traffic done; the console stays at http://127.0.0.1:{port}/console — Ctrl-C to stop"
    )
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping")


def _summary(
    w: Watcher,
    sent_at: dict[str, float],
    labels: dict[str, int],
    live_s: float,
    worker_rc: int | None,
    log_path: Path,
) -> None:
    live_ids = list(sent_at)
    scored = [t for t in live_ids if t in w.scored_at]
    lat = np.array([(w.scored_at[t] - sent_at[t]) * 1000 for t in scored])
    alerted = {t for t in live_ids if t in w.alerts}
    fraud = {t for t in live_ids if labels.get(t)}
    tp = len(alerted & fraud)
    console.print("\n[bold]summary (live phase)[/]")
    console.print(
        f"  events sent        {len(live_ids)}   scored {len(scored)}   "
        f"lost {len(live_ids) - len(scored)}"
    )
    console.print(
        f"  throughput         {len(scored) / max(live_s, 1e-9):,.0f} events/s "
        f"(offered {len(live_ids) / max(live_s, 1e-9):,.0f}/s)"
    )
    if lat.size:
        console.print(
            f"  end-to-end latency p50 {np.percentile(lat, 50):.1f} ms   "
            f"p99 {np.percentile(lat, 99):.1f} ms   (produce → decision on `scores`)"
        )
    console.print(
        f"  alerts             {len(alerted)} ({len(alerted) / max(len(live_ids), 1):.2%})"
    )
    console.print(f"  fraud in traffic   {len(fraud)}   caught {tp}")
    console.print(
        f"  precision          {tp / max(len(alerted), 1):.1%}   "
        f"recall {tp / max(len(fraud), 1):.1%}"
    )
    console.print(f"  dead letters       {w.dead} (planted {len(MALFORMED)})")
    console.print(f"  worker exit code   {worker_rc} (log: {log_path})")
