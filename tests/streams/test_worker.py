"""The worker end to end on the embedded stack: real Kafka protocol, real Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from tests.worker_helpers import WorkerEnv, events_for, steady_stream, tx_id_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD = [
    (b"\xff\x00 not even utf-8", "not UTF-8"),
    (b'{"transaction_id":"bad-missing","user_id":"u"}', "is required"),
    (
        b'{"transaction_id":"bad-neg","user_id":"u","timestamp":1767225600000,"amount":"-3",'
        b'"currency":"USD","mcc":"5411","channel":"online"}',
        "must be > 0",
    ),
    (
        b'{"transaction_id":"bad-ts","user_id":"u","timestamp":"soon","amount":"3",'
        b'"currency":"USD","mcc":"5411","channel":"online"}',
        "field 'timestamp'",
    ),
]


def test_n_in_n_out_dead_letters_and_replay(wenv: WorkerEnv, stack) -> None:
    events = events_for()
    ids = {json.loads(v)["transaction_id"] for _, v in events}
    worker = wenv.start()
    try:
        wenv.produce(events[:300] + [("bad", raw) for raw, _ in BAD] + events[300:])
        scores = wenv.read(
            "scores",
            expected=len(ids),
            key_of=tx_id_of,
            timeout_s=120,
        )
        assert {tx_id_of(m) for m in scores} == ids  # every event scored, none lost
        dlq = wenv.read("dlq", expected=len(BAD), timeout_s=30)
        letters = [json.loads(m.value()) for m in dlq]
        for _raw, needle in BAD:
            assert any(needle in d["error"] for d in letters), needle
        assert all(d["topic"] == wenv.topics["transactions"] and d["offset"] >= 0 for d in letters)
        assert worker.alive()  # bad input never kills the worker
        alerts = wenv.read("alerts", timeout_s=5)
        first_alert_ids = {json.loads(m.value())["alert_id"] for m in alerts}

        client = redis.Redis.from_url(stack.redis_url)
        sizes = {k: client.strlen(k) for k in client.scan_iter(f"{wenv.name}:seq:*")}
        assert len(sizes) >= 10
        # replay everything: no new sequence entries, the same alert ids
        wenv.produce(events)
        wenv.read("scores", expected=2 * len(ids), timeout_s=120)
        assert {k: client.strlen(k) for k in client.scan_iter(f"{wenv.name}:seq:*")} == sizes
        alerts = wenv.read("alerts", timeout_s=5)
        replay_ids = {json.loads(m.value())["alert_id"] for m in alerts}
        assert first_alert_ids <= replay_ids
        client.close()
    finally:
        assert worker.stop() == 0  # graceful SIGTERM


def test_sigkill_mid_stream_loses_nothing(wenv: WorkerEnv, stack) -> None:
    events = steady_stream(8)
    assert len(events) >= 20_000
    ids = {json.loads(v)["transaction_id"] for _, v in events}
    worker = wenv.start()
    wenv.produce(events)
    # kill as soon as some (not all) decisions are out
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = wenv.read("scores", timeout_s=1, idle_s=0.3)
        if len(seen) > 200:
            break
    worker.kill()
    assert len({tx_id_of(m) for m in seen}) < len(ids), "the worker finished before the kill"
    restarted = wenv.start()
    try:
        scores = wenv.read(
            "scores",
            expected=len(ids),
            key_of=tx_id_of,
            timeout_s=120,
        )
        got = {tx_id_of(m) for m in scores}
        print(
            f"\n[sigkill] in={len(ids)} scored={len(got & ids)} "
            f"duplicates_delivered={len(scores) - len(got)} lost={len(ids - got)}"
        )
        assert got == ids, f"lost {len(ids - got)} events"
    finally:
        restarted.stop()


def test_http_score_readyz_and_bad_requests(wenv: WorkerEnv) -> None:
    worker = wenv.start()
    try:
        status, body = worker.get("/readyz")
        assert status == 200 and body["redis"] and body["model"] and body["cache_restored"]
        assert worker.get("/healthz")[0] == 200
        tx = {
            "transaction_id": "http-1",
            "user_id": "u-http",
            "timestamp": 1767225600000,
            "amount": "25.00",
            "currency": "EUR",
            "mcc": "5411",
            "channel": "contactless",
        }
        status, body = worker.post("/v1/score", json.dumps({**tx, "dry_run": True}).encode())
        assert status == 200, body
        (d,) = body["decisions"]
        assert 0 <= d["score"] <= 1 and d["decision"] in ("approve", "review") and d["dry_run"]
        status, body = worker.post(
            "/v1/score", json.dumps([tx, {**tx, "transaction_id": "h2"}]).encode()
        )
        assert status == 200 and len(body["decisions"]) == 2
        for raw, needle in [
            (b"{oops", "not JSON"),
            (b"[]", "non-empty"),
            (json.dumps({**tx, "amount": "-1"}).encode(), "amount"),
            (b"[1, 2]", "JSON object"),
        ]:
            status, body = worker.post("/v1/score", raw)
            assert status == 400 and needle in body["error"], (raw, body)
        metrics = worker.url("/metrics")
        import urllib.request

        with urllib.request.urlopen(metrics, timeout=5) as r:
            text = r.read().decode()
        assert "riskstream_events_total" in text and "riskstream_model_info" in text
        frozen = [ln for ln in text.splitlines() if ln.startswith("riskstream_gc_frozen_objects ")]
        assert frozen and float(frozen[0].split()[1]) > 10_000, frozen
    finally:
        worker.stop()


def test_bearer_token_required_when_configured(wenv: WorkerEnv) -> None:
    worker = wenv.start(extra_env={"RISKSTREAM_HTTP__TOKEN": "s3cret-token"})
    try:
        tx = {
            "transaction_id": "tok-1",
            "user_id": "u-tok",
            "timestamp": 1767225600000,
            "amount": "5",
            "currency": "EUR",
            "mcc": "5411",
            "channel": "online",
            "dry_run": True,
        }
        body = json.dumps(tx).encode()
        assert worker.post("/v1/score", body)[0] == 401
        assert worker.post("/v1/score", body, {"Authorization": "Bearer wrong"})[0] == 401
        status, _ = worker.post("/v1/score", body, {"Authorization": "Bearer s3cret-token"})
        assert status == 200
        log_text = Path(worker.log.name).read_text(errors="replace")
        assert "s3cret-token" not in log_text  # secrets never reach the logs
    finally:
        worker.stop()
