"""Scoring engine: cached scoring equals full recomputation; thresholds; reasons; swaps.

On the window model (``tests.model_versions.WINDOW_ARTIFACT``): its cache refresh after
publishing is what the first tests check; ``test_incremental_engine`` has the
incremental model's."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest

from features.contracts import Transaction
from scoring.artifact import load_artifact
from scoring.bundle import ModelBundle
from scoring.case_memory import FraudCaseMemory
from scoring.decision import ScoreRequest, alert_id
from scoring.embedding_cache import FaissEmbeddingCache
from scoring.engine import ScoringEngine
from scoring.model_roles import ServingRoles
from scoring.onnx_model import OnnxRiskModel
from scoring.state.entity_store import EntityStore
from scoring.state.sequence_store import InMemorySequenceStore
from scoring.thresholds import InMemoryThresholdPolicy, ThresholdConfig, ThresholdPolicy
from streams.decision_codec import alert_json, alert_record, score_json, score_record
from tests.model_versions import WINDOW_ARTIFACT
from tests.service_helpers import score_in_batches, transactions


@pytest.fixture(scope="module")
def model() -> OnnxRiskModel:
    return OnnxRiskModel(load_artifact(WINDOW_ARTIFACT)).load()


@pytest.fixture(scope="module")
def stream() -> list[Transaction]:
    return transactions(users=25, days=20, seed=9)


def _engine(
    model: OnnxRiskModel, cached: bool, thresholds: ThresholdPolicy | None = None
) -> ScoringEngine:
    cache = (
        FaissEmbeddingCache(model.artifact.embedding_dim, 1000, model.version) if cached else None
    )
    memory = FraudCaseMemory.from_artifact(model.artifact)
    return ScoringEngine(
        ModelBundle(model, cache, memory),
        InMemorySequenceStore(),
        thresholds or InMemoryThresholdPolicy(model.artifact.global_threshold),
    )


async def test_cached_scoring_equals_full_recomputation(model, stream) -> None:
    cached, plain = _engine(model, True), _engine(model, False)
    try:
        a = await score_in_batches(cached, stream, 7)
        b = await score_in_batches(plain, stream, 7)
        np.testing.assert_allclose(a, b, atol=1e-6)
        # both refresh paths ran: windows that grow and windows full at max_history
        # (the stream spans 20 days, inside the 30-day window: every earlier event counts)
        per_user = Counter(t.user_id for t in stream).values()
        assert min(per_user) < model.artifact.spec.max_history + 1 < max(per_user)
        cache = cached.bundle.cache
        assert cache is not None and len(cache) == len({t.user_id for t in stream})
    finally:
        cached.close()
        plain.close()


async def test_the_refresh_reuses_scoring_features_exactly(model, stream) -> None:
    """A growing window's next history, built from the features scoring computed, equals
    featurizing that history from its records; full windows (which slide) are excluded."""
    from features.featurize import featurize_windows, windows_including_current
    from scoring.cache_refresh import grown_features

    spec = model.artifact.spec
    engine = _engine(model, True)
    checked = 0
    try:
        for s in range(0, len(stream), 40):
            _, pending = await engine.score([ScoreRequest(t) for t in stream[s : s + 40]])
            (part,) = pending.parts  # one deciding version
            grows = part.windows.hist_len < spec.max_history
            rows = np.flatnonzero(grows)
            got = grown_features(part.features, grows)
            want = featurize_windows(windows_including_current(part.windows.take(rows), spec), spec)
            n = got.hist_len
            np.testing.assert_array_equal(n, want.hist_len)
            for i, length in enumerate(n):
                np.testing.assert_allclose(
                    got.hist_num[i, :length], want.hist_num[i, :length], atol=1e-6
                )
                np.testing.assert_array_equal(got.hist_mcc[i, :length], want.hist_mcc[i, :length])
                np.testing.assert_array_equal(
                    got.hist_channel[i, :length], want.hist_channel[i, :length]
                )
                assert not got.hist_pad[i, :length].any() and got.hist_pad[i, length:].all()
            checked += rows.size
            await engine.refresh_cache(pending)
        assert checked > len(stream) * 0.5
    finally:
        engine.close()


@pytest.mark.slow
async def test_cache_hits_for_returning_users(model, stream) -> None:
    from scoring.metrics import CACHE_EVENTS

    engine = _engine(model, True)
    hits = CACHE_EVENTS.labels("hit")
    try:
        before = hits._value.get()
        await score_in_batches(
            engine, stream, 1
        )  # one event per batch: every returning user can hit
        assert hits._value.get() - before > len(stream) * 0.5
    finally:
        engine.close()


async def test_alerts_have_ids_reasons_and_stay_deterministic(model, stream) -> None:
    # everything alerts: exercise reasons
    engine = _engine(model, True, InMemoryThresholdPolicy(0.0, ThresholdConfig(lower=0.0)))
    try:
        decisions, _ = await engine.score([ScoreRequest(t) for t in stream[:20]])
        assert all(d.is_alert for d in decisions)
        rec = alert_record(decisions[0])
        assert rec.alert_id == alert_id(stream[0].transaction_id, model.version)
        assert any(d.reasons for d in decisions)
        for d in decisions:
            assert all(r.contribution > 0 and r.text for r in d.reasons)
            # records are built without re-validation: what goes out must still validate
            for record, sent in (
                (score_record(d), score_json(d)),
                (alert_record(d), alert_json(d)),
            ):
                wire = record.model_dump_json()
                assert sent == wire.encode()  # what the worker publishes
                again = type(record).model_validate_json(sent)
                assert again.model_dump_json() == wire
    finally:
        engine.close()


async def test_dry_run_does_not_record_the_event(model, stream) -> None:
    engine = _engine(model, False)
    try:
        await engine.score([ScoreRequest(stream[0], dry_run=True)])
        seq = await engine.store.read_batch([stream[0].user_id])
        assert seq[stream[0].user_id].size == 0
        await engine.score([ScoreRequest(stream[0])])
        seq = await engine.store.read_batch([stream[0].user_id])
        assert seq[stream[0].user_id].size == 1
    finally:
        engine.close()


async def test_hot_swap_between_batches(model, stream) -> None:
    engine = _engine(model, True)
    try:
        other = OnnxRiskModel(load_artifact(WINDOW_ARTIFACT)).load()
        engine.swap(ModelBundle(other, None, None))
        decisions, _ = await engine.score([ScoreRequest(t) for t in stream[:5]])
        assert len(decisions) == 5 and engine.bundle.model is other
        with pytest.raises(RuntimeError, match=r"load model .* before swapping"):
            engine.swap(ModelBundle(OnnxRiskModel(load_artifact(WINDOW_ARTIFACT)), None, None))
    finally:
        engine.close()


async def test_feedback_moves_threshold_and_grows_case_memory(model, stream) -> None:
    from scoring.metrics import LABELS_UNMATCHED

    engine = _engine(model, False)
    try:
        await engine.score([ScoreRequest(t) for t in stream[:10]])
        await engine.settle()  # score returns while its threshold write is still landing
        user = stream[0].user_id
        case = next(t.transaction_id for t in stream[:10] if t.user_id == user)
        base = float((await engine.thresholds.thresholds([user]))[0])
        memory = engine.bundle.memory
        assert memory is not None
        n = len(memory)
        lowered = await engine.feedback(user, case, "fraud")
        assert lowered < base
        assert len(memory) == n + 1 and case in memory.ids
        assert await engine.feedback(user, case, "fraud") == lowered  # replayed label
        assert len(memory) == n + 1
        raised = await engine.feedback(user, case, "legit")
        assert raised > lowered
        # a chargeback for a transaction the card's history does not hold (unknown, or
        # older than the window): counted, the threshold moves, no case is learned
        unmatched = LABELS_UNMATCHED._value.get()
        again = await engine.feedback(user, "never-scored-1", "fraud")
        assert again < raised
        assert len(memory) == n + 1 and LABELS_UNMATCHED._value.get() == unmatched + 1
    finally:
        engine.close()


async def test_shadow_model_is_recorded_but_never_decides(model, stream) -> None:
    every = InMemoryThresholdPolicy(0.0, ThresholdConfig(lower=0.0, upper=1.0))
    engine = _engine(model, False, every)
    shadow = OnnxRiskModel(load_artifact(WINDOW_ARTIFACT)).load()
    engine.set_roles(
        ServingRoles(
            engine.roles.primary, shadow=engine.serving_model(ModelBundle(shadow, None, None))
        )
    )
    try:
        decisions, _ = await engine.score([ScoreRequest(t) for t in stream[:10]])
        for d in decisions:
            assert d.shadow_score is not None and d.shadow_model_version == shadow.version
            assert abs(d.shadow_score - d.score) < 1e-6  # same artifact: same score
            assert score_record(d).shadow_score == d.shadow_score
        engine.set_roles(ServingRoles(engine.roles.primary))
        plain, _ = await engine.score([ScoreRequest(t, dry_run=True) for t in stream[10:15]])
        assert all(d.shadow_score is None for d in plain)
    finally:
        engine.close()


def _profiled_engine(
    model: OnnxRiskModel, entities: EntityStore, threshold: float
) -> ScoringEngine:
    """An engine with in-memory stores and entity profiles, thresholds from ``threshold``."""
    return ScoringEngine(
        ModelBundle(model, None, None),
        InMemorySequenceStore(),
        InMemoryThresholdPolicy(threshold, ThresholdConfig(lower=0.0)),
        entities=entities,
        reasons_top=5,
    )


async def test_entity_profiles_learn_each_event_once_and_never_from_dry_runs(
    model: OnnxRiskModel, stream: list[Transaction]
) -> None:
    from features.events import hash_ids, records_from_transactions
    from scoring.state.entity_store import InMemoryEntityStore

    entities = InMemoryEntityStore()
    engine = _profiled_engine(model, entities, model.artifact.global_threshold)
    first, later = stream[:300], stream[300:340]
    probe = records_from_transactions(later)
    cards = hash_ids(t.user_id for t in later)

    async def look() -> np.ndarray:  # read-only: what the next events would see
        return await entities.observe(probe, cards, np.zeros(len(later), bool))

    try:
        decisions, _ = await engine.score([ScoreRequest(t) for t in first])
        assert all(d.entity is not None for d in decisions)
        seen = await look()
        assert seen[..., 1].sum() > 0  # tx_24h: the first batch is in the profiles
        await engine.score([ScoreRequest(t) for t in first])  # a replay
        assert np.array_equal(await look(), seen)
        await engine.score([ScoreRequest(t, dry_run=True) for t in later])
        assert np.array_equal(await look(), seen)
        await engine.score([ScoreRequest(t) for t in later])
        assert not np.array_equal(await look(), seen)
    finally:
        engine.close()


async def test_a_dry_batch_reads_its_profiles_beside_the_card_read(
    model: OnnxRiskModel, stream: list[Transaction]
) -> None:
    """A batch of dry runs writes no profile, so its profile read must not wait for the
    card read (one round trip, not two, for ``POST /v1/score`` dry runs). The card store
    here answers only once the profile read has started: on the sequential path the batch
    would never finish. A batch that is not dry keeps the order (it needs the card read
    to know which events are new), so it is not given this store."""
    from scoring.state.entity_store import InMemoryEntityStore

    started = asyncio.Event()

    class Profiles(InMemoryEntityStore):
        async def observe(self, records: np.ndarray, cards: np.ndarray, write: np.ndarray):
            started.set()
            return await super().observe(records, cards, write)

    class Cards(InMemorySequenceStore):
        async def read_batch(self, users: list[str]):
            await started.wait()
            return await super().read_batch(users)

    entities = Profiles()
    engine = ScoringEngine(
        ModelBundle(model, None, None),
        Cards(),
        InMemoryThresholdPolicy(model.artifact.global_threshold),
        entities=entities,
    )
    try:
        decisions, _ = await asyncio.wait_for(
            engine.score([ScoreRequest(t, dry_run=True) for t in stream[:20]]), 30
        )
    finally:
        engine.close()
    assert len(decisions) == 20 and all(d.entity is not None for d in decisions)


def test_new_events_are_those_the_card_store_appended() -> None:
    from features.events import RECORD_DTYPE
    from scoring.engine import new_events

    recs = np.zeros(6, dtype=RECORD_DTYPE)
    recs["tx"] = [1, 2, 2, 3, 1, 4]
    users = ["a", "a", "a", "a", "b", "b"]
    stored = np.zeros(1, dtype=RECORD_DTYPE)
    stored["tx"] = 3
    got = new_events({"a": stored, "b": recs[:0]}, users, recs)
    # tx 2 twice: only its first row; tx 3 already stored for a; tx 1 of b is b's own
    assert got.tolist() == [True, True, False, False, True, True]


def test_describe_entity_says_what_an_analyst_needs() -> None:
    from features.entity_profile import STATS
    from scoring.entity_reasons import describe_entity

    def stats(**kw: float) -> np.ndarray:
        return np.array([kw.get(name, 0.0) for name in STATS])

    assert (
        describe_entity("merchant", stats(fraud_7d=3, fraud_30d=4, tx_30d=50))
        == "3 confirmed frauds at this merchant in the last 7 days"
    )
    assert (
        describe_entity("device", stats(fraud_30d=1, tx_30d=2))
        == "1 confirmed fraud on this device in the last 30 days"
    )
    assert "paid for about 9 different cards" in describe_entity(
        "device", stats(cards_24h=9.2, tx_30d=9)
    )
    assert (
        describe_entity("merchant", stats()) == "no activity at this merchant in the last 30 days"
    )
    assert (
        describe_entity("merchant", stats(tx_24h=0.3, cards_24h=0.3, tx_30d=6.6))
        == "no activity at this merchant in the last 24 h (about 7 in 30 days)"
    )
    assert (
        describe_entity("merchant", stats(tx_24h=6, cards_24h=5, tx_30d=40))
        == "about 6 transactions and 5 cards at this merchant in the last 24 h"
    )


def test_entity_reasons_are_occlusion_of_a_profile_in_words() -> None:
    from features.entity_profile import ENTITY_FEATURES, N_STATS, STATS
    from scoring.entity_reasons import explain_entities

    fraud_in = ENTITY_FEATURES.index("merchant_log_fraud_7d")
    absent = np.full(len(ENTITY_FEATURES), -3.0, np.float32)
    cur = np.zeros((2, len(ENTITY_FEATURES)), np.float32)
    cur[:, 0] = 1.0  # merchant present (device stays absent)
    cur[:, ENTITY_FEATURES.index("device_present")] = absent[0]
    cur[0, fraud_in] = 2.5  # row 0: confirmed fraud at its merchant; row 1: none
    stats = np.zeros((2, 2, N_STATS))
    stats[0, 0, STATS.index("fraud_7d")] = stats[0, 0, STATS.index("fraud_30d")] = 3
    stats[:, 0, STATS.index("tx_30d")] = 40

    def head(x: np.ndarray) -> np.ndarray:  # a head that only cares about merchant fraud
        return x[:, fraud_in].astype(np.float64)

    got = explain_entities(head, cur, absent, stats)
    assert [r.feature for r in got[0]] == ["merchant_profile"]
    assert got[0][0].contribution == 2.5
    assert got[0][0].text == "3 confirmed frauds at this merchant in the last 7 days"
    assert got[1] == []  # nothing there raised the score; the absent device is never a reason


async def test_labels_at_a_merchant_reach_the_next_decisions_profile(
    model: OnnxRiskModel, stream: list[Transaction]
) -> None:
    from features.events import id_hash
    from scoring.state.entity_store import EntityLabel, InMemoryEntityStore

    entities = InMemoryEntityStore()
    engine = _profiled_engine(model, entities, 1e-12)  # every decision alerts: reasons for all
    txs = [t for t in stream if t.merchant_id]
    merchant = txs[-1].merchant_id
    at = txs[-1].epoch_ms
    try:
        await engine.score([ScoreRequest(t) for t in txs[:-1]])
        for n in range(4):  # four confirmed frauds at the last event's merchant, just known
            await entities.label(
                EntityLabel(id_hash(merchant), 0, id_hash(f"f{n}"), at - 3_600_000, True, 90.0)
            )
        (decision,), _ = await engine.score([ScoreRequest(txs[-1])])
    finally:
        engine.close()
    assert decision.is_alert and decision.reasons  # the explain path ran with the profiles
    assert decision.entity is not None and decision.entity[0][STATS_FRAUD_7D] == 4
    # whether the profile is a reason depends on what the model learned (the unit test
    # above holds the mechanism); when it is, it must say what the profile shows
    for r in decision.reasons:
        if r.feature == "merchant_profile":
            assert r.text == "4 confirmed frauds at this merchant in the last 7 days"


STATS_FRAUD_7D = 9  # features.entity_profile.STATS.index("fraud_7d"), pinned
