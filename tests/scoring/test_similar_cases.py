"""Similar cases that mean something: a centred similarity scale, queries that include
the alerted event (as confirmed cases do), purity against random cases, and a gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from features.events import records_from_transactions
from models.case_purity import MIN_LIFT, purity
from scoring.artifact import load_artifact
from scoring.bundle import ModelBundle
from scoring.case_memory import FraudCaseMemory
from scoring.decision import ScoreRequest
from scoring.engine import ScoringEngine
from scoring.feedback import remember_case
from scoring.onnx_model import OnnxRiskModel
from scoring.state.sequence_store import InMemorySequenceStore
from scoring.thresholds import InMemoryThresholdPolicy, ThresholdConfig
from tests.model_versions import make_version
from tests.service_helpers import transactions


def _clusters(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two patterns around a large shared offset, as the encoder's embeddings have."""
    rng = np.random.default_rng(seed)
    labels = np.array(["a", "b"] * (n // 2))
    direction = np.where(labels[:, None] == "a", 1.0, -1.0) * np.eye(8)[0]
    vecs = 5.0 + 0.3 * direction + 0.05 * rng.normal(size=(n, 8))
    return vecs.astype(np.float32), labels


def test_centred_similarity_puts_unrelated_cases_near_zero() -> None:
    vecs, _ = _clusters(200)
    raw = FraudCaseMemory(8)
    raw.add([f"c{i}" for i in range(200)], vecs)
    centred = FraudCaseMemory(8, center=vecs.mean(axis=0))
    centred.add([f"c{i}" for i in range(200)], vecs)
    probe = vecs[:1] - 0.6 * np.eye(8, dtype=np.float32)[:1]  # pattern "a" moved to "b"
    far_raw = raw.nearest(probe, 200)[0][-1][1]
    far_centred = centred.nearest(probe, 200)[0][-1][1]
    assert far_raw > 0.98  # the raw scale: everything looks alike
    assert far_centred < 0.0  # centred: the other pattern points the other way


def test_purity_beats_random_where_neighbours_share_the_pattern() -> None:
    vecs, labels = _clusters(400)
    memory = FraudCaseMemory(8, center=vecs.mean(axis=0))
    ids = [f"c{i}" for i in range(300)]
    memory.add(ids, vecs[:300])
    memory.patterns = dict(zip(ids, labels[:300], strict=True))
    got = purity(memory, vecs[300:], labels[300:].astype(object))
    assert got["measured"] and got["purity"] > 0.95 and got["random"] == 0.5
    assert got["lift"] >= MIN_LIFT and got["unrelated_case_similarity_mean"] < 0.0
    shuffled = purity(memory, vecs[300:], np.random.default_rng(1).permutation(labels[300:]))
    assert shuffled["lift"] < MIN_LIFT  # the patterns no longer follow the embeddings
    assert not purity(memory, vecs[300:], np.array([""] * 100, dtype=object))["measured"]


async def _alerts_for(artifact_path: Path | None) -> list[list[tuple[str, float]]]:
    """Stream one card holder's history, confirm one event as fraud, then score it again
    (a replay) with every event alerting; the similar cases of that alert."""
    model = OnnxRiskModel(load_artifact(artifact_path)).load()
    memory = FraudCaseMemory.from_artifact(model.artifact)
    bundle = ModelBundle(model, None, memory)
    engine = ScoringEngine(
        bundle,
        InMemorySequenceStore(),
        # everything alerts (a confident model scores some legitimate events near 1e-18)
        InMemoryThresholdPolicy(1e-30, ThresholdConfig(lower=0.0)),
    )
    try:
        stream = [t for t in transactions(users=3, days=20, seed=4) if t.user_id.endswith("0")]
        for s in range(0, len(stream) - 1, 16):
            await engine.score([ScoreRequest(t) for t in stream[s : min(s + 16, len(stream) - 1)]])
        last = stream[-1]
        seq = np.concatenate(
            [records_from_transactions(stream[:-1]), records_from_transactions([last])]
        )
        remember_case(bundle, seq, "the-confirmed-case")  # its history including `last`
        decisions, _ = await engine.score([ScoreRequest(last)])
        return [[(c.case_id, c.similarity) for c in d.similar_cases] for d in decisions]
    finally:
        engine.close()


async def test_an_alert_is_compared_with_cases_as_they_were_when_confirmed() -> None:
    (cases,) = await _alerts_for(None)
    assert len(cases) == 3
    # the same history, the same event: the query includes the alerted event, as the
    # confirmed case does, so the case itself is the nearest at similarity ~1
    assert cases[0][0] == "the-confirmed-case" and cases[0][1] > 0.999
    assert cases[1][1] < cases[0][1]


async def test_cases_are_not_shown_where_training_found_them_no_better_than_random(
    tmp_path: Path,
) -> None:
    path = make_version(tmp_path, "tl-no-cases")
    manifest = json.loads((path / "model.json").read_text())
    manifest["similar_cases"] = {"measured": True, "lift": 1.1, "shown": 0}
    (path / "model.json").write_text(json.dumps(manifest))
    (cases,) = await _alerts_for(path)
    assert cases == []
