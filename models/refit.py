"""Re-fit an artifact's served decision on a bank's own labelled history, without training.

The parts stay as they are: the Transformer+LSTM and the tree keep their weights. What is
chosen again, on the earlier part of the bank's data, is what serving decides with: the
combination of the two logits (``models.combine``: each part alone, blends, a stack), the
alert thresholds at the artifact's target (or a new one), and the per-user threshold
policy (``models.threshold_learning``). The latest part (``holdout`` of event time) is
kept out and evaluated, for the refit artifact and for the one it came from.

Why: a combination chosen on one population can lose to its own tree on another: the
packaged artifact's blend, chosen on our simulator, scores far below its tree on finforge
(docs/MODEL.md, Refit). ``riskstream train`` on the bank's history fixes that too, at the
price of a training run. A refit only scores the data with the artifact and fits a handful
of numbers, so a bank can adapt a model it was given in minutes. On the period it was
fitted on it is never more than ``keep_margin`` below the better part (the margin by which
the source's own combination is preferred).

The refit artifact is a copy of the graphs with a new ``model.json``. Its version is the
source's with a digest of what changed, and ``refit`` in ``model.json`` records where it
came from and on what. The graphs' hashes stay valid.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.errors import RiskstreamError
from features.label_delay import LabelDelay
from models.combine import choose, platt
from models.dataset import LabelledData, cap_negatives
from models.metrics import target_threshold, weighted_pr_auc
from scoring.artifact import load_artifact, update_manifest
from scoring.onnx_model import SEQUENCE_PART, TREE_PART, OnnxRiskModel
from scoring.served_decision import Combination


class RefitError(RiskstreamError):
    """The data cannot support a refit (one line for the CLI)."""


@dataclass(frozen=True)
class RefitConfig:
    """What to fit on, and to what target."""

    #: the latest share of event time kept out of the fit and evaluated
    holdout: float = 0.15
    #: alert on this share of events; None: the source artifact's training target
    target_alert_rate: float | None = None
    #: or catch this share of fraud with the fewest alerts (wins over the alert rate)
    target_recall: float | None = None
    #: keep the source's combination unless another beats it by this much (fit PR-AUC)
    keep_margin: float = 0.005
    #: legitimate events scored at most in the fit period (weights restore the balance)
    max_negatives: int = 200_000
    #: events of the fit period the per-user threshold replay reads at most (the latest)
    max_policy_events: int = 1_000_000
    seed: int = 0


def split_by_time(data: LabelledData, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fit period (earlier) and the held-out period (the latest
    ``holdout`` of event time); either without fraud is one clear error."""
    if not 0.0 < holdout < 1.0:
        raise RefitError(f"holdout must be between 0 and 1, not {holdout}")
    ts = data.records["ts"]
    cut = np.quantile(ts, 1.0 - holdout)
    fit, test = np.flatnonzero(ts < cut), np.flatnonzero(ts >= cut)
    for name, idx in (("fit", fit), ("held-out", test)):
        if idx.size == 0 or data.labels[idx].sum() == 0:
            raise RefitError(
                f"the {name} period has no fraud: a refit needs labelled fraud in both "
                f"the earlier {1 - holdout:.0%} and the latest {holdout:.0%} of event time"
            )
    return fit, test


def _target(artifact: Any, cfg: RefitConfig) -> dict[str, float]:
    """The calibration target: the one asked for, else the source artifact's."""
    if cfg.target_recall is not None:
        return {"recall": cfg.target_recall}
    if cfg.target_alert_rate is not None:
        return {"alert_rate": cfg.target_alert_rate}
    trained = artifact.manifest.get("training", {}).get("config", {})
    if trained.get("target_recall") is not None:
        return {"recall": float(trained["target_recall"])}
    return {"alert_rate": float(trained.get("target_alert_rate") or 0.005)}


def _keep_or_choose(
    source: Combination,
    y: np.ndarray,
    w: np.ndarray,
    seq: np.ndarray,
    tree: np.ndarray | None,
    margin: float,
) -> tuple[Combination, dict[str, Any]]:
    """The best candidate of ``models.combine`` on these rows, unless the source's own
    combination is within ``margin`` of it: then the source's, rescaled to these rows
    (a monotone map, so its ranking stays). On a small or quiet sample the best candidate
    wins by noise, and the source's choice was made on more data."""
    direction = source.logit(seq, tree) - source.bias
    slope, bias = platt(direction, y, w)
    kept = Combination(slope * source.sequence, slope * source.tree, bias, source.kind)
    kept_pr = weighted_pr_auc(y, kept.logit(seq, tree), w)
    if tree is None:  # a network-only artifact: nothing to combine, the thresholds move
        table: dict[str, Any] = {}
        best, best_pr = kept, kept_pr
    else:
        best, report = choose(y, w, seq, tree)
        table, best_pr = report["candidates"], report["validation_pr_auc"]
    table = {**table, "source": {"validation_pr_auc": kept_pr, **kept.to_json()["weights"]}}
    keep = best_pr - kept_pr < margin
    chosen = kept if keep else best
    return chosen, {
        "chosen": chosen.kind,
        "kept_source": keep,
        "validation_pr_auc": kept_pr if keep else best_pr,
        "candidates": table,
    }


