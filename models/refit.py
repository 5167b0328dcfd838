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

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.errors import RiskstreamError
from features.featurize import FeatureSpec
from features.label_delay import LabelDelay
from models.baseline import TreeFit, baseline_probabilities, fit_tree, tree_features
from models.combine import choose, platt
from models.dataset import LabelledData, cap_negatives
from models.metrics import target_threshold, weighted_pr_auc
from scoring.artifact import MANIFEST_FILE, TREE_FILE, load_artifact, sha256_file, update_manifest
from scoring.onnx_model import SEQUENCE_PART, TREE_PART, OnnxRiskModel
from scoring.served_decision import Combination, tree_logit


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
    #: train the tree part again on the bank's data (``retrain_tree``), keep the network
    retrain_tree: bool = False
    #: with ``retrain_tree``: the share of event time, just before the held-out period,
    #: on which the combination and thresholds are chosen (the tree fits on what is
    #: earlier), as ``riskstream train`` splits 70 / 15 / 15
    choice: float = 0.15
    #: with ``retrain_tree``: how the tree is fitted (``models.baseline.TreeFit``)
    tree: TreeFit = field(default_factory=TreeFit)


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
    model: OnnxRiskModel,
    data: LabelledData,
    index: np.ndarray,
    cfg: RefitConfig,
    retrained: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[Combination, dict[str, Any], dict[str, float]]:
    """The combination and thresholds chosen on ``index``, and the choice's figures.

    ``retrained``: gives the tree logits to combine from (rows, labels, weights, network
    logits) there, in place of the artifact's own tree's (``retrain_tree``)."""
    from models.evaluate import score_onnx

    rows, w = cap_negatives(data.labels, index, cfg.max_negatives, cfg.seed)
    y = data.labels[rows].astype(int)
    logits, _ = score_onnx(model, data, rows)
    seq = logits[SEQUENCE_PART]
    tree = logits.get(TREE_PART) if retrained is None else retrained(rows, y, w, seq)
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
    tree = _TreeRetrain(data, artifact.spec, fit_idx, cfg) if cfg.retrain_tree else None
    combination, report, thresholds = fit_served(
        model,
        data,
        fit_idx if tree is None else tree.choice_idx,
        cfg,
        None if tree is None else tree.logits,
    )
    served = {
        **(artifact.manifest.get("served") or {}),
        **combination.to_json(),
        "validation": report,
    }
    changed = json.dumps({"served": combination.to_json(), "thresholds": thresholds})
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(artifact.path, out)
    record: dict[str, Any] = {
        "from": artifact.version,
        "at": datetime.now(UTC).isoformat(),
        "events": len(data),
        "fit_events": int(fit_idx.size),
        "held_out_events": int(test_idx.size),
        "holdout": cfg.holdout,
    }
    changes: dict[str, Any] = {}
    if tree is not None:
        changes, record["retrained_tree"] = tree.write(out, combination, report)
        report["tree_rounds"] = record["retrained_tree"]["rounds"]
        served["tree_parity_max_abs_diff"] = record["retrained_tree"]["parity_max_abs_diff"]
        changed += changes["files"][TREE_FILE]
    version = f"{artifact.version}-refit-{hashlib.sha256(changed.encode()).hexdigest()[:8]}"
    update_manifest(
        out,
        {
            **changes,
            "model_version": version,
            "served": served,
            "thresholds": {**thresholds, "policy": {"per_user": False}},
            "metrics": {},
            "refit": record,
        },
    )
    # the per-user policy is replayed where the served scores are out of sample
    chosen_on = fit_idx if tree is None else tree.choice_idx
    latest = np.argsort(data.records["ts"][chosen_on], kind="stable")[-cfg.max_policy_events :]
    policy_rows = np.sort(chosen_on[latest])
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
        "warnings": _warnings(combination) + _held_out_warning(after, before),
        "fit": {k: report[k] for k in ("events", "fraud", "validation_pr_auc", "target")},
        "fit_pr_auc": {k: row["validation_pr_auc"] for k, row in report["candidates"].items()},
        "threshold_policy": learned["chosen"],
        **({"retrained_tree": record["retrained_tree"]} if tree is not None else {}),
        "held_out": {
            "events": after["events"],
            "fraud": after["fraud"],
            "refit": parts(after),
            "source": parts(before),
        },
    }
    update_manifest(out, {"metrics": {"test": parts(after), "test_source": parts(before)}})
    return summary


