"""Two things at once inside one worker: each test pins a defect found in review (#17).

The service runs in-process on the session's embedded stack (real Kafka, real Redis), so
a stream batch and HTTP requests can be made to overlap on purpose.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from streams.http_views import score_http
from streams.kafka.publisher import PublishError
from streams.pipeline import BatchPipeline, RawMessage
from tests.service_helpers import body, raw, running_service, service_settings, transactions

pytestmark = [pytest.mark.integration]


async def test_a_failed_stream_delivery_is_never_acked_while_http_requests_flush(
    stack, tmp_path: Path
) -> None:
    """The stream batch's dead letter goes to a topic the broker rejects; HTTP requests
    flush their own decisions meanwhile. Every stream batch must fail (so it is not
    acked and is replayed), every HTTP request must succeed: no flush judges another's
    messages."""
    settings = service_settings(
        stack, tmp_path, **{"kafka.publish_retries": 0, "kafka.message_timeout_ms": 5000}
    )
    txs = transactions(users=30, days=6)
    async with running_service(settings) as svc:
        assert svc.runtime is not None
        rounds, stream_failed, http_ok = 40, 0, 0
        for r in range(rounds):
            # a new name each round: librdkafka refuses a known-bad topic at produce()
            rejected = settings.topics.model_copy(update={"dlq": f"not a valid topic! {r}"})
            stream = BatchPipeline(
                svc.runtime.pipeline.score,
                svc.runtime.publisher,
                rejected,
                settle=svc.runtime.engine.settle,
            )
            part = txs[r * 12 : r * 12 + 12]
            bad = RawMessage(b"{not json", settings.topics.transactions, 0, 10_000 + r, 0.0)
            results = await asyncio.gather(
                stream.process([bad, *raw(part[:8])]),
                *(score_http(svc, body(part[8 + i : 9 + i])) for i in range(4)),
                return_exceptions=True,
            )
            if isinstance(results[0], PublishError):
                stream_failed += 1
            http_ok += sum(1 for res in results[1:] if isinstance(res, tuple) and res[0] == 200)
        assert stream_failed == rounds, f"{rounds - stream_failed} failed batches would be acked"
        assert http_ok == rounds * 4, "an HTTP request was failed by the stream batch's error"


async def test_a_dry_run_in_the_same_batch_changes_no_stream_decision(
    stack, tmp_path: Path
) -> None:
    """A dry run of the same card, earlier in time, shares the micro-batch with a stream
    event: the stream event's score and history must be what they are without it, and
    the dry run must not be stored."""
    from scoring.decision import ScoreRequest

    txs = transactions(users=6, days=10)
    user = max({t.user_id for t in txs}, key=lambda u: sum(t.user_id == u for t in txs))
    mine = [t for t in txs if t.user_id == user]
    history, current = mine[:-1], mine[-1]
    dry = current.model_copy(
        update={
            "transaction_id": "dry-" + current.transaction_id,
            "timestamp": history[-1].timestamp,
            "amount": current.amount * 40 + 999,
        }
    )
    scores = []
    for with_dry in (False, True):
        settings = service_settings(stack, tmp_path)
        async with running_service(settings) as svc:
            assert svc.runtime is not None
            await svc.runtime.engine.score([ScoreRequest(t) for t in history])
            await svc.runtime.engine.settle()
            reqs = [ScoreRequest(current)]
            if with_dry:
                reqs.append(ScoreRequest(dry, dry_run=True))
            decisions, _ = await svc.runtime.engine.score(reqs)
            await svc.runtime.engine.settle()
            stored = (await svc.runtime.engine.store.read_batch([user]))[user]
            scores.append((decisions[0].score, decisions[0].sequence_length))
            assert dry.transaction_id not in set(stored["tx"].tolist()) or not with_dry
            stored_ids = {int(x) for x in stored["tx"]}
            assert len(stored_ids) == len(mine)
    assert scores[0][1] == scores[1][1], "the dry run entered the stream event's history"
    assert scores[0][0] == pytest.approx(scores[1][0], abs=1e-6)


async def test_the_shadow_model_is_fed_its_own_features(stack, tmp_path: Path) -> None:
    """A shadow whose spec differs (statistics, history length) scores exactly as that
    artifact does when it serves alone. On the window model: an incremental shadow has
    no state cache, so where its 8-event windows slide it scores from rebuilt states
    and differs from the same model serving alone (docs/DESIGN-DECISIONS.md)."""
    from scoring.artifact import write_manifest
    from tests.model_versions import WINDOW_ARTIFACT as DEFAULT_ARTIFACT

    shadow_dir = tmp_path / "shadow"
    shadow_dir.mkdir()
    for f in DEFAULT_ARTIFACT.iterdir():
        if f.name != "model.json":
            (shadow_dir / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((DEFAULT_ARTIFACT / "model.json").read_text())
    manifest.pop("files"), manifest.pop("format")
    spec = manifest["feature_spec"]
    spec["mean"] = [m + 0.5 for m in spec["mean"]]
    spec["std"] = [s * 1.7 for s in spec["std"]]
    spec["max_history"] = 8
    manifest["model_version"] = manifest["model_version"] + "-shadow"
    write_manifest(shadow_dir, manifest)

    txs = transactions(users=10, days=12)
    got: list[float] = []
    want: list[float] = []
    settings = service_settings(stack, tmp_path, **{"model.shadow_path": str(shadow_dir)})
    async with running_service(settings) as svc:
        assert svc.runtime is not None
        for s in range(0, len(txs), 50):
            decisions = await svc.runtime.pipeline.process(raw(txs[s : s + 50]))
            got.extend(d.shadow_score for d in decisions)  # type: ignore[misc]
    alone = service_settings(stack, tmp_path, **{"model.path": str(shadow_dir)})
    async with running_service(alone) as svc:
        assert svc.runtime is not None
        for s in range(0, len(txs), 50):
            decisions = await svc.runtime.pipeline.process(raw(txs[s : s + 50]))
            want.extend(d.score for d in decisions)
    assert len(got) == len(want) == len(txs)
    np.testing.assert_allclose(got, want, atol=1e-5)


async def test_a_poison_event_is_dead_lettered_and_the_rest_of_its_batch_scored(
    stack, tmp_path: Path
) -> None:
    """A defect that one event triggers (not infrastructure): that event goes to the DLQ
    with the reason and its offset, the other events of the batch are decided."""
    from tests.kafka_helpers import read_topic

    settings = service_settings(stack, tmp_path)
    txs = transactions(users=8, days=4)[:30]
    poison_id = txs[7].transaction_id
    async with running_service(settings) as svc:
        assert svc.runtime is not None

        async def score(reqs):  # type: ignore[no-untyped-def]
            if any(r.tx.transaction_id == poison_id for r in reqs):
                raise ValueError("cannot featurize this event")
            return await svc.runtime.pipeline.score(reqs)

        pipeline = BatchPipeline(
            score, svc.runtime.publisher, settings.topics, settle=svc.runtime.engine.settle
        )
        decisions = await pipeline.process(raw(txs, settings.topics.transactions, first_offset=100))
    assert {d.tx.transaction_id for d in decisions} == {t.transaction_id for t in txs} - {poison_id}
    letters = [
        json.loads(m.value())
        for m in read_topic(stack.bootstrap_servers, settings.topics.dlq, expected=1, timeout_s=20)
    ]
    assert len(letters) == 1
    assert letters[0]["error"].startswith("poison: scoring failed with ValueError")
    assert letters[0]["offset"] == 107 and letters[0]["topic"] == settings.topics.transactions
    scored = read_topic(stack.bootstrap_servers, settings.topics.scores, expected=29, timeout_s=20)
    assert len(scored) == 29


def test_case_memory_add_and_nearest_race_without_mixing_ids() -> None:
    """``add`` (feedback, may rebuild the index) against ``nearest`` (model thread)."""
    import threading

    from scoring.case_memory import FraudCaseMemory

    rng = np.random.default_rng(3)
    dim, n = 32, 4000
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    memory = FraudCaseMemory(dim, max_cases=200)
    memory.add([f"c{i}" for i in range(200)], vectors[:200])
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        for s in range(200, n, 7):
            memory.add([f"c{i}" for i in range(s, min(s + 7, n))], vectors[s : s + 7])
        stop.set()

    def reader() -> None:
        while not stop.is_set():
            i = int(rng.integers(0, n))
            try:
                for cid, sim in memory.nearest(vectors[i : i + 1], 1)[0]:
                    if sim > 0.9999 and cid != f"c{i}":
                        errors.append(f"query c{i} answered {cid} at {sim:.5f}")
            except Exception as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


async def test_cases_learned_from_feedback_survive_a_restart(stack, tmp_path: Path) -> None:
    from scoring.case_memory import FraudCaseMemory

    settings = service_settings(stack, tmp_path)
    txs = transactions(users=5, days=5)
    async with running_service(settings) as svc:
        assert svc.runtime is not None
        await svc.runtime.pipeline.process(raw(txs))
        memory = svc.runtime.engine.bundle.memory
        assert memory is not None
        seeded = len(memory)
        await svc.runtime.engine.feedback(txs[-1].user_id, txs[-1].transaction_id, "fraud")
        assert len(memory) == seeded + 1
    async with running_service(settings) as svc:  # same data dir: restored
        assert svc.runtime is not None and svc.runtime.engine.bundle.memory is not None
        restored = svc.runtime.engine.bundle.memory
        assert txs[-1].transaction_id in restored.ids and len(restored) == seeded + 1
    other = FraudCaseMemory(restored.dim, model_version="another-model")
    assert other.restore(settings.data_dir / "cache") == 0  # another model's space
