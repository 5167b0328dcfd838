"""Clients for the store contract suites: the session's Redis, or its real cluster."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from scoring.state.redis_retry import RedisClient

#: the backends each store contract suite runs on; the real cluster (six processes,
#: formed once per session) is in the slow tier
STORE_BACKENDS = [
    "memory",
    "redis",
    "redis-cluster-mode",
    pytest.param("redis-cluster", marks=pytest.mark.slow),
]


def client_for(request: pytest.FixtureRequest, backend: str) -> RedisClient:
    """A client of the backend: a cluster client on ``redis-cluster``, else one Redis."""
    if backend == "redis-cluster":  # a real cluster: 3 masters, 3 replicas
        return RedisCluster.from_url(request.getfixturevalue("redis_cluster").url)
    return aioredis.Redis.from_url(request.getfixturevalue("stack").redis_url)
