"""The incremental model in the scoring engine: a cached state equals one rebuilt from the
window (while the history fits it), batching does not change scores, a warm card costs
one step row per event whatever its history length, a replay leaves the state as it
was, and an evicted card rebuilds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from features.contracts import Transaction
from scoring.artifact import load_artifact
from scoring.bundle import ModelBundle
from scoring.embedding_cache import FaissEmbeddingCache
from scoring.engine import ScoringEngine
from scoring.onnx_model import OnnxRiskModel
from scoring.state.sequence_store import InMemorySequenceStore
from scoring.thresholds import InMemoryThresholdPolicy
from tests.model_versions import incremental_version
from tests.service_helpers import score_in_batches, transactions


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxRiskModel:
    folder = incremental_version(tmp_path_factory.mktemp("inc"), "incremental")
    return OnnxRiskModel(load_artifact(folder)).load()


@pytest.fixture(scope="module")
def stream() -> list[Transaction]:
    return transactions(users=12, days=20, seed=4)


class _Counting:
    """Wraps the model's step and rebuild graph and counts the events they advanced
    (a rebuild of a window of n events counts n per row) and their calls."""

    def __init__(self, model: OnnxRiskModel) -> None:
        self.model, self.rows, self.calls, self.rebuilds = model, 0, 0, 0
        self._step, self._whole = model.step, model.whole

    def __enter__(self) -> _Counting:
        def counted(*args: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            self.rows += int(args[0].shape[0])
            self.calls += 1
            return self._step(*args)

        def counted_whole(*args: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            self.rows += int(args[1].size)
            self.calls += 1
            self.rebuilds += 1
            return self._whole(*args)

        self.model.step = counted  # type: ignore[method-assign]
        self.model.whole = counted_whole  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.model.step = self._step  # type: ignore[method-assign]
        self.model.whole = self._whole  # type: ignore[method-assign]


def _engine(model: OnnxRiskModel, capacity: int | None = 1000) -> ScoringEngine:
    cache = (
        None
        if capacity is None
        else FaissEmbeddingCache(model.artifact.embedding_dim, capacity, model.version)
    )
    return ScoringEngine(
        ModelBundle(model, cache, None),
        InMemorySequenceStore(),
        InMemoryThresholdPolicy(model.artifact.global_threshold),
    )


@pytest.fixture
def engines(model: OnnxRiskModel) -> Iterator[list[ScoringEngine]]:
    made: list[ScoringEngine] = []
    yield made
    for e in made:
        e.close()


async def test_cached_state_equals_state_rebuilt_from_the_window(model, stream, engines) -> None:
    cached, plain = _engine(model), _engine(model, capacity=None)
    engines += [cached, plain]
    a = await score_in_batches(cached, stream, 7)
    b = await score_in_batches(plain, stream, 7)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert max(a) - min(a) > 1e-3  # the scores differ between events: a real comparison


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 50])
async def test_batching_does_not_change_scores(model, stream, engines, batch: int) -> None:
    """Several events of one card in a batch chain their states inside the batch."""
    ref, other = _engine(model), _engine(model)
    engines += [ref, other]
    np.testing.assert_allclose(
        await score_in_batches(other, stream, batch),
        await score_in_batches(ref, stream, 7),
        atol=1e-5,
    )


async def test_a_warm_card_costs_one_step_row_per_event_whatever_its_history(
    model, engines
) -> None:
    engine = _engine(model)
    engines.append(engine)
    txs = transactions(users=6, days=20, seed=11)
    await score_in_batches(engine, txs[:-30], 1)  # warm: every card has a state in the cache
    with _Counting(model) as count:
        await score_in_batches(engine, txs[-30:], 1)
    # 30 events: each advanced its card once, while scoring; no rebuild, though these
    # cards' histories are dozens of events long
    assert (count.rows, count.calls) == (30, 30)
    lengths = [len([t for t in txs if t.user_id == u]) for u in {t.user_id for t in txs}]
    assert max(lengths) > 3 * model.artifact.context


async def test_a_card_older_than_its_window_keeps_its_live_state(model, engines) -> None:
    """A bank's cards have more history than the 30-day window: every few events the
    oldest falls out by time. The state after the card's last event is still the one its
    next event advances from (its context, the last events, did not change), so it
    costs one step, not a rebuild from the window."""
    engine = _engine(model)
    engines.append(engine)
    txs = transactions(users=4, days=75, seed=14)
    span = txs[-1].timestamp - txs[0].timestamp
    assert span.days > 2 * model.artifact.spec.window_ms / 86_400_000  # windows slide
    await score_in_batches(engine, txs[:-40], 1)
    with _Counting(model) as count:
        await score_in_batches(engine, txs[-40:], 1)
    assert count.rebuilds == 0
    assert (count.rows, count.calls) == (40, 40)


async def test_a_late_event_among_the_last_ones_rebuilds_the_state(model, engines) -> None:
    """An event that arrives after later ones changes the next event's context: the
    cached state no longer describes it, so the card rebuilds, and scores as a card
    with no cache would."""
    from scoring.decision import ScoreRequest

    cached, plain = _engine(model), _engine(model, capacity=None)
    engines += [cached, plain]
    everyone = transactions(users=3, days=20, seed=15)
    txs = [t for t in everyone if t.user_id == everyone[0].user_id][:30]
    assert len(txs) == 30
    late, rest = txs[20], txs[:20] + txs[21:]
    scores = {}
    for name, engine in (("cached", cached), ("plain", plain)):
        await score_in_batches(engine, rest[:-1], 1)
        await score_in_batches(engine, [late], 1)
        with _Counting(model) as count:
            (d,), _ = await engine.score([ScoreRequest(rest[-1])])
            await engine.states_stored()
        scores[name] = d.score
        if name == "cached":
            assert count.rebuilds == 1
    np.testing.assert_allclose(scores["cached"], scores["plain"], atol=1e-5)


async def test_the_next_batch_finds_the_state_without_waiting_for_a_refresh(model, engines) -> None:
    """The worker refreshes the cache after publishing, while the next batch is already
    being scored: a card whose events come fast must still find its state (a miss would
    rebuild it from its window, a step per stored event)."""
    from scoring.decision import ScoreRequest

    engine = _engine(model)
    engines.append(engine)
    txs = transactions(users=3, days=20, seed=12)
    await score_in_batches(engine, txs[:-24], 4)
    with _Counting(model) as count:
        for s in range(len(txs) - 24, len(txs), 4):  # no refresh between the batches
            await engine.score([ScoreRequest(t) for t in txs[s : s + 4]])
        await engine.states_stored()
    assert count.rows == 24  # one step per event: no card rebuilt


async def test_a_failure_caching_next_states_costs_a_rebuild_not_the_batch(
    model, engines, monkeypatch
) -> None:
    """The cache is an optimization: if stepping the next states fails, the batch's
    decisions stand and the card's next event rebuilds its state."""
    import scoring.engine
    from scoring.decision import ScoreRequest

    engine = _engine(model)
    engines.append(engine)
    txs = transactions(users=1, days=20, seed=13)

    def broken(pending: object) -> int:
        raise RuntimeError("injected")

    monkeypatch.setattr(scoring.engine, "store_next_states", broken)
    decisions, _ = await engine.score([ScoreRequest(t) for t in txs[:5]])
    await engine.states_stored()
    assert len(decisions) == 5
    monkeypatch.undo()
    with _Counting(model) as count:
        await engine.score([ScoreRequest(txs[5])])
        await engine.states_stored()
    assert count.rows > 2  # a rebuild over the stored window, then the next-state step
    assert count.rebuilds == 1  # the window rebuilt in one call of the rebuild graph


