"""End-to-end throughput and latency of one worker, beside a trivial Faust forwarder.

    python -m benchmarks.bench_e2e [--events 20000] [--rates 200,500] [--seconds 20]

All on the embedded stack, in one run: (1) the trivial per-event forwarder's throughput;
(2) the riskstream worker's throughput, events produced as fast as possible, until all
are scored; (3) produce → decision-on-``scores`` latency at a fixed rate; (4) the same two
Kafka hops through a plain confluent-kafka relay at the same rates: the broker's floor.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from benchmarks.common import CpuMeter, assigned_reader, report
from features.simulator import SimulatorConfig, simulate
from streams.consume import ready_messages
from streams.embedded import running_stack
from streams.local_worker import start_worker
from streams.producer import rows_as_json
from streams.settings import Settings


def _count_until(
    consumer: Consumer, n: int, timeout_s: float, key: str | None = None
) -> tuple[float, dict[str, float]]:
    seen: dict[str, float] = {}
    count = 0
    deadline = time.monotonic() + timeout_s
    last = float("nan")  # stays NaN if nothing arrives: never a fake rate
    while count < n and time.monotonic() < deadline:
        for m in ready_messages(consumer, 1000, 0.05):
            if m.error():
                continue
            now = time.monotonic()
            if key is None:
                count += 1
            else:
                tx = json.loads(m.value())[key]
                if tx not in seen:
                    seen[tx] = now
                    count += 1
            last = now
    return last, seen


def _produce(
    bootstrap: str, topic: str, rows: list[tuple[str, bytes]], rate: float | None = None
) -> dict[str, float]:
    p = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 2, "queue.buffering.max.messages": 500_000}
    )
    sent = {}
    start = time.monotonic()
    for i, (k, v) in enumerate(rows):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0.001:
                time.sleep(delay)
        p.produce(topic, key=k, value=v)
        p.poll(0)
        if rate:
            sent[json.loads(v)["transaction_id"]] = time.monotonic()
    p.flush(60)
    return sent


def _kafka_floor(bootstrap: str, rate: float, n: int) -> dict[str, float]:
    """Produce → relay process (confluent consume + produce) → consume: the broker path.

    The same two Kafka hops a decision takes (into the worker, out to ``scores``), with
    no Faust and no scoring, measured the same way: what no worker can go below.
    """
    relay = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.kafka_relay", bootstrap, "floor-in", "floor-out"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert relay.stdout is not None
        relay.stdout.readline()  # "ready": assigned at the end of floor-in
        out = assigned_reader(bootstrap, "floor-out")
        rows = [(str(i), json.dumps({"transaction_id": f"f{rate}-{i}"}).encode()) for i in range(n)]
        sent: dict[str, float] = {}
        producer = threading.Thread(
            target=lambda: sent.update(_produce(bootstrap, "floor-in", rows, rate=rate))
        )
        time.sleep(1)
        producer.start()
        _, seen = _count_until(out, n, 120, key="transaction_id")
        producer.join()
        out.close()
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(10)
    lat = np.array([(seen[t] - sent[t]) * 1000 for t in sent if t in seen])
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rates", default="200,500", help="Fixed rates for the latency runs.")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra RISKSTREAM_* setting for the worker (repeatable), e.g. to compare tunings.",
    )
    args = ap.parse_args()
    worker_env = dict(kv.split("=", 1) for kv in args.worker_env)
    topics = Settings().topics
    table = simulate(SimulatorConfig(users=3000, days=30, seed=5))
    rows = list(rows_as_json(table, with_labels=False))
    rates = [float(r) for r in args.rates.split(",")]
    bulk = rows[: args.events]
    paced_sets, start = [], args.events
    for rate in rates:
        n = int(rate * args.seconds)
        paced_sets.append(rows[start : start + n])
        start += n
    topic_names = [*topics.all(), "bench-in", "bench-out", "floor-in", "floor-out"]
    with running_stack(topic_names, topics.partitions) as stack:
        bs = stack.bootstrap_servers
        # (1) trivial forwarder: per-event `await topic.send()`
        env = {**os.environ, "BENCH_BROKER": bs, "BENCH_DATADIR": tempfile.mkdtemp()}
        fwd = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.trivial_agent", "worker", "-l", "warn"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        out = assigned_reader(bs, "bench-out")
        _produce(bs, "bench-in", bulk[:200])  # warm-up: group join, first fetches
        _count_until(out, 200, 60)
        meter = CpuMeter({"broker": stack.kafka.pid, "redis": stack.redis.pid, "agent": fwd.pid})
        t0 = time.monotonic()
        _produce(bs, "bench-in", bulk)
        last, _ = _count_until(out, len(bulk), 300)
        trivial_rate = len(bulk) / (last - t0)  # NaN if the forwarder produced nothing
        trivial_cpu = meter.per_event_ms(len(bulk))
        fwd.send_signal(signal.SIGTERM)
        fwd.wait(30)
        out.close()
        # (2) riskstream worker, produced as fast as possible
        worker = start_worker(stack, Path(tempfile.mkdtemp(prefix="bench-e2e-")), worker_env)
        worker.wait_ready()
        scores = assigned_reader(bs, topics.scores)
        meter = CpuMeter(
            {"broker": stack.kafka.pid, "redis": stack.redis.pid, "worker": worker.proc.pid}
        )
        t0 = time.monotonic()
        _produce(bs, topics.transactions, bulk)
        last, seen = _count_until(scores, len(bulk), 600, key="transaction_id")
        worker_rate = len(seen) / (last - t0)
        worker_cpu = meter.per_event_ms(len(bulk))
        # (3) fixed-rate latency, one run per rate
        latency = {}
        for rate, paced in zip(rates, paced_sets, strict=True):
            time.sleep(2)
            sent: dict[str, float] = {}
            producer = threading.Thread(  # read decisions while producing, not after
                target=lambda p=paced, r=rate, out=sent: out.update(
                    _produce(bs, topics.transactions, p, rate=r)
                )
            )
            producer.start()
            _, seen2 = _count_until(scores, len(paced), 180, key="transaction_id")
            producer.join()
            lat = np.array([(seen2[t] - sent[t]) * 1000 for t in sent if t in seen2])
            latency[f"{rate:.0f}/s"] = {
                "events": len(paced),
                "scored": int(lat.size),
                "p50_ms": round(float(np.percentile(lat, 50)), 1),
                "p99_ms": round(float(np.percentile(lat, 99)), 1),
            }
        worker.stop()
        scores.close()
        # (4) the broker path alone at the same rates (after the worker stopped)
        floor = {
            f"{rate:.0f}/s": _kafka_floor(bs, rate, int(rate * args.seconds)) for rate in rates
        }
    report(
        "e2e",
        worker_env=worker_env,
        events=len(bulk),
        trivial_forwarder_events_per_s=round(trivial_rate),
        worker_events_per_s=round(worker_rate),
        ratio_worker_over_trivial=round(worker_rate / trivial_rate, 2),
        cpu_ms_per_event={"trivial_phase": trivial_cpu, "worker_phase": worker_cpu},
        produce_to_decision_latency=latency,
        kafka_two_hop_floor_latency=floor,
    )


if __name__ == "__main__":
    main()
