"""``DeliveryChain``: a batch's events are acked after its delivery, in batch order,
while the next batch is scored; a failed delivery acks nothing from then on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from streams.delivery_chain import DeliveryChain


class _Acks:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.failures = 0

    async def ack(self, event: int) -> None:
        self.acked.append(event)

    async def completed(self, step: Awaitable[Any]) -> bool:
        try:
            await step
            return True
        except RuntimeError:
            self.failures += 1
            return False


async def _delivery(done: asyncio.Event, fail: bool = False) -> None:
    await done.wait()
    if fail:
        raise RuntimeError("unacknowledged")


async def test_the_next_batch_goes_on_while_acks_wait_for_delivery_in_order() -> None:
    acks = _Acks()
    chain = DeliveryChain(acks.ack, acks.completed)
    first, second = asyncio.Event(), asyncio.Event()
    # the first batch is handed over at once: the worker can score the next one
    assert await asyncio.wait_for(chain.add([1, 2], _delivery(first)), 1)
    await asyncio.sleep(0.01)
    assert acks.acked == [], "acked before the broker acknowledged the decisions"
    # the second batch is published before the first is delivered: it waits its turn
    adding = asyncio.ensure_future(chain.add([3], _delivery(second)))
    second.set()  # delivered first, yet acked only after the batch before it
    await asyncio.sleep(0.01)
    assert not adding.done() and acks.acked == []
    first.set()
    assert await asyncio.wait_for(adding, 1)
    assert chain.last is not None and await chain.last
    assert acks.acked == [1, 2, 3]


async def test_a_failed_delivery_acks_nothing_from_that_batch_on() -> None:
    acks = _Acks()
    chain = DeliveryChain(acks.ack, acks.completed)
    ok, bad = asyncio.Event(), asyncio.Event()
    ok.set()
    assert await chain.add([1], _delivery(ok))
    assert await chain.add([2, 3], _delivery(bad, fail=True))
    bad.set()
    never = asyncio.Event()
    later = _delivery(never)
    assert not await asyncio.wait_for(chain.add([4], later), 1)
    assert acks.acked == [1] and acks.failures == 1
    assert later.cr_frame is None, "the dropped batch's delivery coroutine was left unclosed"


async def test_wait_returns_once_the_last_batch_is_acked_and_reports_a_failure() -> None:
    acks = _Acks()
    chain = DeliveryChain(acks.ack, acks.completed)
    assert await chain.wait()  # nothing added yet
    done, bad = asyncio.Event(), asyncio.Event()
    assert await chain.add([1], _delivery(done))
    waiting = asyncio.ensure_future(chain.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    done.set()
    assert await asyncio.wait_for(waiting, 1) and acks.acked == [1]
    assert await chain.add([2], _delivery(bad, fail=True))
    bad.set()
    assert not await asyncio.wait_for(chain.wait(), 1) and acks.acked == [1]
