"""POST /v1/score latency, one warm transaction per request: sequential, and from 8
concurrent clients at a fixed total rate. Worker settings can be compared side by side in
one run (``--compare KEY=VALUE``), alternating, because this host drifts.

A card holder is warm when the worker has scored their history (their next event's
embedding or state is cached). Requests are dry runs, so the histories do not change
between requests and every round measures the same thing. ``--wet N`` adds N sequential
requests that are not dry runs: new transactions of the same card holders, stored and
published (the answer waits for the broker's acknowledgement).

    python -m benchmarks.bench_http --requests 400 --rate 500 --seconds 8 \
        --compare RISKSTREAM_BATCH__IDLE_LINGER_MS=10 --rounds 2

The worker polls Kafka as it would in production (``kafka.fetch_max_wait_ms`` at the
settings' default) unless ``--fetch-wait-ms`` says otherwise. The embedded stack's own
10 ms is a workaround for its broker, which holds every fetch for the full wait even when
data is there: a worker polling an idle broker 100 times a second on the same cores
lengthens the sequential tail (docs/BENCHMARKS.md). A Kafka broker answers a fetch as
soon as data arrives, so a production worker waits the longer default at no cost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import report
from streams.devtools.embedded import running_stack
from streams.devtools.local_worker import start_worker
from streams.devtools.simulator import SimulatorConfig, simulate
from streams.file_producer import rows_as_json
from streams.kafka.publisher import Publisher
from streams.settings import KafkaSettings, Settings

#: the settings' default fetch wait: what a production worker polls Kafka with
PRODUCTION_FETCH_WAIT_MS: int = KafkaSettings.model_fields["fetch_max_wait_ms"].default


def _post(
    conn: http.client.HTTPConnection, body: bytes, server: list[float] | None = None
) -> float:
    """Round-trip ms of one request; ``server`` gets the worker's own ``latency_ms``
    (from the parsed request to its decision: the HTTP layer is the difference)."""
    t0 = time.perf_counter()
    conn.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    ms = (time.perf_counter() - t0) * 1000
    if resp.status != 200:
        raise RuntimeError(f"/v1/score answered {resp.status}")
    if server is not None:
        server.append(max(d["latency_ms"] for d in json.loads(data)["decisions"]))
    return ms


def _metric(port: int, name: str) -> dict[str, float]:
    """One counter of the worker's /metrics, by its first label's value."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            label = line.split('="', 1)[1].split('"', 1)[0]
            out[label] = float(line.rsplit(" ", 1)[1])
    return out


def _cache_counts(port: int) -> dict[str, float]:
    """The worker's embedding-cache lookups so far, by outcome."""
    return _metric(port, "riskstream_embedding_cache_total")


def _wait_scored(port: int, events: int, timeout_s: float = 300) -> None:
    """Until the worker has scored ``events`` stream events, then the refresh of the last
    batch (warm card holders: their next event's state or embedding is cached)."""
    deadline = time.monotonic() + timeout_s
    while _metric(port, "riskstream_events_total").get("scored", 0.0) < events:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not score {events} events in {timeout_s:.0f} s")
        time.sleep(0.5)
    time.sleep(2)


def _hit_rate(before: dict[str, float], after: dict[str, float]) -> float:
    hits = after.get("hit", 0.0) - before.get("hit", 0.0)
    misses = after.get("miss", 0.0) - before.get("miss", 0.0)
    return round(hits / max(hits + misses, 1.0), 3)


def _wet_bodies(history: list[tuple[str, bytes]], n: int) -> list[bytes]:
    """``n`` new transactions, round-robin over the history's card holders, each after the
    card's previous one (a minute apart), with fresh ids: stored and published as real
    requests are, so every request finds its card's state as the last one left it."""
    last: dict[str, dict[str, Any]] = {}
    for _, value in history:
        tx = json.loads(value)
        if tx["timestamp"] >= last.get(tx["user_id"], {}).get("timestamp", 0):
            last[tx["user_id"]] = tx
    cards = sorted(last)
    out = []
    for i in range(n):
        tx = dict(last[cards[i % len(cards)]])
        tx["transaction_id"] = f"http-wet-{i}"
        tx["timestamp"] += 60_000
        last[tx["user_id"]] = tx
        out.append(json.dumps({"transactions": [tx]}).encode())
    return out


def _pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "n": int(arr.size),
    }


