"""``AckChain``: a batch waits for its acks in the background of the next one, acks stay in
batch order, and a failure acks nothing from there on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from streams.ack_chain import AckChain


class Recorder:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.failures = 0

    async def completed(self, step: Awaitable[Any]) -> bool:
        try:
            await step
            return True
        except RuntimeError:
            self.failures += 1
            return False

    def finish(self, name: str, gate: asyncio.Event | None = None, fail: bool = False) -> Any:
        async def run() -> None:
            self.log.append(f"finish {name} started")
            if gate is not None:
                await gate.wait()
            if fail:
                raise RuntimeError(f"delivery of {name} failed")
            self.log.append(f"finish {name} done")

        return run

    def ack(self, name: str) -> Any:
        async def run() -> None:
            self.log.append(f"ack {name}")

        return run


async def test_the_caller_goes_on_while_a_batch_waits_for_its_acks() -> None:
    rec = Recorder()
    chain = AckChain(rec.completed)
    gate = asyncio.Event()
    task = await chain.submit(rec.finish("1", gate), rec.ack("1"))
    assert task is not None
    await asyncio.sleep(0.01)
    # the loop is free to score batch 2 now; batch 1 still waits for the broker
    assert rec.log == ["finish 1 started"] and not task.done()
    gate.set()
    assert await task
    assert rec.log == ["finish 1 started", "finish 1 done", "ack 1"]


async def test_acks_keep_batch_order_and_one_batch_waits_at_a_time() -> None:
    rec = Recorder()
    chain = AckChain(rec.completed)
    gate = asyncio.Event()
    await chain.submit(rec.finish("1", gate), rec.ack("1"))
    second = asyncio.ensure_future(chain.submit(rec.finish("2"), rec.ack("2")))
    await asyncio.sleep(0.01)
    assert not second.done()  # batch 2 may not start waiting before batch 1 is acked
    assert "finish 2 started" not in rec.log
    gate.set()
    task = await second
    assert task is not None and await task
    assert await chain.drain()
    assert rec.log == [
        "finish 1 started",
        "finish 1 done",
        "ack 1",
        "finish 2 started",
        "finish 2 done",
        "ack 2",
    ]


async def test_a_failed_batch_is_not_acked_and_neither_is_any_later_one() -> None:
    rec = Recorder()
    chain = AckChain(rec.completed)
    failed = await chain.submit(rec.finish("1", fail=True), rec.ack("1"))
    assert failed is not None and not await failed
    assert await chain.submit(rec.finish("2"), rec.ack("2")) is None
    assert await chain.submit(rec.finish("3"), rec.ack("3")) is None
    assert not await chain.drain()
    assert rec.failures == 1
    assert rec.log == ["finish 1 started"]  # no ack at all, and batch 2's finish never ran
