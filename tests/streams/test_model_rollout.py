"""A model roll-out mid-stream on the embedded stack: shadow, canary 10 %, promote, rollback.

A real worker process follows a real registry folder while a steady stream of events
flows. Every decision is checked against the roles in force when it was scored, from
the times the worker says it applied each generation (``workers/<worker>.jsonl`` in the
registry): a decision scored before a change must carry the earlier roles, one scored
after it the later roles for its card (the canary's share by the card's hash) and a
shadow score exactly while a shadow is set. Only a batch in flight at the swap (scored
within ``IN_FLIGHT_S`` after it) may carry either, and no card goes back to an earlier
phase's roles once it saw a later one's.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from scoring.artifact import DEFAULT_ARTIFACT, load_artifact
from scoring.model_registry import ModelRegistry
from scoring.model_roles import in_canary
from tests.model_versions import make_version
from tests.worker_helpers import WorkerEnv, events_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

V1, V2 = load_artifact().version, "v2-rollout"
IN_FLIGHT_S = 0.5  # a batch that started before a swap finishes on its roles after it
RATE = 1200  # events/s produced


def _phase_roles(phase: int, user_in_canary: bool) -> tuple[str, str | None]:
    """(deciding version, shadow version) of a card in each phase."""
    return [
        (V1, None),  # 0: v1 alone
        (V1, V2),  # 1: v2 as shadow
        (V2 if user_in_canary else V1, None),  # 2: v2 canary for 10 % of cards
        (V2, None),  # 3: v2 promoted
        (V1, None),  # 4: rolled back
    ][phase]


def test_shadow_canary_promote_rollback_mid_stream(wenv: WorkerEnv, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(DEFAULT_ARTIFACT)
    registry.register(make_version(tmp_path, V2))
    registry.promote(V1)
    events = events_for(n_users=2500, days=2, seed=21)
    assert len(events) >= 20_000
    worker = wenv.start(
        extra_env={
            "RISKSTREAM_MODEL__REGISTRY": str(registry.root),
            "RISKSTREAM_MODEL__WATCH_INTERVAL_S": "0.1",
            "RISKSTREAM_MODEL__CACHE_CAPACITY": "10000",
        }
    )
    not_ready: list[int] = []
    stop = threading.Event()

    def watch_readyz() -> None:
        while not stop.wait(0.05):
            try:
                with urllib.request.urlopen(worker.url("/readyz"), timeout=2) as r:
                    code = r.status
            except OSError as exc:
                code = getattr(exc, "code", -1)
            if code != 200:
                not_ready.append(code)

    written = 0
    steps = [
        (0.15, lambda: registry.set_shadow(V2)),
        (0.35, lambda: registry.set_canary(V2, 10)),
        (0.60, lambda: registry.promote(V2)),
        (0.80, lambda: registry.rollback()),
    ]
    watcher = threading.Thread(target=watch_readyz, daemon=True)
    watcher.start()
    producer = Producer({"bootstrap.servers": wenv.stack.bootstrap_servers, "linger.ms": 5})
    try:
        chunk = RATE // 20
        for start in range(0, len(events), chunk):
            t0 = time.monotonic()
            for key, value in events[start : start + chunk]:
                producer.produce(wenv.topics["transactions"], key=key, value=value)
            producer.poll(0)
            while steps and start >= steps[0][0] * len(events):
                steps.pop(0)[1]()
                written += 1
            time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))
        assert producer.flush(30) == 0
        want = {json.loads(v)["transaction_id"] for _, v in events}
        scores = wenv.read("scores", expected=len(want), timeout_s=180)
    finally:
        stop.set()
        watcher.join(5)
        worker.stop()
    assert written == 4
    (applied,) = registry.applied().values()  # one worker: when it applied each generation
    assert [a["generation"] for a in applied] == [1, 2, 3, 4, 5]
    changes = [datetime.fromisoformat(a["at"]).timestamp() for a in applied[1:]]
    records = [json.loads(m.value()) for m in scores]
    got = {r["transaction_id"] for r in records}
    assert got == want, f"lost {len(want - got)}"
    assert not_ready == []  # /readyz stayed green through every swap

    users = sorted({r["user_id"] for r in records})
    canary_cards = {u for u, c in zip(users, in_canary(users, 1000), strict=True) if c}
    strict, last_phase, in_phase2 = 0, {}, []
    for r in records:  # topic order per partition = each card's processing order
        at = datetime.fromisoformat(r["scored_at"]).timestamp()
        phase = sum(at >= t for t in changes)
        near = any(t <= at < t + IN_FLIGHT_S for t in changes)
        seen = (r["model_version"], r["shadow_model_version"])
        assert (r["shadow_score"] is None) == (r["shadow_model_version"] is None)
        card = r["user_id"]
        options = [phase - 1, phase] if near and phase > 0 else [phase]
        fits = [p for p in options if _phase_roles(p, card in canary_cards) == seen]
        assert fits, f"{seen} at phase {phase} for {card} (canary: {card in canary_cards})"
        if not near:
            strict += 1
        # a card never goes back to an earlier phase's roles once it saw a later one
        assert max(fits) >= last_phase.get(card, 0), f"{card} went back to an older phase"
        last_phase[card] = max(last_phase.get(card, 0), min(fits))
        if phase == 2 and not near:
            in_phase2.append(r["model_version"] == V2)
    assert strict > len(records) * 0.8  # most decisions are checked against one phase
    share = sum(in_phase2) / len(in_phase2)
    assert len(in_phase2) > 2000 and abs(share - 0.10) <= 0.02, share
    history = [h["reason"] for h in registry.history()]
    assert history[-1].startswith("rollback") and len(history) == 5
