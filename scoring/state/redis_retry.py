"""Retry transient Redis failures with exponential backoff, then fail loudly.

Shared by every Redis adapter so the policy is one thing: a pipeline is rebuilt and
re-sent (our writes are idempotent, so a retry after a partial failure is safe); after
the last attempt a ``StoreUnavailableError`` says so — never a silent empty result.

Lua scripts go through ``LuaScript``, not redis-py's ``Script``: in a pipeline, redis-py
sends ``SCRIPT EXISTS`` before every execute, so each of the worker's three script calls
per batch cost two round trips, and the check took as much event-loop time as the
call itself (profile in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterError, NoScriptError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from features.errors import StoreUnavailableError
from scoring.state.cluster_calls import per_node

#: a single node or a Redis Cluster: the adapters use only what both offer (commands,
#: non-transactional pipelines, EVALSHA by ``execute_command``)
RedisClient = aioredis.Redis | RedisCluster

#: what a retry can outlast; on a cluster also a failover in progress (CLUSTERDOWN, a
#: slot momentarily without a master, TRYAGAIN during resharding)
TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterError,
    SlotNotCoveredError,
    TryAgainError,
)
T = TypeVar("T")


async def retrying(
    call: Callable[[], Awaitable[T]], attempts: int = 5, backoff_s: float = 0.2
) -> T:
    """``await call()``, retrying transient errors with jittered exponential backoff."""
    delay = backoff_s
    for attempt in range(attempts + 1):
        try:
            return await call()
        except TRANSIENT as exc:
            if attempt == attempts:
                raise StoreUnavailableError(
                    f"Redis unavailable after {attempt + 1} attempts: {exc}"
                ) from exc
            await asyncio.sleep(delay * (1 + random.random() * 0.2))
            delay *= 2
    raise StoreUnavailableError("unreachable")  # pragma: no cover


async def run_pipeline(
    client: RedisClient,
    build: Callable[[Any], Awaitable[None]],
    attempts: int = 5,
    backoff_s: float = 0.2,
) -> list[Any]:
    """Build a pipeline with ``build(pipe)``, execute it, retrying transient errors."""

    async def once() -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            await build(pipe)
            return list(await pipe.execute())

    return await retrying(once, attempts, backoff_s)


class LuaScript:
    """A Lua script called by ``EVALSHA``, loaded only when Redis answers ``NOSCRIPT``.

    One call goes as a plain command (one round trip); several (cluster mode: one per
    key slot) as one pipeline, which a Redis Cluster client splits per node and sends to
    the nodes at once. After ``NOSCRIPT`` (a restarted or flushed Redis, a new
    cluster node) the script is loaded and every call re-sent: callers' scripts are
    idempotent, so calls that had already run may run twice.
    """

    def __init__(self, client: RedisClient, source: str) -> None:
        self.client, self.source = client, source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(
        self,
        calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
        attempts: int = 5,
        backoff_s: float = 0.2,
    ) -> list[Any]:
        """Replies of ``calls`` (``(keys, args)`` each), in order."""
        if not calls:
            return []
        try:
            return await retrying(lambda: self._send(calls), attempts, backoff_s)
        except NoScriptError:
            await retrying(lambda: self.client.script_load(self.source), attempts, backoff_s)
            return await retrying(lambda: self._send(calls), attempts, backoff_s)

    async def _send(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        if len(calls) == 1:
            keys, args = calls[0]
            return [await self.client.evalsha(self.sha, len(keys), *keys, *args)]
        if isinstance(self.client, RedisCluster):  # one pipeline per node, routed by slot
            commands = [
                (keys[0], ("EVALSHA", self.sha, len(keys), *keys, *args)) for keys, args in calls
            ]
            return await per_node(self.client, commands)
        async with self.client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # as a plain command: redis-py's cluster pipeline refuses ``evalsha()``
                # but routes EVALSHA by its keys (one round trip per node)
                pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return list(await pipe.execute())


def script_key_ranges(n_keys: int, cluster_mode: bool) -> list[tuple[int, int]]:
    """Key ranges, one per script call: all keys in one call, or one per call on a Redis
    Cluster, where a script's keys must share a slot (each user's keys share the
    ``{user_id}`` slot)."""
    return [(i, i + 1) for i in range(n_keys)] if cluster_mode else [(0, n_keys)]
