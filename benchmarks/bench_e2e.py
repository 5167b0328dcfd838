"""End-to-end throughput and latency of one worker, beside a trivial Faust forwarder.

    python -m benchmarks.bench_e2e [--events 20000] [--rates 200,500] [--seconds 20] [--rounds 3]
        [--redis-cluster 3] [--steady-users 600]

All on the embedded stack, in one run: (1) the trivial per-event forwarder's throughput,
stock Faust (the yardstick) and with the worker's consumer tuning (streams/faust_tuning);
(2) the riskstream worker's throughput, events produced as fast as possible, until all
are scored; (3) produce → decision-on-``scores`` latency at a fixed rate, after a warm-up
of ``--warmup`` events (card holders with history, a warm cache); (4) the same two Kafka
hops through a plain confluent-kafka relay at the same rates: the broker's floor.
With ``--steady-users``, (5) card holders with weeks of history, streamed oldest first.
(6) ``POST /v1/score`` for warm card holders, sequential and from 8 concurrent clients
(``benchmarks.bench_http``; ``--http-requests 0`` skips it).
With ``--redis-cluster N``, phases (2) and (5) also run with the state on an embedded
cluster of N masters and on one Redis feeding a replica (the like-for-like control), and
report each side's Redis CPU per event (for (5), over the second half, when the keys
exist).

Every phase, and every rate, gets a fresh embedded stack. Tansu's memory storage costs
more per message the more messages it holds (measured: 0.76 → 2.0 ms of broker CPU per
event at 500 tx/s as a topic grows from 0 to 200k messages), so on one long-lived broker
each phase would pay for the ones before it, and the order of phases would decide the
figures. A Kafka broker's cost does not grow with its log; these figures are the worker's.

The phases run ``--rounds`` times, alternating, and the figures are medians over rounds:
this host's speed drifts by up to 2x within minutes, so a ratio of two figures taken
minutes apart says more about the host than about the worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer

from benchmarks.bench_http import endpoint_medians, polling_env, request_set, score_endpoint_latency
from benchmarks.common import (
    CpuMeter,
    assigned_reader,
    cpu_seconds,
    redis_cpu_seconds,
    replicate,
    report,
)
from benchmarks.worker_metrics import phase_split, scrape
from streams.devtools.embedded import EmbeddedStack, _start_redis, running_stack
from streams.devtools.embedded_cluster import (
    PRODUCTION_NODE_TIMEOUT_MS,
    EmbeddedRedisCluster,
    start_cluster,
)
from streams.devtools.local_worker import start_worker
from streams.devtools.otlp_receiver import OtlpReceiver
from streams.devtools.simulator import SimulatorConfig, simulate
from streams.file_producer import rows_as_json
from streams.kafka.consume import ready_messages
from streams.kafka.publisher import Publisher
from streams.settings import Settings


def count_until(
    consumer: Consumer, n: int, timeout_s: float, key: str | None = None
) -> tuple[float, dict[str, float]]:
    """Consume until ``n`` messages (distinct ``key`` values when given) have arrived;
    returns the last arrival and, with ``key``, each value's first arrival. The driver
    shares the cores with the worker, so while it counts it only stamps arrivals: the
    JSON is parsed when the raw count says ``n`` may be in."""
    seen: dict[str, float] = {}
    raw: list[tuple[float, bytes]] = []
    parsed = 0
    deadline = time.monotonic() + timeout_s
    last = float("nan")  # stays NaN if nothing arrives: never a fake rate
    while time.monotonic() < deadline:
        for m in ready_messages(consumer, 1000, 0.05):
            if m.error():
                continue
            last = time.monotonic()
            raw.append((last, m.value() or b"{}"))
        if key is None:
            if len(raw) >= n:
                break
            continue
        if len(raw) - parsed + len(seen) >= n:
            for at, value in raw[parsed:]:
                seen.setdefault(json.loads(value).get(key), at)
            parsed = len(raw)
            if len(seen) >= n:
                break
    return last, seen


def produce_rows(
    bootstrap: str, topic: str, rows: list[tuple[str, bytes]], rate: float | None = None
) -> dict[str, float]:
    """Publish ``rows`` (key, JSON value); with ``rate``, paced at that many per second,
    and returns each value's ``transaction_id`` with when it was sent."""
    p = Publisher({"bootstrap.servers": bootstrap}, linger_ms=2)
    p.start()
    tracker = p.tracker()
    sent = {}
    start = time.monotonic()
    for i, (k, v) in enumerate(rows):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0.001:
                time.sleep(delay)
        p.publish(topic, k, v, tracker)
        if rate:
            sent[json.loads(v)["transaction_id"]] = time.monotonic()
    p.flush(60)
    return sent


