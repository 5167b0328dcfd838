"""Shared fixtures: one real embedded stack per session, unique names per test.

The broker and Redis are real processes (Tansu, valkey-server) on free loopback ports,
started once per session; each test gets fresh topic names and consumer group ids, as
Tansu keeps a group's session timeout forever and joins take ~half of it (DESIGN §7).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streams.devtools.embedded import EmbeddedStack, start_stack

#: Small timeouts so group joins take ~1 s on the embedded broker.
EMBEDDED_CONSUMER_CONF = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    s = start_stack()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def make_topics(
    stack: EmbeddedStack, unique_name: Callable[[str], str]
) -> Callable[..., list[str]]:
    def make(*prefixes: str, partitions: int = 3) -> list[str]:
        names = [unique_name(p) for p in prefixes]
        stack.create_topics(names, partitions)
        return names

    return make


@pytest.fixture
def consumer_conf(
    stack: EmbeddedStack, unique_name: Callable[[str], str]
) -> Callable[..., dict[str, Any]]:
    def make(group: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "bootstrap.servers": stack.bootstrap_servers,
            "group.id": group or unique_name("group"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **EMBEDDED_CONSUMER_CONF,
            **extra,
        }

    return make


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """One embedded Redis Cluster per session: 3 masters, one replica each (real processes).

    Tests that kill a node use their own cluster (``fresh_cluster``) so the others keep a
    healthy one."""
    from streams.devtools.embedded_cluster import start_cluster

    with start_cluster(3) as cluster:
        yield cluster
