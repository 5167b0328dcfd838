"""A bank's own client on the embedded stack: kafka-python (pure Python, not librdkafka)
produces to ``transactions`` and reads the decisions from ``scores``.

Which clients work with the embedded broker is in docs/deploy.md; this keeps one
third-party client honest in CI.
"""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.worker_helpers import WorkerEnv, events_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_kafka_python_produces_transactions_and_reads_scores(wenv: WorkerEnv, stack) -> None:
    events = events_for(n_users=20, days=5, seed=61)
    ids = {json.loads(v)["transaction_id"] for _, v in events}
    worker = wenv.start()
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap_servers, linger_ms=5)
    consumer = KafkaConsumer(
        bootstrap_servers=stack.bootstrap_servers,
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    try:
        for key, value in events:
            producer.send(wenv.topics["transactions"], key=key.encode(), value=value)
        producer.flush(30)
        topic = wenv.topics["scores"]
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while not ids <= seen and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                seen.update(json.loads(m.value)["transaction_id"] for m in batch)
    finally:
        producer.close(5)
        consumer.close()
        code = worker.stop()
    assert ids <= seen, f"{len(ids - seen)} of {len(ids)} decisions not read by kafka-python"
    assert code == 0