def _trivial_phase(
    stack: EmbeddedStack, bulk: list[tuple[str, bytes]], tuned: bool
) -> tuple[float, Any]:
    bs = stack.bootstrap_servers
    env = {
        **os.environ,
        "BENCH_BROKER": bs,
        "BENCH_DATADIR": tempfile.mkdtemp(),
        "BENCH_TUNED": "1" if tuned else "0",
    }
    fwd = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.trivial_agent", "worker", "-l", "warn"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = assigned_reader(bs, "bench-out")
    produce_rows(bs, "bench-in", bulk[:200])  # warm-up: group join, first fetches
    count_until(out, 200, 60)
    meter = CpuMeter({"broker": stack.kafka.pid, "redis": stack.redis.pid, "agent": fwd.pid})
    t0 = time.monotonic()
    produce_rows(bs, "bench-in", bulk)
    last, _ = count_until(out, len(bulk), 300)
    rate = len(bulk) / (last - t0)  # NaN if the forwarder produced nothing
    cpu = meter.per_event_ms(len(bulk))
    fwd.send_signal(signal.SIGTERM)
    fwd.wait(30)
    out.close()
    return rate, cpu


def _paced(
    bs: str, topic: str, reader: Consumer, rows: list[tuple[str, bytes]], rate: float
) -> dict[str, float]:
    """Produce ``rows`` at ``rate`` while reading decisions; latency percentiles."""
    sent: dict[str, float] = {}
    producer = threading.Thread(  # read decisions while producing, not after
        target=lambda: sent.update(produce_rows(bs, topic, rows, rate=rate))
    )
    producer.start()
    _, seen = count_until(reader, len(rows), 180, key="transaction_id")
    producer.join()
    lat = np.array([(seen[t] - sent[t]) * 1000 for t in sent if t in seen])
    return {
        "events": len(rows),
        "scored": int(lat.size),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def _worker_latency(
    warm: list[tuple[str, bytes]],
    paced: list[tuple[str, bytes]],
    rate: float,
    worker_env: dict[str, str],
) -> dict[str, Any]:
    topics = Settings().topics
    with running_stack(topics.all(), topics.partitions) as stack:
        bs = stack.bootstrap_servers
        worker = start_worker(stack, Path(tempfile.mkdtemp(prefix="bench-e2e-")), worker_env)
        worker.wait_ready()
        scores = assigned_reader(bs, topics.scores)
        produce_rows(bs, topics.transactions, warm)
        count_until(scores, len(warm), 120, key="transaction_id")
        time.sleep(1)
        meter = CpuMeter({"broker": stack.kafka.pid, "worker": worker.proc.pid})
        before = scrape(worker.port)
        figures: dict[str, Any] = {**_paced(bs, topics.transactions, scores, paced, rate)}
        figures["cpu_ms_per_event"] = meter.per_event_ms(len(paced))
        figures["worker_split"] = phase_split(before, scrape(worker.port))
        worker.stop()
        scores.close()
    return figures


def _kafka_floor(n_warm: int, rate: float, n: int) -> dict[str, Any]:
    """Produce → relay process (confluent consume + produce) → consume: the broker path.

    The same two Kafka hops a decision takes (into the worker, out to ``scores``), with
    no Faust and no scoring, measured the same way, after as many warm-up messages: what
    no worker can go below.
    """
    with running_stack(["floor-in", "floor-out"], Settings().topics.partitions) as stack:
        bs = stack.bootstrap_servers
        relay = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.kafka_relay", bs, "floor-in", "floor-out"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert relay.stdout is not None
            relay.stdout.readline()  # "ready": assigned at the end of floor-in
            out = assigned_reader(bs, "floor-out")
            rows = [
                (str(i), json.dumps({"transaction_id": f"f{rate}-{i}"}).encode())
                for i in range(n_warm + n)
            ]
            produce_rows(bs, "floor-in", rows[:n_warm])
            count_until(out, n_warm, 120, key="transaction_id")
            time.sleep(1)
            figures = _paced(bs, "floor-in", out, rows[n_warm:], rate)
            out.close()
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(10)
    return {"p50_ms": figures["p50_ms"], "p99_ms": figures["p99_ms"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rates", default="200,500", help="Fixed rates for the latency runs.")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument(
        "--warmup", type=int, default=3000, help="Events scored before each latency run."
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Rounds of every phase, alternating; figures are medians over rounds.",
    )
    ap.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra RISKSTREAM_* setting for the worker (repeatable), e.g. to compare tunings.",
    )
    ap.add_argument(
        "--steady-users",
        type=int,
        default=0,
        help="Also run the steady-state phase with this many card holders (0: skip).",
    )
    ap.add_argument("--steady-days", type=int, default=30)
    ap.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        metavar="N",
        help="Also run the throughput phase with state on an embedded Redis Cluster of N "
        "masters (one replica each), in the same rounds (0: skip).",
    )
    ap.add_argument(
        "--cluster-node-timeout-ms",
        type=int,
        default=PRODUCTION_NODE_TIMEOUT_MS,
        help="The cluster nodes' cluster-node-timeout: valkey's default, as in production "
        "(the tests' embedded cluster uses 1 s for fast failover; its pings cost idle CPU).",
    )
    ap.add_argument(
        "--http-requests",
        type=int,
        default=400,
        help="POST /v1/score phase: sequential requests per round for warm card holders, "
        "then 8 clients at --http-rate for --http-seconds (0: skip the phase).",
    )
    ap.add_argument("--http-rate", type=float, default=500)
    ap.add_argument("--http-seconds", type=float, default=5)
    ap.add_argument(
        "--otlp-receiver",
        action="store_true",
        help="Run an OTLP receiver here and point the worker's tracing at it (with "
        "--worker-env RISKSTREAM_TRACING__ENABLED=true): what tracing costs, end to end.",
    )
    args = ap.parse_args()
    worker_env = dict(kv.split("=", 1) for kv in args.worker_env)
    with contextlib.ExitStack() as stack:
        receiver = None
        if args.otlp_receiver:
            receiver = stack.enter_context(OtlpReceiver())
            worker_env["RISKSTREAM_TRACING__OTLP_ENDPOINT"] = receiver.endpoint
        _run(args, worker_env, receiver)