class _TreeRetrain:
    """A new tree for a refit: fitted on the fit period's earlier part (reading the
    "match" aggregates whatever the source's tree read), its rounds, the combination and
    the thresholds chosen on the later part (``RefitConfig.choice``)."""

    def __init__(
        self, data: LabelledData, spec: FeatureSpec, fit_idx: np.ndarray, cfg: RefitConfig
    ) -> None:
        if not 0.0 < cfg.choice < 1.0 - cfg.holdout:
            raise RefitError(
                f"choice must be between 0 and {1 - cfg.holdout:.2f}, not {cfg.choice}"
            )
        ts = data.records["ts"]
        cut = np.quantile(ts, 1.0 - cfg.holdout - cfg.choice)
        self.tree_idx = fit_idx[ts[fit_idx] < cut]
        self.choice_idx = fit_idx[ts[fit_idx] >= cut]
        for name, idx in (("tree's fit", self.tree_idx), ("choice", self.choice_idx)):
            if idx.size == 0 or data.labels[idx].sum() == 0:
                raise RefitError(
                    f"the {name} period has no fraud: retraining the tree needs labelled "
                    "fraud before and after the choice cut"
                )
        self.data, self.cfg = data, cfg
        self.spec = dataclasses.replace(spec, tree_aggregates="match")
        self.clf: Any = None
        self.rounds: dict[str, Any] = {}
        self.parity_rows = np.zeros((0, 0), np.float32)

    def logits(self, rows: np.ndarray, y: np.ndarray, w: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """Fit the tree (its rounds chosen on ``rows``); its logits there."""
        x = tree_features(self.data, self.spec, rows)
        rng = np.random.default_rng(self.cfg.seed)
        self.clf, self.rounds = fit_tree(
            self.data, self.spec, self.tree_idx, (x, y, w, seq), self.cfg.tree, rng
        )
        self.parity_rows = x[:: max(1, x.shape[0] // 4096)]
        return tree_logit(baseline_probabilities(self.clf, x))

    def write(
        self, out: Path, combination: Combination, report: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Write ``tree.onnx`` into ``out`` (parity-checked against LightGBM); the
        manifest keys that change with it, and what the refit record says of it."""
        from models.export import TreePart, export_tree_part

        part = TreePart(self.clf, self.parity_rows, combination, report, {})
        parity = export_tree_part(part, self.spec.entity, out)
        manifest = json.loads((out / MANIFEST_FILE).read_text())
        files = {**manifest["files"], TREE_FILE: sha256_file(out / TREE_FILE)}
        changes = {"files": files, "feature_spec": self.spec.to_json()}
        return changes, {
            "rounds": self.rounds,
            "aggregates": self.spec.tree_aggregates,
            "fit_events": int(self.tree_idx.size),
            "choice_events": int(self.choice_idx.size),
            "parity_max_abs_diff": parity,
        }


def _held_out_warning(after: dict[str, Any], before: dict[str, Any]) -> list[str]:
    """A refit that scores below its source on the held-out period is not an improvement:
    say so (a retrained tree on a small sample, or a choice won by noise, can do that)."""
    refit_pr, source_pr = after["served"]["pr_auc"], before["served"]["pr_auc"]
    if refit_pr >= source_pr:
        return []
    return [
        f"on the held-out period the refit artifact scores below its source (PR-AUC "
        f"{refit_pr:.4f} against {source_pr:.4f}): keep the source, or refit on more data"
    ]


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
