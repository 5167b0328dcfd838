"""Settings that must do what they say, and the API token check (#17 items 7 and 8)."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
import redis

from streams.http_auth import bearer_ok
from tests.service_helpers import raw, running_service, service_settings, transactions


def test_the_bearer_check_is_constant_time_and_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert bearer_ok("Bearer s3cret", "s3cret")
    assert not bearer_ok("Bearer s3cre", "s3cret")
    assert not bearer_ok("Bearer s3cretX", "s3cret")
    assert not bearer_ok("bearer s3cret", "s3cret")
    assert not bearer_ok("Bearer s3crét", "s3cret")  # non-ASCII: refused, no TypeError
    assert not bearer_ok(None, "s3cret")
    assert bearer_ok(None, None)  # no token configured: open (loopback only, see settings)
    assert len(calls) == 5, "every comparison with a token must go through compare_digest"


@pytest.mark.integration
async def test_thresholds_key_prefix_and_linger_take_effect(stack, tmp_path: Path) -> None:
    settings = service_settings(
        stack,
        tmp_path,
        **{
            "thresholds.key_prefix": "thr-own:",
            # per-user statistics on (the packaged model learned a global policy, which
            # keeps none), so that scoring writes a key per user under the prefix
            "thresholds.learned": False,
            "kafka.linger_ms": 37,
            "batch.idle_linger_ms": 3,
        },
    )
    seq_prefix = settings.sequence.key_prefix
    async with running_service(settings) as svc:
        assert svc.runtime is not None
        assert svc.runtime.publisher.conf["linger.ms"] == 37
        assert svc.runtime.batcher.max_wait_s == 0.003  # batch.idle_linger_ms, not max_wait_ms
        await svc.runtime.pipeline.process(raw(transactions(users=4, days=3)))
    client = redis.Redis.from_url(stack.redis_url)
    try:
        own = list(client.scan_iter("thr-own:thr:*"))
        under_sequence_prefix = list(client.scan_iter(f"{seq_prefix}thr:*"))
    finally:
        client.close()
    assert len(own) == 4, "thresholds.key_prefix was not used"
    assert not under_sequence_prefix


@pytest.mark.integration
@pytest.mark.slow
async def test_entity_settings_take_effect(stack, tmp_path: Path) -> None:
    """entity.enabled off: no profile keys; on: card_cap + card_slack and ttl_s bound them
    (the card sets' TTLs run up to an eighth ahead of the states')."""
    events = raw(transactions(users=30, days=6))
    off = service_settings(stack, tmp_path, **{"entity.enabled": False})
    async with running_service(off) as svc:
        assert svc.runtime is not None and svc.runtime.engine.entities is None
        await svc.runtime.pipeline.process(events)
    on = service_settings(
        stack, tmp_path, **{"entity.card_cap": 3, "entity.card_slack": 1, "entity.ttl_s": 100}
    )
    async with running_service(on) as svc:
        assert svc.runtime is not None
        await svc.runtime.pipeline.process(events)
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert not list(client.scan_iter(f"{off.sequence.key_prefix}ent:*"))
        cards = list(client.scan_iter(f"{on.sequence.key_prefix}ent:*:c"))
        assert cards, "no profiles were written"
        assert max(client.zcard(k) for k in cards) <= 4
        assert max(client.zcard(k) for k in cards) >= 2  # the cap, not a lack of traffic
        states = [k[: -len(b":c")] for k in cards]
        assert all(0 < client.ttl(k) <= 100 for k in states)
        # the card sets' TTLs run up to an eighth ahead of their states' (entity_store)
        assert all(0 < client.ttl(k) <= 100 + 100 // 8 for k in cards)
    finally:
        client.close()
