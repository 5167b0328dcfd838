"""Script calls to a Redis Cluster: one call per node, not one per key slot.

A script's *declared* keys must share a slot, so a batch of 256 events over about 200
cards used to make about 200 script calls on a cluster, and each call has a fixed cost
on the server that dwarfs a card's share of one large call (docs/BENCHMARKS.md, "Why
per-card script calls cost what they do"). Valkey and Redis ≥ 7 let a script flagged
``allow-cross-slot-keys`` use keys of several slots **that the node it runs on serves**.
So each script has a cross-slot variant (``cross_slot_source``): it declares only its
first key, which routes the call, and receives the others in ``ARGV``; a preamble puts
them back in ``KEYS``, so the script's body is the same on one node and on a cluster.

A stale slot map (resharding, a failover) must fail a call before it writes anything, so
that a script that is not idempotent (the entity counters) never runs twice for part of
a call. The card-sequence and entity scripts read every key before their first write,
so their own first access fails in time; the threshold scripts only read or set values.
For a script that can promise neither, ``check_keys`` adds a preamble that checks every
key first (one ``pcall`` per key) and answers ``TRYAGAIN``.

A call that failed so, and a call to a node that did not answer, is sent again one item
per call with the plain script through ``RedisCluster.execute_command``, which follows
``MOVED``/``ASK`` and refreshes the slot map. Items that fail there too are returned as
pending; the caller's retry resends only those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: ``(keys, args)`` of one script call
Call = tuple[Sequence[Any], Sequence[Any]]
#: the call for some items (indices into the caller's list), in that order
Build = Callable[[list[int]], Call]

#: a call that the slot map, not the script, failed: send it again by redis-py's routing
REROUTE = (
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
    SlotNotCoveredError,
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
)

#: how the server refuses a script's access to a key of a slot it does not serve
_NOT_LOCAL = "non local key"

_PREAMBLE = """#!lua flags=allow-cross-slot-keys
local _argv, KEYS, ARGV = ARGV, {KEYS[1]}, {}
local _n = tonumber(_argv[1])
for i = 1, _n do KEYS[i + 1] = _argv[i + 1] end
for i = _n + 2, #_argv do ARGV[#ARGV + 1] = _argv[i] end
"""

_CHECK_KEYS = """for i = 1, #KEYS do
  local r = redis.pcall('EXISTS', KEYS[i])
  if type(r) == 'table' and r.err then
    return redis.error_reply('TRYAGAIN a key of this call is not served here: ' .. r.err)
  end
end
"""


def item_rows(idx: list[int], bounds: np.ndarray, item_of_row: np.ndarray) -> slice | np.ndarray:
    """The rows of items ``idx`` (ascending) in an array where each item's rows are
    contiguous (item ``i`` owns ``bounds[i]:bounds[i + 1]``): a slice when the items are
    contiguous too (one Redis: all of them), else a mask (one node's share of a batch)."""
    if idx[-1] - idx[0] == len(idx) - 1:
        return slice(int(bounds[idx[0]]), int(bounds[idx[-1] + 1]))
    return np.isin(item_of_row, idx)


def cross_slot_source(source: str, check_keys: bool = True) -> str:
    """The variant of ``source`` that takes keys of several slots on one node.

    ``check_keys=False`` is for a script that reads every key before it writes any, or
    whose writes are idempotent: its own first access fails the call in time, so the
    check (one call per key) would only cost server time.
    """
    return _PREAMBLE + (_CHECK_KEYS if check_keys else "") + source


@dataclass
class Outcome:
    """What a round of calls did: replies per group of items, and the items still owed."""

    replies: list[tuple[list[int], Any]] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    error: BaseException | None = None


@dataclass(frozen=True)
class ScriptPair:
    """A script and its cross-slot variant, by source and SHA1."""

    sha: str
    source: str
    cross_sha: str
    cross_source: str


def group_by_node(
    client: RedisCluster, routing: Sequence[str], items: list[int]
) -> dict[str, tuple[ClusterNode, list[int]]]:
    """``items`` grouped by the master that serves their routing key, in order."""
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    for i in items:
        node = client.get_node_from_key(routing[i])
        if node is None:  # a slot without a master for now: retried by the caller
            raise SlotNotCoveredError(f"no node serves the slot of {routing[i]!r} yet")
        groups.setdefault(node.name, (node, []))[1].append(i)
    return groups


async def per_node(
    client: RedisCluster,
    script: ScriptPair,
    routing: Sequence[str],
    items: list[int],
    build: Build,
) -> Outcome:
    """One cross-slot call per node for ``items``; reroutes what the slot map failed."""
    await client.initialize()  # the slot map (a no-op once loaded)
    groups = list(group_by_node(client, routing, items).values())
    sent = await asyncio.gather(
        *(_on_node(node, script, build(idx)) for node, idx in groups),
        return_exceptions=True,
    )
    out, reroute = Outcome(), []
    for (_, idx), reply in zip(groups, sent, strict=True):
        if isinstance(reply, REROUTE):
            reroute.extend(idx)
        elif isinstance(reply, BaseException):
            raise reply
        else:
            out.replies.append((idx, reply))
    if reroute:
        await _one_by_one(client, script, sorted(reroute), build, out)
    return out


async def _on_node(node: ClusterNode, script: ScriptPair, call: Call) -> Any:
    keys, args = call
    command = ("EVALSHA", script.cross_sha, 1, keys[0], len(keys) - 1, *keys[1:], *args)
    try:
        try:
            return await node.execute_command(*command)
        except NoScriptError:  # a new or flushed node
            await node.execute_command("SCRIPT", "LOAD", script.cross_source)
            return await node.execute_command(*command)
    except ResponseError as exc:
        if _NOT_LOCAL in str(exc):  # a script's own first access to a key elsewhere
            raise TryAgainError(str(exc)) from exc
        raise


async def _one_by_one(
    client: RedisCluster, script: ScriptPair, items: list[int], build: Build, out: Outcome
) -> None:
    """Each item as its own plain call, routed (and redirected) by redis-py.

    One after another, not at once: every few ``MOVED`` replies redis-py closes all of
    the client's connections to reload the slot map, and a call in flight on one of them
    would be retried after it had run (a test with a stale map caught it).

    The first item that still fails ends the round: it and the items after it stay owed,
    for the caller's retry after its backoff. redis-py has already followed redirections
    and retried that item, so what is left is a node down or a failover under way, and
    the next items would fail the same way, each after its own connection attempts: with
    a whole shard down, a batch took time in proportion to its size to give up.
    """
    for n, i in enumerate(items):
        keys, args = build([i])
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            try:
                reply = await client.execute_command(*command)
            except NoScriptError:
                await client.script_load(script.source)
                reply = await client.execute_command(*command)
        except REROUTE as exc:
            out.pending.extend(items[n:])
            out.error = out.error or exc
            return
        out.replies.append(([i], reply))