def fit_served(
    model: OnnxRiskModel, data: LabelledData, index: np.ndarray, cfg: RefitConfig
) -> tuple[Combination, dict[str, Any], dict[str, float]]:
    """The combination and thresholds chosen on ``index``, and the choice's figures."""
    from models.evaluate import score_onnx

    rows, w = cap_negatives(data.labels, index, cfg.max_negatives, cfg.seed)
    y = data.labels[rows].astype(int)
    logits, _ = score_onnx(model, data, rows)
    seq, tree = logits[SEQUENCE_PART], logits.get(TREE_PART)
    combination, report = _keep_or_choose(model.combination, y, w, seq, tree, cfg.keep_margin)
    target = _target(model.artifact, cfg)
    parts = {"global": combination.logit(seq, tree), SEQUENCE_PART: seq}
    if tree is not None:
        parts[TREE_PART] = tree
    thresholds = {
        name: target_threshold(
            y, model.probabilities(logit), w, target.get("recall"), target.get("alert_rate")
        )
        for name, logit in parts.items()
    }
    report = {**report, "events": int(rows.size), "fraud": int(y.sum()), "target": target}
    return combination, report, thresholds


def refit(
    source: Path | None,
    out: Path,
    data: LabelledData,
    cfg: RefitConfig = RefitConfig(),
    label_delay: LabelDelay | None = None,
) -> dict[str, Any]:
    """Write ``out``: ``source`` (default: the packaged artifact) with its served decision
    and thresholds fitted on the earlier part of ``data``; evaluate both on the rest."""
    from models.evaluate import REPORTED_PARTS, entity_setup, evaluate
    from models.threshold_learning import learn_for_artifact

    artifact = load_artifact(source)
    fit_idx, test_idx = split_by_time(data, cfg.holdout)
    model = OnnxRiskModel(artifact).load()
    entity_setup(artifact, data, label_delay)
    combination, report, thresholds = fit_served(model, data, fit_idx, cfg)
    served = {
        **(artifact.manifest.get("served") or {}),
        **combination.to_json(),
        "validation": report,
    }
    changed = json.dumps({"served": combination.to_json(), "thresholds": thresholds})
    version = f"{artifact.version}-refit-{hashlib.sha256(changed.encode()).hexdigest()[:8]}"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(artifact.path, out)
    update_manifest(
        out,
        {
            "model_version": version,
            "served": served,
            "thresholds": {**thresholds, "policy": {"per_user": False}},
            "metrics": {},
            "refit": {
                "from": artifact.version,
                "at": datetime.now(UTC).isoformat(),
                "events": len(data),
                "fit_events": int(fit_idx.size),
                "held_out_events": int(test_idx.size),
                "holdout": cfg.holdout,
            },
        },
    )
    latest = np.argsort(data.records["ts"][fit_idx], kind="stable")[-cfg.max_policy_events :]
    policy_rows = np.sort(fit_idx[latest])
    learned = learn_for_artifact(out, data, policy_rows)
    after = evaluate(out, data, out / "report", index=test_idx, max_negatives=1_000_000)
    before = evaluate(artifact.path, data, None, index=test_idx, max_negatives=1_000_000)

    def parts(results: dict[str, Any]) -> dict[str, Any]:
        return {k: results[k] for k in REPORTED_PARTS if k in results}

    summary = {
        "model_version": version,
        "from": artifact.version,
        "served_decision": combination.kind,
        "weights": combination.to_json()["weights"],
        "warnings": _warnings(combination),
        "fit": {k: report[k] for k in ("events", "fraud", "validation_pr_auc", "target")},
        "fit_pr_auc": {k: row["validation_pr_auc"] for k, row in report["candidates"].items()},
        "threshold_policy": learned["chosen"],
        "held_out": {
            "events": after["events"],
            "fraud": after["fraud"],
            "refit": parts(after),
            "source": parts(before),
        },
    }
    update_manifest(out, {"metrics": {"test": parts(after), "test_source": parts(before)}})
    return summary


def _warnings(combination: Combination) -> list[str]:
    """What an operator should know about the chosen weights: a negative weight means
    the part ranks this data's fraud backwards (its notion of fraud does not transfer).
    The held-out figures say whether inverting it pays; it may stop paying when the
    fraud changes, so a retrain on this data is the safer fix."""
    out = []
    for part, weight in (("transformer_lstm", combination.sequence), ("tree", combination.tree)):
        if weight < 0:
            out.append(
                f"the {part} part has a negative weight ({weight:.3f}): it ranks this data's "
                "fraud backwards, and the served decision inverts it"
            )
    return out
