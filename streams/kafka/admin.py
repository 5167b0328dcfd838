"""Topic administration with confluent-kafka's AdminClient."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import InfrastructureError


def ensure_topics(
    client_conf: dict[str, Any],
    topics: Sequence[str],
    partitions: int,
    replication: int = 1,
    timeout_s: float = 20.0,
) -> None:
    """Create missing topics and wait until the broker's metadata lists all of them."""
    admin = AdminClient(client_conf)
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise InfrastructureError(f"the broker did not answer: {exc.args[0]}") from None
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if wanted:
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in wanted]
        )
        for topic, fut in futures.items():
            try:
                fut.result(timeout_s)
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise InfrastructureError(f"cannot create topic {topic!r}: {err}") from exc
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = admin.list_topics(timeout=timeout_s).topics
        if all(t in listed and not listed[t].error for t in topics):
            return
        time.sleep(0.05)
    raise InfrastructureError(f"topics {list(topics)} not visible after {timeout_s:.0f}s")