def _run(args: argparse.Namespace, worker_env: dict[str, str], receiver: Any) -> None:
    topics = Settings().topics
    table = simulate(SimulatorConfig(users=3000, days=30, seed=5))
    rows = list(rows_as_json(table, with_labels=False))
    rates = [float(r) for r in args.rates.split(",")]
    bulk = rows[: args.events]
    paced_sets, start = [], args.events + args.warmup
    for rate in rates:
        n = int(rate * args.seconds)
        paced_sets.append(rows[start : start + n])
        start += n
    start = args.events
    warm = rows[start : start + args.warmup]
    # Throughput, alternating the three in each round (the host drifts; a ratio is taken
    # from figures measured side by side): (1) trivial forwarder, stock Faust (the
    # yardstick), (1b) the same with the worker's consumer tuning, (2) the worker.
    trivial: list[tuple[float, Any]] = []
    tuned: list[tuple[float, Any]] = []
    scored: list[tuple[float, Any]] = []
    clustered: list[tuple[float, Any]] = []
    replicated: list[tuple[float, Any]] = []
    for _ in range(args.rounds):
        with running_stack(["bench-in", "bench-out"], topics.partitions) as stack:
            trivial.append(_trivial_phase(stack, bulk, tuned=False))
        with running_stack(["bench-in", "bench-out"], topics.partitions) as stack:
            tuned.append(_trivial_phase(stack, bulk, tuned=True))
        scored.append(_worker_throughput(bulk, worker_env))
        if args.redis_cluster:  # the same worker, state on a cluster, same round
            replicated.append(_worker_throughput(bulk, worker_env, replica=True))
            clustered.append(
                _worker_throughput(
                    bulk,
                    worker_env,
                    args.redis_cluster,
                    node_timeout_ms=args.cluster_node_timeout_ms,
                )
            )
    # (3) fixed-rate latency and (4) the broker path alone, each on a fresh stack
    latency: dict[str, list[dict[str, Any]]] = {}
    floor: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for rate, paced in zip(rates, paced_sets, strict=True):
            key = f"{rate:.0f}/s"
            latency.setdefault(key, []).append(_worker_latency(warm, paced, rate, worker_env))
            floor.setdefault(key, []).append(_kafka_floor(len(warm), rate, len(paced)))
    steady: list[dict[str, Any]] = []
    steady_ratio: list[float] = []
    for _ in range(args.rounds if args.steady_users else 0):  # single, replicated, cluster
        steady.append(_steady_phase(worker_env, args.steady_users, args.steady_days))
        if args.redis_cluster:
            control = _steady_phase(worker_env, args.steady_users, args.steady_days, replica=True)
            on_cluster = _steady_phase(
                worker_env,
                args.steady_users,
                args.steady_days,
                args.redis_cluster,
                args.cluster_node_timeout_ms,
            )
            steady += [
                {"redis_replica": True, **control},
                {"redis_cluster_masters": args.redis_cluster, **on_cluster},
            ]
            key = "redis_masters_us_per_event_second_half"
            if control[key] and on_cluster[key]:
                steady_ratio.append(round(on_cluster[key] / control[key], 2))
    # (6) POST /v1/score for warm card holders, the worker polling Kafka as in production
    # (benchmarks.bench_http says why that matters); --worker-env still wins
    endpoint: list[dict[str, Any]] = []
    if args.http_requests:
        history, bodies = request_set()
        env = {**polling_env(), **worker_env}
        for _ in range(args.rounds):
            endpoint.append(
                score_endpoint_latency(
                    env, history, bodies, args.http_requests, args.http_rate, args.http_seconds
                )
            )
    rates_of = {
        "trivial": [r for r, _ in trivial],
        "tuned": [r for r, _ in tuned],
        "worker": [r for r, _ in scored],
    }
    med = {k: float(np.median(v)) for k, v in rates_of.items()}
    report(
        "e2e",
        worker_env=worker_env,
        events=len(bulk),
        rounds=args.rounds,
        trivial_forwarder_events_per_s=round(med["trivial"]),
        worker_events_per_s=round(med["worker"]),
        ratio_worker_over_trivial=round(med["worker"] / med["trivial"], 2),
        ratio_per_round=[
            round(w / t, 2) for w, t in zip(rates_of["worker"], rates_of["trivial"], strict=True)
        ],
        trivial_forwarder_with_worker_tuning_events_per_s=round(med["tuned"]),
        ratio_worker_over_tuned_trivial=round(med["worker"] / med["tuned"], 2),
        events_per_s_per_round={k: [round(r) for r in v] for k, v in rates_of.items()},
        cpu_ms_per_event_last_round={
            "trivial_phase": trivial[-1][1],
            "tuned_trivial_phase": tuned[-1][1],
            "worker_phase": scored[-1][1],
        },
        warmup_events_before_each_latency_run=len(warm),
        produce_to_decision_latency=_medians(latency),
        produce_to_decision_latency_per_round=latency,
        kafka_two_hop_floor_latency=_medians(floor),
        spans_received=None if receiver is None else len(receiver.spans()),
        redis_cluster=_cluster_figures(scored, replicated, clustered, args.redis_cluster),
        cluster_node_timeout_ms=args.cluster_node_timeout_ms if args.redis_cluster else None,
        steady_state=steady or None,
        # the cluster's masters ÷ the replicated master, Redis CPU per event in steady state
        steady_redis_cpu_cluster_masters_over_replicated_master_per_round=steady_ratio or None,
        score_endpoint_latency=endpoint_medians(endpoint) if endpoint else None,
        score_endpoint_latency_per_round=endpoint or None,
    )


