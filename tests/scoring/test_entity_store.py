"""Entity profiles: the Redis script equals the in-memory specification, value for value,
and the profile keeps its promises (no self-sight, idempotent labels, bounded state)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from features.entity_profile import (
    DAY_MS,
    ENTITY_KINDS,
    HOUR_MS,
    STATS,
    EntityProfileConfig,
)
from features.events import RECORD_DTYPE
from scoring.state.entity_store import EntityLabel, InMemoryEntityStore, RedisEntityStore
from scoring.state.redis_retry import RedisClient
from tests.redis_clients import STORE_BACKENDS, client_for

T0 = 1_767_225_600_000  # 2026-01-01
S = {name: i for i, name in enumerate(STATS)}
M = ENTITY_KINDS.index("merchant")
D = ENTITY_KINDS.index("device")
ONE = np.ones(1, dtype=bool)


def batch(rows: list[tuple[int, int, float, int, int]]) -> np.ndarray:
    """(tx, ts, amount, merchant, device) → records."""
    out = np.zeros(len(rows), dtype=RECORD_DTYPE)
    for i, (tx, ts, amount, merchant, device) in enumerate(rows):
        out[i]["tx"], out[i]["ts"], out[i]["amount"] = tx, ts, amount
        out[i]["merchant"], out[i]["device"] = merchant, device
    return out


@pytest.fixture(params=STORE_BACKENDS)
async def make_store(request: pytest.FixtureRequest, unique_name) -> AsyncIterator:
    clients: list[RedisClient] = []

    def make(config: EntityProfileConfig | None = None):
        if request.param == "memory":
            return InMemoryEntityStore(config)
        client = client_for(request, request.param)
        clients.append(client)
        return RedisEntityStore(
            client,
            unique_name("e") + ":",
            config,
            cluster_mode=request.param.startswith("redis-cluster"),
        )

    yield make
    for c in clients:
        await c.aclose()


async def test_an_event_never_sees_itself_and_the_next_one_does(make_store) -> None:
    store = make_store()
    recs = batch([(1, T0, 50.0, 7, 0), (2, T0 + 1000, 20.0, 7, 0)])
    cards = np.array([11, 12], dtype=np.uint64)
    stats = await store.observe(recs, cards, np.ones(2, bool))
    assert stats[0, M, S["tx_24h"]] == 0.0 and stats[0, M, S["card_new"]] == 1.0
    assert stats[1, M, S["tx_24h"]] == pytest.approx(np.exp(-1000 / DAY_MS))
    assert stats[1, M, S["cards_24h"]] == pytest.approx(np.exp(-1000 / DAY_MS))
    assert stats[1, M, S["amount_30d"]] == pytest.approx(50.0, rel=1e-6)
    assert (stats[:, D] == 0).all()  # no device: zero statistics, not an error


async def test_a_batch_without_any_merchant_or_device_is_all_zero(make_store) -> None:
    store = make_store()
    recs = batch([(1, T0, 5.0, 0, 0), (2, T0 + 1, 6.0, 0, 0)])
    stats = await store.observe(recs, np.array([1, 2], dtype=np.uint64), np.ones(2, bool))
    assert stats.shape == (2, len(ENTITY_KINDS), len(STATS)) and not stats.any()


async def test_a_replayed_event_reads_but_changes_nothing(make_store) -> None:
    store = make_store()
    recs = batch([(1, T0, 50.0, 7, 8)])
    cards = np.array([11], dtype=np.uint64)
    await store.observe(recs, cards, np.ones(1, bool))
    later = batch([(2, T0 + HOUR_MS, 5.0, 7, 8)])
    first = await store.observe(later, cards, np.zeros(1, bool))
    again = await store.observe(later, cards, np.zeros(1, bool))
    assert (first == again).all()
    assert first[0, M, S["tx_1h"]] == pytest.approx(np.exp(-1.0))


async def test_labels_count_from_when_they_are_known_and_only_once(make_store) -> None:
    store = make_store()
    cards = np.array([11], dtype=np.uint64)
    await store.observe(batch([(1, T0, 80.0, 7, 8)]), cards, np.ones(1, bool))
    label = EntityLabel(7, 8, tx=1, known_ms=T0 + 3 * DAY_MS, fraud=True, amount=80.0)
    assert await store.label(label) == 2
    assert await store.label(label) == 0  # a repeat changes nothing
    before = await store.observe(batch([(2, T0 + 2 * DAY_MS, 1.0, 7, 8)]), cards, np.zeros(1, bool))
    after = await store.observe(batch([(3, T0 + 4 * DAY_MS, 1.0, 7, 8)]), cards, np.zeros(1, bool))
    gone = await store.observe(batch([(4, T0 + 40 * DAY_MS, 1.0, 7, 8)]), cards, np.zeros(1, bool))
    assert before[0, M, S["fraud_30d"]] == 0.0  # not yet known at that time
    assert after[0, M, S["fraud_7d"]] == 1.0 and after[0, D, S["fraud_30d"]] == 1.0
    assert after[0, M, S["fraud_amount_30d"]] == 80.0
    assert gone[0, M, S["fraud_30d"]] == 0.0
    corrected = EntityLabel(7, 8, 1, T0 + 5 * DAY_MS, False, 80.0)
    assert await store.label(corrected) == 2
    fixed = await store.observe(batch([(5, T0 + 6 * DAY_MS, 1.0, 7, 8)]), cards, np.zeros(1, bool))
    assert fixed[0, M, S["fraud_30d"]] == 0.0 and fixed[0, M, S["legit_30d"]] == 1.0


async def test_redis_equals_the_specification_on_a_random_history(stack, unique_name) -> None:
    """Many batches of many cards over few merchants and devices, late events, repeats,
    labels and small caps: every statistic of every event equal (to 1e-12)."""
    rng = np.random.default_rng(7)
    config = EntityProfileConfig(card_cap=5, card_slack=2, label_cap=3)
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        stores = [
            InMemoryEntityStore(config),
            RedisEntityStore(client, unique_name("e") + ":", config),
            RedisEntityStore(client, unique_name("e") + ":", config, cluster_mode=True),
        ]
        t = T0
        tx = 0
        fraud_seen = 0.0
        for step in range(30):
            n = int(rng.integers(1, 25))
            rows = []
            for _ in range(n):
                tx += 1
                t += int(rng.integers(0, 6 * HOUR_MS))
                late = int(rng.integers(0, 3 * DAY_MS)) if rng.random() < 0.1 else 0
                rows.append(
                    (
                        tx,
                        t - late,
                        float(np.round(rng.lognormal(3, 1), 2)),
                        int(rng.integers(0, 4)),
                        int(rng.integers(0, 3)),
                    )
                )
            recs = batch(rows)
            cards = rng.integers(1, 12, size=n).astype(np.uint64)
            write = rng.random(n) > 0.1
            got = [await s.observe(recs, cards, write) for s in stores]
            for other in got[1:]:
                np.testing.assert_allclose(other, got[0], rtol=1e-12, atol=1e-12)
            fraud_seen += float(got[0][..., S["fraud_30d"]].sum())
            for _ in range(int(rng.integers(0, 4))):
                lab = EntityLabel(
                    merchant=int(rng.integers(0, 4)),
                    device=int(rng.integers(0, 3)),
                    tx=int(rng.integers(1, tx + 1)),
                    known_ms=t + int(rng.integers(0, DAY_MS)),
                    fraud=bool(rng.random() < 0.8),
                    amount=float(np.round(rng.lognormal(4, 1), 2)),
                )
                changed = [await s.label(lab) for s in stores]
                assert len(set(changed)) == 1, (step, changed)
        assert fraud_seen > 0  # the labels did reach the statistics compared
    finally:
        await client.aclose()


async def test_state_is_bounded_per_entity(stack, unique_name) -> None:
    config = EntityProfileConfig(card_cap=10, card_slack=5, ttl_s=60)
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        store = RedisEntityStore(client, unique_name("e") + ":", config)
        recs = batch([(i, T0 + i, 1.0, 7, 0) for i in range(1, 101)])
        await store.observe(recs, np.arange(1, 101, dtype=np.uint64), np.ones(100, bool))
        keys = store.keys("merchant", 7)
        assert await client.zcard(keys[1]) <= 15
        # the state lives ttl_s; the card set an eighth longer (its TTL runs ahead)
        assert 0 < await client.ttl(keys[0]) <= 60 and 60 <= await client.ttl(keys[1]) <= 67
    finally:
        await client.aclose()


async def _c_until(client: aioredis.Redis, key: str, value: float) -> None:
    """Overwrite the state's last field (when the card set's TTL runs out), keeping its TTL."""
    blob = await client.get(key)
    await client.set(key, blob[:-8] + np.float64(value).astype("<f8").tobytes(), keepttl=True)


async def test_the_card_set_ttl_is_refreshed_only_when_the_state_would_outlive_it(
    stack, unique_name
) -> None:
    """One EXPIRE every few days per entity, not one per batch: a later write leaves the
    card set's TTL alone while it still outlasts the state's, and refreshes it once it
    would not."""
    config = EntityProfileConfig(ttl_s=800)
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        store = RedisEntityStore(client, unique_name("e") + ":", config)
        h, c = store.keys("merchant", 7)[:2]
        await store.observe(batch([(1, T0, 5.0, 7, 0)]), np.array([1], np.uint64), ONE)
        first = await client.pttl(c)
        assert 800_000 < first <= 900_000  # ttl + an eighth
        await client.expire(c, 850)  # as if some time had passed since
        await store.observe(batch([(2, T0 + 1, 5.0, 7, 0)]), np.array([2], np.uint64), ONE)
        assert 800_000 < await client.pttl(c) <= 850_000  # not refreshed: still outlasts h
        assert 790_000 < await client.pttl(h) <= 800_000  # the state's own TTL was
        await _c_until(client, h, 0.0)  # as if the card set's TTL ran out before the state's
        await store.observe(batch([(3, T0 + 2, 5.0, 7, 0)]), np.array([3], np.uint64), ONE)
        assert await client.pttl(c) > 850_000  # refreshed
    finally:
        await client.aclose()


async def test_a_card_set_left_behind_by_an_expired_state_is_not_read(stack, unique_name) -> None:
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        store = RedisEntityStore(client, unique_name("e") + ":")
        h, c = store.keys("merchant", 7)[:2]
        cards = np.array([1, 2, 3], np.uint64)
        await store.observe(batch([(i, T0 + i, 5.0, 7, 0) for i in (1, 2, 3)]), cards, ONE[[0] * 3])
        await client.delete(h)  # the state expired; its card set (TTL ahead) has not yet
        stats = await store.observe(batch([(9, T0 + DAY_MS, 5.0, 7, 0)]), cards[:1], ONE)
        assert stats[0, M, S["card_new"]] == 1.0  # a new profile: card 1 is new to it
        assert stats[0, M, S["tx_24h"]] == 0.0
        assert await client.zcard(c) == 1  # only the new visit
    finally:
        await client.aclose()


async def test_a_state_written_before_its_ttl_field_reads_the_same(stack, unique_name) -> None:
    """States written before the card set's TTL was kept in them (one double shorter) read
    as they did, and the next write gives them the field and the card set its TTL."""
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        new, old = (RedisEntityStore(client, unique_name("e") + ":") for _ in range(2))
        first = batch([(i, T0 + i * HOUR_MS, 5.0 * i, 7, 0) for i in (1, 2, 3)])
        cards = np.array([1, 2, 3], np.uint64)
        for store in (new, old):
            await store.observe(first, cards, ONE[[0] * 3])
        h, c = old.keys("merchant", 7)[:2]
        blob = await client.get(h)
        await client.set(h, blob[:-8], keepttl=True)  # the former layout
        await client.persist(c)
        later = batch([(4, T0 + 5 * HOUR_MS, 7.0, 7, 0)])
        stats = [await s.observe(later, cards[1:2], ONE) for s in (new, old)]
        np.testing.assert_array_equal(stats[0], stats[1])
        assert stats[1][0, M, S["tx_24h"]] > 0  # the old state's counters were read
        assert len(await client.get(h)) == len(blob)
        assert await client.ttl(c) > 0
    finally:
        await client.aclose()


async def test_a_label_before_any_event_leaves_no_card_set_without_a_ttl(
    stack, unique_name
) -> None:
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        store = RedisEntityStore(client, unique_name("e") + ":")
        h, c = store.keys("merchant", 9)[:2]
        label = EntityLabel(merchant=9, device=0, tx=5, known_ms=T0, fraud=True, amount=9.0)
        assert await store.label(label) == 1
        assert await client.exists(c) == 0
        await store.observe(batch([(6, T0 + 1, 5.0, 9, 0)]), np.array([1], np.uint64), ONE)
        assert await client.ttl(c) > 0  # the first event's card set got its TTL
        assert await client.ttl(h) > 0
    finally:
        await client.aclose()
