"""Keyed commands to a Redis Cluster: one pipeline per node, sent to the nodes at once.

redis-py's ``ClusterPipeline`` resolves a routing policy, the slot and the target node
for every command with several awaits each. For the worker's batches of small script
calls (one per card on a cluster) that costs more CPU than everything else it does with
Redis (docs/BENCHMARKS.md, "Where the cluster's cost goes"). Here every command's node
comes straight from its first key's slot in the client's slot map, and each node gets
one pipeline (``ClusterNode.execute_pipeline``, the same call redis-py's pipeline ends
in).

Redirections and failures fall back to redis-py: a command answered ``MOVED``/``ASK``/
``TRYAGAIN`` is sent again through ``RedisCluster.execute_command``, which follows the
redirection and refreshes the slot map; a node whose pipeline failed to send (connection
refused: a master just died) has its commands sent that way too, so a failover is ridden
through exactly as before. Commands on other nodes are never sent twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.exceptions import AskError, MovedError, SlotNotCoveredError, TryAgainError

_REDIRECTED = (MovedError, AskError, TryAgainError)


async def per_node(
    client: RedisCluster, commands: Sequence[tuple[str, Sequence[Any]]]
) -> list[Any]:
    """Replies of ``commands`` (``(routing key, args)`` each), in order."""
    await client.initialize()  # the slot map (a no-op once loaded)
    by_node: dict[str, tuple[ClusterNode, list[PipelineCommand]]] = {}
    stack = []
    for i, (key, args) in enumerate(commands):
        cmd = PipelineCommand(i, *args)
        node = client.get_node_from_key(key)
        if node is None:  # a slot without a master for now: retried by the caller
            raise SlotNotCoveredError(f"no node serves the slot of {key!r} yet")
        by_node.setdefault(node.name, (node, []))[1].append(cmd)
        stack.append(cmd)
    sent = await asyncio.gather(
        *(node.execute_pipeline(cmds) for node, cmds in by_node.values()),
        return_exceptions=True,
    )
    unsent = {
        id(cmd)
        for (_, cmds), outcome in zip(by_node.values(), sent, strict=True)
        if isinstance(outcome, BaseException)
        for cmd in cmds
    }
    out = []
    for cmd in stack:
        result = cmd.result
        if id(cmd) in unsent or isinstance(result, _REDIRECTED):
            result = await client.execute_command(*cmd.args)
        elif isinstance(result, Exception):
            raise result
        out.append(result)
    return out
