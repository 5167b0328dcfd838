"""The eager ``wait_first`` keeps Faust's semantics: results, blocking, interruption, errors.

Pure asyncio over a real ``mode.Service`` (the class Faust's consumer derives from); the
worker tests in test_worker.py run the patched consumer against the embedded broker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import mode
import pytest

from streams.faust_tuning import eager_wait_first


class Patched(mode.Service):
    wait_first = eager_wait_first(mode.Service.wait_first)


@pytest.fixture
async def service() -> Any:
    svc = Patched()
    await svc.start()
    yield svc
    await svc.stop()


async def test_a_callback_that_does_not_block_runs_on_the_spot(service: Patched) -> None:
    suspend = asyncio.Event()
    ran: list[int] = []

    async def deliver(n: int) -> int:
        ran.append(n)
        return n * 10

    waiter = suspend.wait()
    res = await service.wait_first(deliver(4), waiter)
    assert waiter.cr_frame is None  # closed, not left for Python to warn about
    assert ran == [4]
    assert res.results == [40] and not res.stopped
    assert asyncio.iscoroutine(res.done[0])


async def test_a_blocked_callback_resumes_with_what_it_waited_for(service: Patched) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)  # full: the next put blocks until a get
    suspend = asyncio.Event()

    async def deliver(n: int) -> int:
        await queue.put(n)
        await asyncio.sleep(0)  # a bare yield in between
        return n + 1

    call = deliver(7)
    waiting = asyncio.ensure_future(service.wait_first(call, suspend.wait()))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    assert queue.get_nowait() == 0
    res = await asyncio.wait_for(waiting, 1)
    assert res.results == [8] and res.done == [call] and not res.stopped
    assert queue.get_nowait() == 7


async def test_suspending_flow_interrupts_a_blocked_callback(service: Patched) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)
    suspend = asyncio.Event()
    cancelled = asyncio.Event()

    async def deliver(n: int) -> None:
        try:
            await queue.put(n)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    waiting = asyncio.ensure_future(service.wait_first(deliver(1), suspend.wait()))
    await asyncio.sleep(0.01)
    suspend.set()
    res = await asyncio.wait_for(waiting, 1)
    assert res.results == [True]  # the suspend event won, as with Faust's own wait_first
    await asyncio.wait_for(cancelled.wait(), 1)  # the blocked delivery was cancelled
    assert list(queue._queue) == [0]  # type: ignore[attr-defined]  # and put nothing


@pytest.mark.parametrize("blocks_first", [False, True])
async def test_an_error_in_the_callback_reaches_the_caller(
    service: Patched, blocks_first: bool
) -> None:
    async def deliver() -> None:
        if blocks_first:
            await asyncio.sleep(0.001)
        raise KeyError("undecodable")

    waiter = asyncio.Event().wait()
    with pytest.raises(KeyError, match="undecodable"):
        await service.wait_first(deliver(), waiter)
    await asyncio.sleep(0)  # a cancelled waiter task finishes on its next step
    assert waiter.cr_frame is None  # closed or cancelled, never left unawaited


async def test_a_stopped_service_reports_stopped(service: Patched) -> None:
    async def deliver() -> int:
        return 1

    await service.stop()
    res = await service.wait_first(deliver(), asyncio.Event().wait())
    assert res.stopped and res.results == []


async def test_events_and_timeouts_get_fausts_own_answer(service: Patched) -> None:
    plain = mode.Service()
    await plain.start()
    try:
        ready = asyncio.Event()
        ready.set()
        for svc in (service, plain):
            res = await svc.wait_first(ready)
            assert res.done == [ready] and res.results == [True]

        async def slow() -> None:
            await asyncio.sleep(5)

        ours = await service.wait_first(slow(), timeout=0.01)
        theirs = await plain.wait_first(slow(), timeout=0.01)
        assert ours == theirs  # ([], [], True): mode reports a timeout as "stopped"
    finally:
        await plain.stop()


def test_the_worker_app_installs_it_once_on_fausts_kafka_consumer(tmp_path: Any) -> None:
    from faust.transport.drivers import aiokafka as driver

    from streams.app import create_app
    from streams.settings import Settings

    create_app(Settings(data_dir=tmp_path))
    patched = driver.Consumer.wait_first
    assert patched is not mode.Service.wait_first
    assert patched.__qualname__.startswith("eager_wait_first")
    create_app(Settings(data_dir=tmp_path))  # a second app does not wrap it twice
    assert driver.Consumer.wait_first is patched
