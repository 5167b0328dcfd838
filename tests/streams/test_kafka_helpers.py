"""The test reader waits for the messages a test counts, not for a count (#17).

The concurrency soak once reported 21 stream decisions "lost": `/v1/score` decisions
share the `scores` topic, so a read that stopped at N distinct keys stopped while the
last stream decisions were still being produced. It was the reader, not the worker.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


def test_until_keys_reads_every_wanted_key_past_uncounted_messages(stack, make_topics) -> None:
    (topic,) = make_topics("mixed", partitions=1)
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
    others = [f"http-{i}" for i in range(30)]
    wanted = [f"tx-{i}" for i in range(30)]
    for key in others:  # uncounted messages first, as HTTP decisions can be
        producer.produce(topic, key=key, value=b"{}")
    assert producer.flush(30) == 0

    def key_of(m) -> str:  # type: ignore[no-untyped-def]
        return m.key().decode()

    def late() -> None:  # the counted ones are still on their way
        time.sleep(0.5)
        for key in wanted:
            producer.produce(topic, key=key, value=b"{}")
        producer.flush(30)

    writer = threading.Thread(target=late)
    writer.start()
    try:
        by_count = read_topic(stack.bootstrap_servers, topic, expected=30, key_of=key_of)
        assert not {key_of(m) for m in by_count} & set(wanted), "the count was met by others"
        by_keys = read_topic(stack.bootstrap_servers, topic, key_of=key_of, until_keys=wanted)
    finally:
        writer.join(30)
    assert set(wanted) <= {key_of(m) for m in by_keys}