@pytest.fixture(scope="module")
def short_window(tmp_path_factory: pytest.TempPathFactory) -> OnnxRiskModel:
    """Windows of 16 events: the test cards' windows slide, so a state rebuilt from the
    window differs from the live one (the LSTM saw more)."""
    folder = incremental_version(tmp_path_factory.mktemp("inc16"), "short", max_history=16)
    return OnnxRiskModel(load_artifact(folder)).load()


@pytest.mark.slow
async def test_a_replayed_batch_leaves_every_state_unchanged(short_window, stream, engines) -> None:
    """A replayed event is scored from its window (the cache holds the state after it)
    but never moves the state: a rebuilt one would lose what the LSTM saw before."""
    model = short_window
    engine = _engine(model)
    engines.append(engine)
    await score_in_batches(engine, stream[:-10], 5)
    first = await score_in_batches(engine, stream[-10:], 10)
    cache = engine.bundle.cache
    assert cache is not None
    users = sorted({t.user_id for t in stream})
    versions = cache.version_of(users)
    hit, emb, states = cache.get_states(users, versions, model.state_layout.width)
    assert hit.all()
    again = await score_in_batches(engine, stream[-10:], 10)  # redelivered after a crash
    hit2, emb2, states2 = cache.get_states(users, versions, model.state_layout.width)
    assert hit2.all()
    np.testing.assert_array_equal(states2, states)
    np.testing.assert_array_equal(emb2, emb)
    # the replay was really re-scored from a rebuilt state, which is not the live one
    assert not np.allclose(again, first, atol=1e-6)


