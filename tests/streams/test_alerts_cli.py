"""`riskstream alerts` tails the alert topic in a readable form and as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from features.contracts import AlertRecord

pytestmark = pytest.mark.integration


def _alert() -> AlertRecord:
    now = datetime(2026, 1, 31, 12, tzinfo=UTC)
    return AlertRecord(
        alert_id="a1",
        transaction_id="tx-77",
        user_id="u-9",
        score=0.93,
        threshold=0.21,
        is_alert=True,
        model_version="tl-test",
        event_time=now,
        scored_at=now,
        latency_ms=4.2,
        sequence_length=31,
        similar_cases=[{"case_id": "case-1", "similarity": 0.97}],
        context={
            "amount": "912.50",
            "currency": "EUR",
            "mcc": "5732",
            "channel": "online",
            "merchant_id": "m-42",
            "country": "RO",
        },
        reasons=[
            {
                "feature": "amount_vs_history",
                "contribution": 1.5,
                "text": "amount 14.0× the user's usual",
            }
        ],
    )


@pytest.mark.parametrize("as_json", [False, True])
def test_alerts_command_renders_published_alerts(stack, make_topics, as_json: bool) -> None:
    (topic,) = make_topics("alerts")
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
    producer.produce(topic, key="u-9", value=_alert().model_dump_json().encode())
    assert producer.flush(10) == 0
    env = {
        **os.environ,
        "RISKSTREAM_TOPICS__ALERTS": topic,
        "RISKSTREAM_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "RISKSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": "300",
    }
    args = [
        sys.executable,
        "-m",
        "streams.cli",
        "alerts",
        "-b",
        stack.bootstrap_servers,
        "--from-beginning",
        "--limit",
        "1",
        "--timeout",
        "20",
    ]
    out = subprocess.run(
        args + (["--json"] if as_json else []), env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    if as_json:
        assert json.loads(out.stdout.strip())["transaction_id"] == "tx-77"
    else:
        assert "ALERT tx-77" in out.stdout and "score 0.930 ≥ threshold 0.210" in out.stdout
        assert "amount 14.0× the user's usual" in out.stdout
        assert "case-1 (0.97)" in out.stdout
        assert "912.50 EUR  m-42 · MCC 5732 · online · RO" in out.stdout