def _state_servers(
    servers: contextlib.ExitStack,
    stack: EmbeddedStack,
    env: dict[str, str],
    replica: bool,
    cluster_masters: int,
    node_timeout_ms: int,
) -> dict[str, int]:
    """Where a phase keeps its state, by name → port (``redis_master_i``,
    ``redis_replica_i``): the stack's Redis, fed to a replica when ``replica``, or an
    embedded cluster of ``cluster_masters`` (``env`` then points the worker at it). Every
    server added here stops with ``servers``."""
    ports = {"redis_master_0": stack.redis.port}
    if replica:
        follower = _start_redis(Path(tempfile.mkdtemp(prefix="bench-e2e-replica-")))
        servers.callback(follower.stop)
        replicate(stack.redis.port, follower.port)
        ports["redis_replica_0"] = follower.port
    if cluster_masters:
        cluster = _state_on_cluster(servers, env, cluster_masters, node_timeout_ms)
        ports = {f"redis_master_{i}": n.port for i, n in enumerate(cluster.masters)}
        ports |= {f"redis_replica_{i}": n.port for i, n in enumerate(cluster.replicas)}
    return ports


def _state_on_cluster(
    servers: contextlib.ExitStack, env: dict[str, str], masters: int, node_timeout_ms: int
) -> EmbeddedRedisCluster:
    """Start an embedded cluster for the phase (stopped with ``servers``) and point the
    worker's ``env`` at it."""
    cluster = servers.enter_context(start_cluster(masters, node_timeout_ms=node_timeout_ms))
    env |= {"RISKSTREAM_REDIS__URL": cluster.url, "RISKSTREAM_REDIS__CLUSTER": "true"}
    return cluster


