"""Retry transient Redis failures with exponential backoff, then fail loudly.

Shared by every Redis adapter so the policy is one thing: a pipeline is rebuilt and
re-sent (our writes are idempotent, so a retry after a partial failure is safe); after
the last attempt a ``StoreUnavailableError`` says so — never a silent empty result.

Lua scripts go through ``LuaScript``, not redis-py's ``Script``: in a pipeline, redis-py
sends ``SCRIPT EXISTS`` before every execute, so each of the worker's three script calls
per batch cost two round trips, and the check took as much event-loop time as the
call itself (profile in docs/BENCHMARKS.md). ``LuaScript.run_grouped`` makes one call
per batch on one Redis and one per node on a Redis Cluster (``cluster_calls``).
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
from scoring.state.cluster_calls import Build, ScriptPair, cross_slot_source, per_node

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

    One call goes as a plain command (one round trip); several as one pipeline (one
    Redis) or concurrent commands (a Redis Cluster, each routed by its keys' slot). After
    ``NOSCRIPT`` (a restarted or flushed Redis, a new cluster node) the script is loaded
    and every call re-sent: callers' scripts are idempotent, so calls that had already
    run may run twice. ``run_grouped`` is the batch path; see there.
    """

    def __init__(self, client: RedisClient, source: str, check_keys: bool = True) -> None:
        """``check_keys``: see ``cluster_calls.cross_slot_source``."""
        self.client, self.source = client, source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        cross = cross_slot_source(source, check_keys)
        self.pair = ScriptPair(self.sha, source, hashlib.sha1(cross.encode()).hexdigest(), cross)

    async def run(
        self,
        calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
        attempts: int = 5,
        backoff_s: float = 0.2,
    ) -> list[Any]:
        """Replies of ``calls`` (``(keys, args)`` each; each call's keys in one slot)."""
        if not calls:
            return []
        try:
            return await retrying(lambda: self._send(calls), attempts, backoff_s)
        except NoScriptError:
            await retrying(lambda: self.client.script_load(self.source), attempts, backoff_s)
            return await retrying(lambda: self._send(calls), attempts, backoff_s)

    async def run_grouped(
        self,
        routing: Sequence[str],
        build: Build,
        per_key: bool = False,
        attempts: int = 5,
        backoff_s: float = 0.2,
    ) -> list[tuple[list[int], Any]]:
        """Replies for the items of a batch, as ``(items, reply)`` per call.

        ``routing[i]`` is a key of item ``i`` (all of an item's keys share its slot) and
        ``build(items)`` the ``(keys, args)`` of one call for those items, in their order.
        On one Redis all items go in one call, or one call per item where ``per_key`` (a
        cluster behind a proxy, which needs a call's keys in one slot). On a Redis
        Cluster, one call per node: a retry resends only the items that are still owed,
        so no item's call runs twice after it succeeded.
        """
        items = list(range(len(routing)))
        if not items:
            return []
        if isinstance(self.client, RedisCluster):
            return await self._per_node(self.client, routing, items, build, attempts, backoff_s)
        groups = [[i] for i in items] if per_key else [items]
        replies = await self.run([build(g) for g in groups], attempts, backoff_s)
        return list(zip(groups, replies, strict=True))

    async def _per_node(
        self,
        client: RedisCluster,
        routing: Sequence[str],
        items: list[int],
        build: Build,
        attempts: int,
        backoff_s: float,
    ) -> list[tuple[list[int], Any]]:
        done: list[tuple[list[int], Any]] = []
        pending = items

        async def once() -> None:
            nonlocal pending
            outcome = await per_node(client, self.pair, routing, pending, build)
            done.extend(outcome.replies)
            pending = outcome.pending
            if pending:  # the slot map, a node or a failover: retried with backoff
                err = outcome.error
                if isinstance(err, TRANSIENT):
                    raise err
                raise TryAgainError(f"{len(pending)} calls still redirected: {err}") from err

        await retrying(once, attempts, backoff_s)
        return done

    async def _send(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        if len(calls) == 1:
            keys, args = calls[0]
            return [await self.client.evalsha(self.sha, len(keys), *keys, *args)]
        if isinstance(self.client, RedisCluster):  # each routed by its slot, at once
            return list(
                await asyncio.gather(
                    *(
                        self.client.execute_command("EVALSHA", self.sha, len(k), *k, *a)
                        for k, a in calls
                    )
                )
            )
        async with self.client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return list(await pipe.execute())
