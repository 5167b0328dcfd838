"""Every node of an embedded cluster runs with the node timeout it was started with, a
restarted one included: the tests' short one (fast failover) by default, valkey's
production default where a benchmark asks for it (the nodes' pings cost idle CPU)."""

from __future__ import annotations

import pytest
import redis

from streams.devtools.embedded_cluster import (
    NODE_TIMEOUT_MS,
    PRODUCTION_NODE_TIMEOUT_MS,
    start_cluster,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _timeouts(ports: list[int]) -> set[int]:
    out = set()
    for port in ports:
        with redis.Redis(port=port) as client:
            out.add(int(client.config_get("cluster-node-timeout")["cluster-node-timeout"]))
    return out


def test_the_default_is_the_short_test_timeout(redis_cluster) -> None:
    assert _timeouts([n.port for n in redis_cluster.nodes]) == {NODE_TIMEOUT_MS}


def test_a_benchmark_cluster_runs_the_production_timeout_after_a_restart_too() -> None:
    with start_cluster(1, node_timeout_ms=PRODUCTION_NODE_TIMEOUT_MS) as cluster:
        assert _timeouts([n.port for n in cluster.nodes]) == {PRODUCTION_NODE_TIMEOUT_MS}
        replica = cluster.replicas[0]
        cluster.kill(replica)
        fresh = cluster.restart(replica)
        assert _timeouts([fresh.port]) == {PRODUCTION_NODE_TIMEOUT_MS}