def _worker_throughput(
    bulk: list[tuple[str, bytes]],
    worker_env: dict[str, str],
    cluster_masters: int = 0,
    replica: bool = False,
    node_timeout_ms: int = PRODUCTION_NODE_TIMEOUT_MS,
) -> tuple[float, Any]:
    """The worker's rate with events produced as fast as possible, until all are scored.

    ``cluster_masters``: state on an embedded Redis Cluster of that many masters (one
    replica each) instead of one Redis; its CPU is the sum over every node, replicas
    included (they apply the same writes), and ``redis_masters`` the masters' alone.
    ``replica``: the one Redis has a replica too (the like-for-like control for a
    cluster whose masters each feed one)."""
    topics = Settings().topics
    with contextlib.ExitStack() as servers:
        stack = servers.enter_context(running_stack(topics.all(), topics.partitions))
        env = dict(worker_env)
        redis_ports = _state_servers(servers, stack, env, replica, cluster_masters, node_timeout_ms)
        worker = start_worker(stack, Path(tempfile.mkdtemp(prefix="bench-e2e-")), env)
        worker.wait_ready()
        scores = assigned_reader(stack.bootstrap_servers, topics.scores)
        meter = CpuMeter(
            {"broker": stack.kafka.pid, "worker": worker.proc.pid}, redis_ports=redis_ports
        )
        t0 = time.monotonic()
        produce_rows(stack.bootstrap_servers, topics.transactions, bulk)
        last, seen = count_until(scores, len(bulk), 600, key="transaction_id")
        rate = len(seen) / (last - t0)
        cpu = meter.per_event_ms(len(bulk))
        masters = sum(v for k, v in cpu.items() if k.startswith("redis_master_"))
        replicas = sum(v for k, v in cpu.items() if k.startswith("redis_replica_"))
        cpu["redis_masters"] = round(masters, 4)
        cpu["redis"] = round(masters + replicas, 4)
        worker.stop()
        scores.close()
    return rate, cpu