@pytest.mark.slow
async def test_an_evicted_card_rebuilds_its_state(model, stream, engines) -> None:
    small, plain = _engine(model, capacity=2), _engine(model, capacity=None)
    engines += [small, plain]
    np.testing.assert_allclose(
        await score_in_batches(small, stream, 7),
        await score_in_batches(plain, stream, 7),
        atol=1e-5,
    )
    cache = small.bundle.cache
    assert cache is not None and cache.evictions > 0


def test_the_cache_snapshot_keeps_states(model, tmp_path: Path) -> None:
    lay = model.state_layout
    cache = FaissEmbeddingCache(model.artifact.embedding_dim, 10, model.version)
    states = np.random.default_rng(0).normal(size=(2, lay.width)).astype(np.float32)
    emb = np.ones((2, model.artifact.embedding_dim), np.float32)
    cache.put(["a", "b"], np.array([3, 5], np.uint64), emb, states)
    cache.snapshot(tmp_path)
    warm = FaissEmbeddingCache(model.artifact.embedding_dim, 10, model.version)
    assert warm.restore(tmp_path) == 2
    hit, _, got = warm.get_states(["a", "b"], np.array([3, 5], np.uint64), lay.width)
    assert hit.all()
    np.testing.assert_array_equal(got, states)


def _recording_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads ``_score_groups`` runs on, in call order."""
    import threading

    import scoring.engine

    names: list[str] = []
    original = scoring.engine._score_groups

    def recorded(*args: object, **kwargs: object) -> object:
        names.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring.engine, "_score_groups", recorded)
    return names


async def test_small_batches_run_the_model_on_the_event_loop_larger_ones_on_its_thread(
    model, engines, monkeypatch
) -> None:
    import threading

    from scoring.decision import ScoreRequest

    engine = _engine(model)
    engine.inline_max_batch = 2
    engines.append(engine)
    threads = _recording_threads(monkeypatch)
    txs = transactions(users=3, days=5, seed=16)
    for size in (1, 2, 3):
        await engine.score([ScoreRequest(t, dry_run=True) for t in txs[:size]])
        await engine.states_stored()
    loop_thread = threading.current_thread().name
    assert threads[:2] == [loop_thread, loop_thread]
    assert threads[2].startswith("riskstream-model")


async def test_a_small_batch_queues_behind_the_state_caching_of_the_batch_before(
    model, engines, monkeypatch
) -> None:
    """Run on the loop while the thread still stores the last batch's next states, a
    card's next event would miss its state and rebuild it from the window."""
    import time

    import scoring.engine
    from scoring.decision import ScoreRequest

    engine = _engine(model)
    engine.inline_max_batch = 4
    engines.append(engine)
    card = transactions(users=1, days=20, seed=17)
    await score_in_batches(engine, card[:-2], 1)
    await engine.states_stored()
    original = scoring.engine.store_next_states

    def slow(pending: object) -> int:
        time.sleep(0.2)
        return original(pending)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring.engine, "store_next_states", slow)
    threads = _recording_threads(monkeypatch)
    with _Counting(model) as count:
        await engine.score([ScoreRequest(card[-2])])  # on the loop; its states job is slow
        await engine.score([ScoreRequest(card[-1])])  # must wait behind that job
        await engine.states_stored()
    assert count.rebuilds == 0, "the second event did not find the state the first stored"
    assert threads[1].startswith("riskstream-model")
