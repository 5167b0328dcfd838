"""One contract suite, run against the in-memory store and the real embedded Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from features.errors import StoreUnavailableError
from features.events import RECORD_DTYPE, RECORD_SIZE
from scoring.state.redis_retry import RedisClient
from scoring.state.sequence_config import DAY_MS, SequenceStoreConfig
from scoring.state.sequence_store import InMemorySequenceStore, RedisSequenceStore
from tests.redis_clients import STORE_BACKENDS, client_for

T0 = 1_767_225_600_000  # 2026-01-01


def rec(tx: int, ts: int, amount: float = 10.0) -> np.ndarray:
    r = np.zeros(1, dtype=RECORD_DTYPE)
    r["tx"], r["ts"], r["amount"], r["mcc"] = tx, ts, amount, 5411
    r["lat"] = r["lon"] = np.nan
    return r


def recs(*pairs: tuple[int, int]) -> np.ndarray:
    return np.concatenate([rec(tx, ts) for tx, ts in pairs])


@pytest.fixture(params=STORE_BACKENDS)
async def make_store(request: pytest.FixtureRequest, unique_name) -> AsyncIterator:
    clients: list[RedisClient] = []

    def make(config: SequenceStoreConfig | None = None):
        config = config or SequenceStoreConfig(key_prefix=unique_name("t") + ":")
        if request.param.startswith("redis-cluster"):
            config = config.model_copy(update={"cluster_mode": True})
        if request.param == "memory":
            return InMemorySequenceStore(config)
        client = client_for(request, request.param)
        clients.append(client)
        return RedisSequenceStore(client, config)

    yield make
    for c in clients:
        await c.aclose()


async def test_empty_history(make_store) -> None:
    store = make_store()
    assert (await store.read_batch(["nobody"]))["nobody"].size == 0
    prior = await store.append_and_read(["new"], recs((1, T0)))
    assert prior["new"].size == 0


async def test_a_redis_that_lost_its_scripts_still_answers(make_store) -> None:
    """After ``SCRIPT FLUSH`` (a restarted Redis keeps data on disk, not scripts) the
    append script is loaded again and the batch re-sent, once, with nothing doubled."""
    store = make_store()
    await store.append_and_read(["a", "b"], recs((1, T0), (2, T0 + 1)))
    if isinstance(store, RedisSequenceStore):
        await store.client.script_flush()
    prior = await store.append_and_read(
        ["a", "b", "a"], recs((3, T0 + 2), (4, T0 + 3), (5, T0 + 4))
    )
    assert prior["a"]["tx"].tolist() == [1] and prior["b"]["tx"].tolist() == [2]
    after = await store.read_batch(["a", "b"])
    assert after["a"]["tx"].tolist() == [1, 3, 5] and after["b"]["tx"].tolist() == [2, 4]


async def test_same_event_twice_changes_nothing(make_store) -> None:
    store = make_store()
    await store.append_batch(["u", "u"], recs((1, T0), (2, T0 + 1000)))
    before = (await store.read_batch(["u"]))["u"]
    changed = rec(1, T0 + 5, amount=999.0)  # same transaction id, different payload
    await store.append_batch(["u", "u"], np.concatenate([recs((1, T0)), changed]))
    after = (await store.read_batch(["u"]))["u"]
    assert after.tobytes() == before.tobytes()


async def test_out_of_order_event_lands_in_place(make_store) -> None:
    store = make_store()
    await store.append_batch(["u", "u"], recs((10, T0 + 3000), (11, T0 + 1000)))
    await store.append_batch(["u"], recs((12, T0 + 2000)))
    seq = (await store.read_batch(["u"]))["u"]
    assert seq["ts"].tolist() == [T0 + 1000, T0 + 2000, T0 + 3000]
    assert seq["tx"].tolist() == [11, 12, 10]


async def test_event_time_window_relative_to_newest(make_store) -> None:
    store = make_store()
    old = T0 - 400 * DAY_MS  # a replay of last year's file must work: not wall clock
    await store.append_batch(["u", "u"], recs((1, old), (2, old + 10 * DAY_MS)))
    assert (await store.read_batch(["u"]))["u"].size == 2
    await store.append_batch(["u"], recs((3, old + 35 * DAY_MS)))
    seq = (await store.read_batch(["u"]))["u"]
    assert seq["tx"].tolist() == [2, 3]  # event 1 is 35 days older than the newest


async def test_max_length(make_store, unique_name) -> None:
    store = make_store(SequenceStoreConfig(key_prefix=unique_name("t") + ":", max_length=5))
    n = 12
    await store.append_batch(["u"] * n, recs(*[(i + 1, T0 + i) for i in range(n)]))
    seq = (await store.read_batch(["u"]))["u"]
    assert seq["tx"].tolist() == list(range(n - 4, n + 1))


async def test_prior_is_returned_before_the_append(make_store) -> None:
    store = make_store()
    await store.append_batch(["u"], recs((1, T0)))
    prior = await store.append_and_read(["u", "v"], recs((2, T0 + 1), (3, T0 + 2)))
    assert prior["u"]["tx"].tolist() == [1]
    assert prior["v"].size == 0


async def test_many_users_one_batch(make_store) -> None:
    store = make_store()
    users = [f"user{i % 50}" for i in range(500)]
    await store.append_batch(users, recs(*[(i + 1, T0 + i) for i in range(500)]))
    seqs = await store.read_batch([f"user{i}" for i in range(50)])
    assert all(s.size == 10 for s in seqs.values())


@pytest.mark.integration
async def test_redis_keys_are_hash_tagged_and_expire(stack, unique_name) -> None:
    prefix = unique_name("tag") + ":"
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        store = RedisSequenceStore(client, SequenceStoreConfig(key_prefix=prefix, ttl_s=60))
        await store.append_batch(["alice"], recs((1, T0)))
        keys = sorted(k.decode() for k in await client.keys(prefix + "*"))
        assert keys == [f"{prefix}seq:{{alice}}"]  # one compact string per user
        assert 0 < await client.ttl(keys[0]) <= 60
        assert await client.strlen(keys[0]) == RECORD_SIZE
        # Redis Cluster hashes only the part between the first { and }
        assert keys[0][keys[0].index("{") + 1 : keys[0].index("}")] == "alice"
    finally:
        await client.aclose()


async def test_memory_store_ttl() -> None:
    store = InMemorySequenceStore(SequenceStoreConfig(ttl_s=3600))
    await store.append_batch(["u"], recs((1, T0)))
    store.expire_idle(T0 + 3_599_000)
    assert (await store.read_batch(["u"]))["u"].size == 1
    store.expire_idle(T0 + 3_601_000)
    assert (await store.read_batch(["u"]))["u"].size == 0


async def test_unreachable_redis_retries_then_fails_loudly() -> None:
    from streams.devtools.embedded import free_port

    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2
    )
    store = RedisSequenceStore(client, retry_attempts=2, retry_backoff_s=0.01)
    try:
        with pytest.raises(StoreUnavailableError, match="after 3 attempts"):
            await store.read_batch(["u"])
        assert not await store.ping()
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_redis_restart_mid_stream_recovers_with_retries(stack, unique_name) -> None:
    client = aioredis.Redis.from_url(stack.redis_url)
    store = RedisSequenceStore(
        client,
        SequenceStoreConfig(key_prefix=unique_name("r") + ":"),
        retry_attempts=8,
        retry_backoff_s=0.1,
    )
    try:
        await store.append_batch(["u"], recs((1, T0)))
        stack.stop_redis()
        loop = asyncio.get_running_loop()

        async def bring_back() -> None:
            await asyncio.sleep(0.5)
            await loop.run_in_executor(None, stack.start_redis)

        back = asyncio.create_task(bring_back())
        await store.append_batch(["u"], recs((2, T0 + 1)))  # retried until Redis is back
        await back
        seq = (await store.read_batch(["u"]))["u"]
        assert seq["tx"].tolist() == [2]  # memory-only Redis lost event 1; event 2 not dropped
    finally:
        await client.aclose()


def test_record_layout_the_lua_script_relies_on() -> None:
    assert RECORD_DTYPE.fields["ts"][1] == 0 and RECORD_DTYPE.fields["tx"][1] == 8
    assert RECORD_DTYPE["ts"].str == "<i8" and RECORD_DTYPE["tx"].str == "<u8"


@pytest.mark.integration
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_redis_store_matches_the_reference_store_on_random_streams(
    seed: int, stack, unique_name
) -> None:
    """Differential test: ties, late events, repeats within and across batches, trims.

    The in-memory store is the readable reference; the Lua script must agree with it on
    every prior sequence it returns and on the final state.
    """
    rng = np.random.default_rng(seed)
    config = SequenceStoreConfig(
        key_prefix=unique_name("diff") + ":", window_days=1.0, max_length=12
    )
    client = aioredis.Redis.from_url(stack.redis_url)
    redis_store, reference = RedisSequenceStore(client, config), InMemorySequenceStore(config)
    try:
        seen: list[tuple[str, int, int]] = []
        for _ in range(25):
            batch = []
            for _ in range(int(rng.integers(1, 40))):
                if seen and rng.random() < 0.15:  # a repeat of an earlier event
                    batch.append(seen[int(rng.integers(len(seen)))])
                    continue
                user = f"u{rng.integers(4)}"
                tx = int(rng.integers(1, 2**63, dtype=np.int64)) * int(rng.integers(1, 3))
                # mostly moving forward, some late, some exact ties
                ts = T0 + len(seen) * 600_000 + int(rng.integers(-6, 2)) * 3_600_000
                if seen and rng.random() < 0.1:
                    ts = seen[-1][2]
                batch.append((user, tx % 2**64, ts))
                seen.append(batch[-1])
            users = [u for u, _, _ in batch]
            records = recs(*[(tx, ts) for _, tx, ts in batch])
            got = await redis_store.append_and_read(users, records)
            want = await reference.append_and_read(users, records)
            for u in want:
                assert got[u].tobytes() == want[u].tobytes(), u
        final_got = await redis_store.read_batch(["u0", "u1", "u2", "u3", "nobody"])
        final_want = await reference.read_batch(["u0", "u1", "u2", "u3", "nobody"])
        for u in final_want:
            assert final_got[u].tobytes() == final_want[u].tobytes(), u
        assert sum(v.size for v in final_got.values()) > 12
    finally:
        await client.aclose()