def _steady_phase(
    worker_env: dict[str, str],
    users: int,
    days: int,
    cluster_masters: int = 0,
    node_timeout_ms: int = PRODUCTION_NODE_TIMEOUT_MS,
    replica: bool = False,
) -> dict[str, Any]:
    """Card holders with weeks of history: every event of ``users`` × ``days`` streamed
    oldest first, as fast as possible; the rate of the first and the last quarter of the
    decisions (by arrival), with the mean history length each quarter was scored with, and
    the Redis masters' CPU per event over the second half (keys and histories exist).
    ``cluster_masters``: state on an embedded Redis Cluster instead of one Redis;
    ``replica``: the one Redis feeds a replica (the like-for-like control)."""
    topics = Settings().topics
    table = simulate(SimulatorConfig(users=users, days=days, seed=23))
    rows = list(rows_as_json(table.sort_by("timestamp"), with_labels=False))
    with contextlib.ExitStack() as servers:
        stack = servers.enter_context(running_stack(topics.all(), topics.partitions))
        env = dict(worker_env)
        ports = _state_servers(servers, stack, env, replica, cluster_masters, node_timeout_ms)
        masters = [port for name, port in ports.items() if name.startswith("redis_master_")]
        worker = start_worker(stack, Path(tempfile.mkdtemp(prefix="bench-steady-")), env)
        worker.wait_ready()
        scores = assigned_reader(stack.bootstrap_servers, topics.scores)
        producer = threading.Thread(
            target=produce_rows, args=(stack.bootstrap_servers, topics.transactions, rows)
        )
        producer.start()
        # the driver shares the cores with the worker: while it runs it only stamps
        # arrivals; the decisions are parsed (and deduplicated) after the phase
        raw: list[tuple[float, bytes]] = []
        # the worker's CPU over time, so each quarter gets its CPU per event: on a host
        # that drifts, a rate alone says little
        cpu_at: list[tuple[float, float]] = [(time.monotonic(), cpu_seconds(worker.proc.pid))]
        redis_half: tuple[int, float] | None = None
        deadline = time.monotonic() + 900
        while len(raw) < len(rows) and time.monotonic() < deadline:
            for m in ready_messages(scores, 1000, 0.05):
                if not m.error():
                    raw.append((time.monotonic(), m.value() or b"{}"))
            if time.monotonic() - cpu_at[-1][0] > 0.25:
                cpu_at.append((time.monotonic(), cpu_seconds(worker.proc.pid)))
            if redis_half is None and len(raw) >= len(rows) // 2:
                redis_half = (len(raw), sum(map(redis_cpu_seconds, masters)))
        cpu_at.append((time.monotonic(), cpu_seconds(worker.proc.pid)))
        redis_end = (len(raw), sum(map(redis_cpu_seconds, masters)))
        producer.join()
        worker.stop()
        scores.close()
    arrivals: list[tuple[float, int]] = []
    seen: set[str] = set()
    for at, value in raw:
        d = json.loads(value)
        if d["transaction_id"] not in seen:
            seen.add(d["transaction_id"])
            arrivals.append((at, int(d["sequence_length"])))
    q = len(arrivals) // 4

    times, cpus = np.array([t for t, _ in cpu_at]), np.array([c for _, c in cpu_at])

    def quarter(part: list[tuple[float, int]]) -> dict[str, float]:
        span = part[-1][0] - part[0][0]
        used = np.interp(part[-1][0], times, cpus) - np.interp(part[0][0], times, cpus)
        return {
            "events_per_s": round((len(part) - 1) / span) if span > 0 else 0,
            "mean_history": round(float(np.mean([h for _, h in part])), 1),
            "worker_cpu_ms_per_event": round(float(used) * 1000 / max(len(part) - 1, 1), 3),
        }

    first, last = quarter(arrivals[:q]), quarter(arrivals[-q:])
    return {
        "users": users,
        "days": days,
        "events": len(rows),
        "scored": len(arrivals),
        "first_quarter": first,
        "last_quarter": last,
        "ratio_last_over_first": round(last["events_per_s"] / max(first["events_per_s"], 1), 2),
        "redis_masters_us_per_event_second_half": (
            round((redis_end[1] - redis_half[1]) * 1e6 / max(redis_end[0] - redis_half[0], 1), 1)
            if redis_half is not None
            else None
        ),
    }


