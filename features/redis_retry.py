"""Retry transient Redis failures with exponential backoff, then fail loudly.

Shared by every Redis adapter so the policy is one thing: a pipeline is rebuilt and
re-sent (our writes are idempotent, so a retry after a partial failure is safe); after
the last attempt a ``StoreUnavailableError`` says so — never a silent empty result.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from features.errors import StoreUnavailableError

TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


async def run_pipeline(
    client: aioredis.Redis,
    build: Callable[[Any], Awaitable[None]],
    attempts: int = 5,
    backoff_s: float = 0.2,
) -> list[Any]:
    """Build a pipeline with ``build(pipe)``, execute it, retrying transient errors."""
    delay = backoff_s
    for attempt in range(attempts + 1):
        try:
            async with client.pipeline(transaction=False) as pipe:
                await build(pipe)
                return list(await pipe.execute())
        except TRANSIENT as exc:
            if attempt == attempts:
                raise StoreUnavailableError(
                    f"Redis unavailable after {attempt + 1} attempts: {exc}"
                ) from exc
            await asyncio.sleep(delay * (1 + random.random() * 0.2))
            delay *= 2
    raise StoreUnavailableError("unreachable")  # pragma: no cover


def script_key_ranges(n_keys: int, cluster_mode: bool) -> list[tuple[int, int]]:
    """Key ranges, one per script call: all keys in one call, or one per call on a Redis
    Cluster, where a script's keys must share a slot (each user's keys share the
    ``{user_id}`` slot)."""
    return [(i, i + 1) for i in range(n_keys)] if cluster_mode else [(0, n_keys)]
