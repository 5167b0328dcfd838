"""Do the similar cases shown with an alert mean something? Purity against random cases.

For fraud events whose pattern is known (a fraud-type column in the labelled data, read
as ``scenario``; never a model input), the share of their k nearest confirmed cases
with the *same* pattern is compared with the share among random cases of the memory
(the patterns' frequencies). ``train`` measures it on the validation period and stores
how many cases are worth showing. Where the nearest cases are not clearly better than
random (lift under ``MIN_LIFT``), the artifact says to show none. ``evaluate`` reports
the same figures on the rows it scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scoring.case_memory import FraudCaseMemory

#: nearest cases must share the alert's pattern this many times more often than random
#: cases do, or none are shown
MIN_LIFT = 1.5
SHOW = 3


def purity(
    memory: FraudCaseMemory, queries: np.ndarray, patterns: np.ndarray, k: int = SHOW
) -> dict[str, Any]:
    """Purity at k of the nearest cases vs random ones, and the similarity scale."""
    known = np.array([bool(p) for p in patterns], dtype=bool)
    case_patterns = [memory.patterns.get(c, "") for c in memory.ids]
    if not known.any() or not any(case_patterns):
        return {"measured": False, "reason": "no fraud pattern known for the cases or queries"}
    values, counts = np.unique([p for p in case_patterns if p], return_counts=True)
    freq = dict(zip(values.tolist(), (counts / counts.sum()).tolist(), strict=True))
    q, qp = queries[known], patterns[known]
    near = memory.nearest(q, k)
    same = [
        np.mean([memory.patterns.get(c, "") == p for c, _ in n])
        for n, p in zip(near, qp, strict=True)
    ]
    random_share = float(np.mean([freq.get(p, 0.0) for p in qp]))
    nearest_sim = float(np.mean([n[0][1] for n in near if n]))
    # the scale: what a random case of another pattern scores against the same queries
    vecs = memory.vectors()
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(memory.ids), (q.shape[0], 20))
    centred = np.asarray(q - memory.center, dtype=np.float64)
    centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    sims = np.einsum("qd,qrd->qr", centred, vecs[pick])
    other = np.array(
        [[case_patterns[j] != p for j in row] for row, p in zip(pick, qp, strict=True)]
    )
    purity_k = float(np.mean(same))
    lift = purity_k / random_share if random_share > 0 else 0.0
    return {
        "measured": True,
        "queries": int(q.shape[0]),
        "k": k,
        "purity": purity_k,
        "random": random_share,
        "lift": lift,
        "nearest_similarity_mean": nearest_sim,
        "unrelated_case_similarity_mean": float(sims[other].mean()) if other.any() else 0.0,
    }


def learn_for_artifact(folder: Path, data: Any, index: np.ndarray) -> dict[str, Any]:
    """Measure purity on the fraud events of ``index`` (validation) with the artifact's
    served model and memory; write how many cases to show into ``model.json``."""
    from models.evaluate import case_queries_of, entity_setup
    from scoring.artifact import load_artifact, update_manifest
    from scoring.onnx_model import OnnxRiskModel

    artifact = load_artifact(folder)
    model = OnnxRiskModel(artifact).load()
    entity_setup(artifact, data, None)
    frauds = index[data.labels[index] == 1][-2000:]
    queries = case_queries_of(model, data, frauds)
    patterns = np.array([s or "" for s in data.scenario[frauds]], dtype=object)
    report = purity(FraudCaseMemory.from_artifact(artifact), queries, patterns)
    if report["measured"]:
        report["shown"] = SHOW if report["lift"] >= MIN_LIFT else 0
    update_manifest(folder, {"similar_cases": report})
    return report