def _cluster_figures(
    single: list[tuple[float, Any]],
    replicated: list[tuple[float, Any]],
    clustered: list[tuple[float, Any]],
    masters: int,
) -> dict[str, Any] | None:
    """The cluster phase beside the single-node ones, per round and as median ratios.

    Two yardsticks: one Redis alone, and one Redis feeding a replica, as each cluster
    master does (replication costs the master CPU of its own)."""
    if not clustered:
        return None

    def med(runs: list[tuple[float, Any]], key: str) -> float:
        return float(np.median([c[key] for _, c in runs]))

    def ratio(a: float, b: float) -> float:
        return round(a / max(b, 1e-9), 2)

    return {
        "masters": masters,
        "replicas_per_master": 1,
        "worker_events_per_s": round(float(np.median([r for r, _ in clustered]))),
        "events_per_s_per_round": [round(r) for r, _ in clustered],
        "redis_cpu_ms_per_event_per_round": {
            "single": [c["redis"] for _, c in single],
            "single_with_replica": [c["redis"] for _, c in replicated],
            "single_with_replica_master": [c["redis_masters"] for _, c in replicated],
            "cluster": [c["redis"] for _, c in clustered],
            "cluster_masters": [c["redis_masters"] for _, c in clustered],
        },
        "ratio_redis_cpu_cluster_over_single": ratio(med(clustered, "redis"), med(single, "redis")),
        "ratio_redis_cpu_cluster_masters_over_single": ratio(
            med(clustered, "redis_masters"), med(single, "redis")
        ),
        # like for like: every server, each master feeding one replica on both sides
        "ratio_redis_cpu_cluster_over_single_with_replica": ratio(
            med(clustered, "redis"), med(replicated, "redis")
        ),
        "ratio_redis_cpu_cluster_masters_over_replicated_master": ratio(
            med(clustered, "redis_masters"), med(replicated, "redis_masters")
        ),
        # side by side in each round: the host's drift between rounds cancels
        "ratio_cluster_masters_over_replicated_master_per_round": [
            ratio(c["redis_masters"], r["redis_masters"])
            for (_, c), (_, r) in zip(clustered, replicated, strict=True)
        ],
        "ratio_events_per_s_cluster_over_single": ratio(
            float(np.median([r for r, _ in clustered])), float(np.median([r for r, _ in single]))
        ),
        "cpu_ms_per_event_last_round": clustered[-1][1],
    }


def _medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per rate, the median over rounds of each percentile."""
    return {
        rate: {p: round(float(np.median([r[p] for r in rounds])), 1) for p in ("p50_ms", "p99_ms")}
        for rate, rounds in runs.items()
    }


if __name__ == "__main__":
    main()
