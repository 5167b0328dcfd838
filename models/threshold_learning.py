"""Per-user threshold parameters learned on validation, or the global threshold alone.

The policy (``scoring.thresholds``) has four constants: k, the credibility, and the band
(min and max as ratios of the global threshold). Defaults were guessed once. Here they
are chosen the way a fraud team would choose them: the served model scores *every*
validation event (ONNX Runtime, the served decision), each candidate is replayed in
event-time order (``models.threshold_eval``), and its false positives are compared with
one global threshold raising as many alerts (``at_equal_alerts``). That is done in
four cells of the validation period: its earlier and later half in time, crossed with
two halves of its users. A candidate counts by its *worst* cell, and the best one must
cut false positives in every cell, by ``MIN_GAIN`` at least. Otherwise the policy is
"global only" (``per_user: false``). Choosing on the whole period picked parameters that
cut false positives on validation and added them on the later test period (figures in
docs/MODEL.md); a parameter set must win across time and across users to be chosen.
On validation, the learned policy is therefore never worse than one global threshold.
The result goes into ``model.json`` (``thresholds.policy``, with every candidate's
figures under ``threshold_learning``), and serving applies it (``ThresholdConfig.learned``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset import LabelledData
from models.threshold_eval import at_equal_alerts, per_user_thresholds
from scoring.thresholds import ThresholdConfig

GLOBAL_ONLY = {"per_user": False}
#: the false-positive cut a candidate must reach in its worst cell to be chosen
MIN_GAIN = 0.02


def candidate_policies() -> list[tuple[str, dict[str, Any]]]:
    """Global only, then a small grid around the defaults (27 per-user candidates)."""
    out: list[tuple[str, dict[str, Any]]] = [("global_only", GLOBAL_ONLY)]
    for k, cred, (lo, hi) in itertools.product(
        (2.0, 3.0, 5.0), (20.0, 50.0, 200.0), ((0.8, 10.0), (1.0, 10.0), (0.5, 4.0))
    ):
        out.append(
            (
                f"k{k:g}_cred{cred:g}_band{lo:g}-{hi:g}",
                {"per_user": True, "k": k, "credibility_n": cred, "min_ratio": lo, "max_ratio": hi},
            )
        )
    return out


def learn_policy(
    users: np.ndarray,
    ts: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    global_threshold: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chosen policy parameters and every candidate's validation figures."""
    from features.events import id_hash

    y = labels.astype(bool)
    later = ts >= np.median(ts)
    # stable across processes (Python's str hash is salted per process)
    half = (np.array([id_hash(str(u)) for u in users], dtype=np.uint64) % 2) == 1
    cells = [(later == t) & (half == h) for t in (False, True) for h in (False, True)]
    table: dict[str, dict[str, Any]] = {}
    best_name, best_worst = "global_only", -MIN_GAIN
    for name, params in candidate_policies():
        if not params["per_user"]:
            continue
        personal = per_user_thresholds(
            users, ts, scores, global_threshold, ThresholdConfig(**params)
        )
        changes = []
        for cell in [np.ones(y.size, bool), *cells]:
            fp_p, fp_g = at_equal_alerts(scores[cell], y[cell], personal[cell])
            changes.append((fp_p - fp_g) / max(fp_g, 1))
        worst = max(changes[1:])
        table[name] = {
            **params,
            "false_positive_change": changes[0],
            "false_positive_change_per_cell": changes[1:],
            "worst_cell": worst,
        }
        if worst < best_worst:
            best_name, best_worst = name, worst
    chosen = dict(candidate_policies())[best_name]
    report = {
        "chosen": best_name,
        "false_positive_change": table[best_name]["false_positive_change"]
        if best_name in table
        else 0.0,
        "worst_cell": best_worst if best_name in table else 0.0,
        "candidates": table,
    }
    return dict(chosen), report


def learn_for_artifact(folder: Path, data: LabelledData, index: np.ndarray) -> dict[str, Any]:
    """Score ``index`` (every event of the validation period) with the artifact's served
    decision, learn the policy, and write it into the artifact's ``model.json``."""
    from models.evaluate import entity_setup, score_onnx
    from scoring.artifact import load_artifact, update_manifest
    from scoring.onnx_model import OnnxRiskModel

    artifact = load_artifact(folder)
    model = OnnxRiskModel(artifact).load()
    entity_setup(artifact, data, None)
    logits, _ = score_onnx(model, data, index)
    scores = model.probabilities(logits["served"])
    policy, report = learn_policy(
        data.user_ids[index],
        data.records["ts"][index],
        scores,
        data.labels[index].astype(int),
        artifact.global_threshold,
    )
    report["events"] = int(index.size)
    thresholds = {**artifact.manifest["thresholds"], "policy": policy}
    update_manifest(folder, {"thresholds": thresholds, "threshold_learning": report})
    return report
