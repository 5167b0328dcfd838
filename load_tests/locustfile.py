"""Locust users for riskstream.

* ``KafkaTransactionsUser`` publishes simulated transactions with confluent-kafka
  (``produce`` + ``poll(0)``; never a blocking poll/flush per message, which caps a user
  near 110 msg/s) and reports, per transaction, the time until its decision appears on
  ``scores`` — matched by transaction id by one background consumer per process — as
  the custom request type ``kafka e2e``.
* ``ScoreApiUser`` posts single transactions to ``POST /v1/score`` (dry run).

Environment: RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS, RISKSTREAM_TOPICS__TRANSACTIONS,
RISKSTREAM_TOPICS__SCORES, LOADTEST_USERS_SIMULATED (card holders), LOADTEST_RATE (msg/s
per Locust user), LOADTEST_TRACE_RATIO (share of transactions sent with a W3C
traceparent). Run: ``riskstream loadtest`` (embedded stack) or ``locust -f
load_tests/locustfile.py --host http://127.0.0.1:6066``.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from typing import Any

from locust import HttpUser, User, constant_throughput, events, task

from streams.devtools.simulator import SimulatorConfig, simulate
from streams.file_producer import new_traceparent
from streams.kafka.clients import reader
from streams.kafka.publisher import Publisher

TRACE_RATIO = float(os.environ.get("LOADTEST_TRACE_RATIO", "0"))  # share sent with a traceparent
BOOTSTRAP = os.environ.get("RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
TX_TOPIC = os.environ.get("RISKSTREAM_TOPICS__TRANSACTIONS", "transactions")
SCORES_TOPIC = os.environ.get("RISKSTREAM_TOPICS__SCORES", "scores")
RATE = float(os.environ.get("LOADTEST_RATE", "100"))
SIM_USERS = int(os.environ.get("LOADTEST_USERS_SIMULATED", "2000"))


class _Traffic:
    """Simulated transactions, shared by all users of this process; ids made unique."""

    def __init__(self) -> None:
        table = simulate(SimulatorConfig(users=SIM_USERS, days=14, seed=int(time.time()) % 1000))
        rows = table.to_pylist()
        self.rows = [
            {k: v for k, v in r.items() if v is not None and k not in ("is_fraud", "scenario")}
            for r in rows
        ]
        self.i = 0
        self.lock = threading.Lock()
        self.run = uuid.uuid4().hex[:8]

    def next(self) -> dict[str, Any]:
        with self.lock:
            row = dict(self.rows[self.i % len(self.rows)])
            self.i += 1
            row["transaction_id"] = f"lt-{self.run}-{self.i}"
            return row


class _Matcher:
    """One consumer of `scores` per process: fires `kafka e2e` events as decisions arrive."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="scores-matcher")
        self.thread.start()

    def expect(self, tx_id: str, sent: float) -> None:
        with self.lock:
            self.pending[tx_id] = sent

    def _run(self) -> None:
        consumer = reader({"bootstrap.servers": BOOTSTRAP}, [SCORES_TOPIC], "end")
        while not self.stop.is_set():
            # Locust runs under gevent: this "thread" is a greenlet, and a blocking
            # librdkafka call would starve the hub. Poll without blocking, then yield.
            batch = consumer.consume(1000, 0)
            if not batch:
                time.sleep(0.005)  # gevent-patched: yields to the other greenlets
            for msg in batch:
                if msg.error():
                    continue
                tx = json.loads(msg.value() or b"{}").get("transaction_id")
                with self.lock:
                    sent = self.pending.pop(tx, None)
                if sent is not None:
                    events.request.fire(
                        request_type="kafka",
                        name="e2e",
                        response_time=(time.perf_counter() - sent) * 1000,
                        response_length=len(msg.value() or b""),
                        exception=None,
                        context={},
                    )
        consumer.close()


_traffic: _Traffic | None = None
_matcher: _Matcher | None = None


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    global _traffic, _matcher
    _traffic = _Traffic()
    if any(u.__name__ == "KafkaTransactionsUser" for u in environment.user_classes):
        _matcher = _Matcher()


@events.quitting.add_listener
def _on_quit(environment: Any, **_kw: Any) -> None:
    if _matcher is not None:
        _matcher.stop.set()
        lost = len(_matcher.pending)
        if lost:
            environment.events.request.fire(
                request_type="kafka",
                name="e2e-unanswered",
                response_time=0,
                response_length=0,
                exception=RuntimeError(f"{lost} decisions not seen"),
                context={},
            )


class KafkaTransactionsUser(User):
    """Publishes transactions at LOADTEST_RATE per user; latency = produce → decision."""

    wait_time = constant_throughput(RATE)

    def on_start(self) -> None:
        self.producer = Publisher({"bootstrap.servers": BOOTSTRAP}, linger_ms=2)
        self.producer.start()
        self.sent = self.producer.tracker()

    def on_stop(self) -> None:
        self.producer.flush(10)

    @task
    def publish(self) -> None:
        assert _traffic is not None and _matcher is not None
        row = _traffic.next()
        _matcher.expect(row["transaction_id"], time.perf_counter())
        headers = new_traceparent() if TRACE_RATIO and random.random() < TRACE_RATIO else None
        self.producer.publish(
            TX_TOPIC, row["user_id"], json.dumps(row).encode(), self.sent, headers
        )


class ScoreApiUser(HttpUser):
    """Synchronous scoring over HTTP (dry run: does not change the user's sequence)."""

    wait_time = constant_throughput(RATE)

    @task
    def score(self) -> None:
        assert _traffic is not None
        row = _traffic.next()
        self.client.post("/v1/score", json={**row, "dry_run": True}, name="/v1/score")
