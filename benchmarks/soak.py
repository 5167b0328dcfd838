"""Soak: ≥ 20,000 valid events and ≥ 10,000 fuzzed ones through a live worker, with faults.

    python -m benchmarks.soak [--valid 20000] [--fuzz 10000]

Interleaves simulated transactions (labels kept aside) with malformed messages that are
invalid by construction, stops Redis for 3 s mid-stream, then SIGKILLs the worker and
starts a new one. Afterwards it counts: every valid event has a decision, every fuzzed
one is a dead letter, no valid event is dead-lettered, distinct alert ids equal distinct
over-threshold decisions, and no user's sequence holds an event twice.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import redis
from confluent_kafka import Consumer

from benchmarks.common import assigned_reader, report
from scoring.state.sequence_store import decode_records
from streams.devtools.embedded import running_stack
from streams.devtools.local_worker import start_worker
from streams.devtools.simulator import SimulatorConfig, simulate
from streams.file_producer import rows_as_json
from streams.kafka.publisher import Publisher
from streams.settings import Settings

REQUIRED = ("transaction_id", "user_id", "timestamp", "amount", "currency", "mcc", "channel")


def fuzzed(rng: random.Random, template: dict[str, object], i: int) -> bytes:
    """A message that must be rejected (each kind breaks a rule of the contract)."""
    kind = i % 8
    row = dict(template, transaction_id=f"fuzz-{i}")
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))) + b"\xff"
    if kind == 1:
        row.pop(rng.choice(REQUIRED))
    elif kind == 2:
        row["amount"] = rng.choice(["-1", "0", "NaN", "1e999", "abc", -5])
    elif kind == 3:
        row["timestamp"] = rng.choice(["yesterday", "1900-01-01T00:00:00Z", 99, "2026-01-01"])
    elif kind == 4:
        row["currency"] = rng.choice(["XXX", "usd1", "", "€"])
    elif kind == 5:
        row["mcc"] = rng.choice(["12345", "abcd", -1, 10000])
    elif kind == 6:
        return b"[" * rng.randint(2000, 20000) + b"]" * 10
    else:
        row["channel"] = "x" * rng.randint(1, 5000)
    return json.dumps(row).encode()


def _drain(c: Consumer, until: float) -> list[bytes]:
    out = []
    while time.monotonic() < until:
        msgs = c.consume(2000, 0.2)
        if not msgs and out and time.monotonic() > until - 1:
            break
        out += [m.value() for m in msgs if not m.error()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--valid", type=int, default=20_000)
    ap.add_argument("--fuzz", type=int, default=10_000)
    args = ap.parse_args()
    report("soak", **run_soak(args.valid, args.fuzz))


def sequences_holding_an_event_twice(client: redis.Redis, pattern: str) -> int:
    """Users whose stored sequence holds a transaction twice (must be none after any fault)."""
    n = 0
    for key in client.scan_iter(pattern, count=1000):
        seq = decode_records(client.get(key))
        n += int(np.unique(seq["tx"]).size != seq.size)
    return n


def alert_agreement(
    decisions: list[dict[str, object]], alerts: list[dict[str, object]]
) -> dict[str, int]:
    """How the alerted transactions compare with those that had an over-threshold decision.

    The sets themselves are compared, not their sizes: equal sizes can hide an alert
    for a transaction that never crossed its threshold beside a lost one that did.
    """
    over = {d["transaction_id"] for d in decisions if d["is_alert"]}
    alerted = {a["transaction_id"] for a in alerts}
    return {
        "alert_transactions": len(alerted),
        "over_threshold": len(over),
        "alerted_not_over": len(alerted - over),
        "over_not_alerted": len(over - alerted),
    }


def run_soak(n_valid: int = 20_000, n_fuzz: int = 10_000) -> dict[str, float]:
    """The soak on its own embedded stack; returns the counts (``lost`` must be 0).

    Also run by ``tests/streams/test_soak.py`` at full size, so CI proves the numbers too.
    """
    rng = random.Random(7)
    topics = Settings().topics
    table = simulate(SimulatorConfig(users=800, days=30, seed=12))
    valid = list(rows_as_json(table, with_labels=False))[:n_valid]
    template = json.loads(valid[0][1])
    mixed: list[tuple[str, bytes, bool]] = [(k, v, True) for k, v in valid]
    for i in range(n_fuzz):
        mixed.insert(rng.randrange(len(mixed) + 1), ("fuzz", fuzzed(rng, template, i), False))
    valid_ids = {json.loads(v)["transaction_id"] for _, v in valid}
    started = time.monotonic()
    with running_stack(topics.all(), topics.partitions) as stack:
        data = Path(tempfile.mkdtemp(prefix="soak-"))
        worker = start_worker(stack, data, {"RISKSTREAM_REDIS__RETRY_ATTEMPTS": "8"})
        worker.wait_ready()
        producer = Publisher({"bootstrap.servers": stack.bootstrap_servers}, linger_ms=5)
        producer.start()
        tracker = producer.tracker()
        third = len(mixed) // 3

        def send(part: list[tuple[str, bytes, bool]]) -> None:
            for k, v, _ in part:
                producer.publish(topics.transactions, k, v, tracker)
            producer.flush(60)

        send(mixed[:third])
        stack.stop_redis()  # fault 1: Redis down for 3 s while traffic keeps coming
        t = threading.Thread(target=send, args=(mixed[third : 2 * third],))
        t.start()
        time.sleep(3)
        stack.start_redis()
        t.join()
        time.sleep(2)
        worker.proc.kill()  # fault 2: SIGKILL mid-stream, then a fresh worker
        worker.proc.wait()
        send(mixed[2 * third :])
        worker = start_worker(stack, data / "second")
        worker.wait_ready()
        scores_c, alerts_c, dlq_c = (
            assigned_reader(stack.bootstrap_servers, t)
            for t in (topics.scores, topics.alerts, topics.dlq)
        )
        deadline = time.monotonic() + 600
        decisions: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            decisions += [json.loads(v) for v in _drain(scores_c, time.monotonic() + 5)]
            if valid_ids <= {d["transaction_id"] for d in decisions}:
                break
        alerts = [json.loads(v) for v in _drain(alerts_c, time.monotonic() + 5)]
        letters = [json.loads(v) for v in _drain(dlq_c, time.monotonic() + 5)]
        client = redis.Redis.from_url(stack.redis_url)
        mismatched = sequences_holding_an_event_twice(client, "riskstream:seq:*")
        client.close()
        worker.stop()
    scored = {d["transaction_id"] for d in decisions}
    valid_in_dlq = sum(
        1
        for d in letters
        if d["raw"].startswith("{") and json.loads(d["raw"]).get("transaction_id") in valid_ids
    )
    return dict(
        valid_in=len(valid_ids),
        fuzzed_in=n_fuzz,
        scored=len(scored & valid_ids),
        lost=len(valid_ids - scored),
        duplicates_delivered=len(decisions) - len(scored),
        **alert_agreement(decisions, alerts),
        dead_letters=len(letters),
        valid_in_dlq=valid_in_dlq,
        sequences_with_duplicates=mismatched,
        minutes=round((time.monotonic() - started) / 60, 1),
    )


if __name__ == "__main__":
    main()