def score_endpoint_latency(
    env: dict[str, str],
    history: list[tuple[str, bytes]],
    bodies: list[bytes],
    requests: int,
    rate: float,
    seconds: float,
    wet_requests: int = 0,
) -> dict[str, Any]:
    """One worker on a fresh embedded stack: ``history`` scored first (warm cards), then
    ``requests`` sequential requests and 8 clients at ``rate`` for ``seconds``."""
    topics = Settings().topics
    with running_stack(topics.all(), topics.partitions) as stack:
        worker = start_worker(stack, Path(tempfile.mkdtemp(prefix="bench-http-")), env)
        try:
            worker.wait_ready()
            pub = Publisher({"bootstrap.servers": stack.bootstrap_servers}, linger_ms=5)
            pub.start()
            tracker = pub.tracker()
            for key, value in history:
                pub.publish(topics.transactions, key, value, tracker)
            pub.flush(60)
            pub.close()
            _wait_scored(worker.port, len(history))
            conn = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
            for b in bodies[:50]:
                _post(conn, b)  # warm-up: connection, code paths
            counts0 = _cache_counts(worker.port)
            engine: list[float] = []
            seq = [_post(conn, bodies[i % len(bodies)], engine) for i in range(requests)]
            seq_hits = _hit_rate(counts0, _cache_counts(worker.port))
            conn.close()
            lat: list[float] = []
            lock = threading.Lock()
            stop_at = time.perf_counter() + seconds
            per_client = rate / 8

            def client(k: int) -> None:
                c = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
                start, i = time.perf_counter(), 0
                while True:
                    due = start + i / per_client
                    now = time.perf_counter()
                    if due > stop_at:
                        break
                    if due > now:
                        time.sleep(due - now)
                    ms = _post(c, bodies[(k * 7919 + i) % len(bodies)])
                    with lock:
                        lat.append(ms)
                    i += 1
                c.close()

            threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            achieved = len(lat) / (time.perf_counter() - t0)
            wet: dict[str, Any] | None = None
            if wet_requests:  # real requests: stored, published, acknowledged by the broker
                conn = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=10)
                counts0 = _cache_counts(worker.port)
                times = [_post(conn, b) for b in _wet_bodies(history, wet_requests)]
                wet = {
                    **_pct(times),
                    "cache_hit_rate": _hit_rate(counts0, _cache_counts(worker.port)),
                }
                conn.close()
        finally:
            worker.stop()
    out: dict[str, Any] = {
        "sequential": {
            **_pct(seq),
            "cache_hit_rate": seq_hits,
            "in_worker": {k: v for k, v in _pct(engine).items() if k != "n"},
        },
        "concurrent_8": {**_pct(lat), "achieved_rate": round(achieved)},
    }
    if wet is not None:
        out["sequential_not_dry"] = wet
    return out


def request_set() -> tuple[list[tuple[str, bytes]], list[bytes]]:
    """300 card holders' 30 days of history (to be scored first) and 600 dry-run request
    bodies: later transactions of the same card holders, one per request."""
    table = simulate(SimulatorConfig(users=300, days=30, seed=11))
    rows = list(rows_as_json(table, with_labels=False))
    bodies = []
    for _, value in rows[-600:]:
        tx = json.loads(value)
        tx["transaction_id"] = "http-" + tx["transaction_id"]
        bodies.append(json.dumps({"transactions": [tx], "dry_run": True}).encode())
    return rows[:-600], bodies


def polling_env(fetch_wait_ms: int = PRODUCTION_FETCH_WAIT_MS) -> dict[str, str]:
    """The worker setting for its Kafka fetch wait (the module doc says why it matters)."""
    return {"RISKSTREAM_KAFKA__FETCH_MAX_WAIT_MS": str(fetch_wait_ms)}


def endpoint_medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-round results of ``score_endpoint_latency``, as medians over the rounds."""

    def med(part: str, key: str) -> float:
        return round(float(np.median([r[part][key] for r in rounds])), 2)

    return {
        "sequential": {k: med("sequential", k) for k in ("p50_ms", "p99_ms")},
        "concurrent_8": {k: med("concurrent_8", k) for k in ("p50_ms", "p99_ms", "achieved_rate")},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400, help="Sequential requests.")
    ap.add_argument("--rate", type=float, default=500, help="Total rate of the 8 clients.")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Worker setting of a second side, measured alternating.",
    )
    ap.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=PRODUCTION_FETCH_WAIT_MS,
        help="The worker's kafka.fetch_max_wait_ms (default: the production default; the "
        "embedded stack's workaround is 10).",
    )
    ap.add_argument(
        "--wet",
        type=int,
        default=0,
        metavar="N",
        help="Also N sequential requests that are not dry runs (stored and published).",
    )
    args = ap.parse_args()
    history, bodies = request_set()
    polling = polling_env(args.fetch_wait_ms)
    sides = {
        "default": polling,
        **(
            {"compare": polling | dict(kv.split("=", 1) for kv in args.compare)}
            if args.compare
            else {}
        ),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, env in sides.items():
            results[name].append(
                score_endpoint_latency(
                    env, history, bodies, args.requests, args.rate, args.seconds, args.wet
                )
            )
    report(
        "http_score_latency",
        sides={k: v for k, v in sides.items()},
        rounds=args.rounds,
        results=results,
        history_events=len(history),
    )


if __name__ == "__main__":
    main()
