"""Evaluation: the served decision (ONNX Runtime, the serving code path) beside its parts.

Reports PR-AUC, ROC-AUC, recall at 0.1 % and 1 % FPR, precision/recall at each model's
calibrated threshold, recall per fraud scenario, and scoring latency; writes
``metrics.json``, ``report.md`` and PNG plots. Legitimate events may be subsampled for
speed (``max_negatives``); their weights keep every figure on the real class balance.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from features.entity_profile import N_ENTITY
from features.label_delay import LabelDelay
from models.card_sequences import StepFeatures, card_runs
from models.dataset import LabelledData, cap_negatives
from models.metrics import alert_budget, summary
from scoring.artifact import load_artifact
from scoring.incremental_state import replay
from scoring.onnx_model import SEQUENCE_PART, TREE_PART, OnnxRiskModel
from scoring.thresholds import LEARNED_FIELDS

#: what ``metrics.json`` reports side by side: the served decision, then each part
REPORTED_PARTS = ("served", SEQUENCE_PART, TREE_PART)


def score_onnx(
    model: OnnxRiskModel,
    data: LabelledData,
    index: np.ndarray,
    batch_size: int = 256,
    embeddings: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Logits in ``index`` order — the served decision's (``served``) and each part's —
    and latency figures per batch of ``batch_size`` (the served path: network
    and, when the artifact has one, the tree).

    When ``embeddings`` ([N, E]) is given, it is filled with each event's history embedding.
    """
    spec = model.artifact.spec
    lengths = data.history_lengths(index, spec)
    order = np.argsort(lengths, kind="stable")
    out: dict[str, np.ndarray] = {}
    feat_s = model_s = 0.0
    before = None
    if model.artifact.incremental:
        before = np.zeros((len(data), model.artifact.embedding_dim), np.float32)
        before[index] = incremental_replay(model, data, index)[0]
    for s in range(0, order.size, batch_size):
        part = order[s : s + batch_size]
        t0 = time.perf_counter()
        fb = data.features(index[part], spec)
        t1 = time.perf_counter()
        emb = model.encode(fb) if before is None else before[index[part]]
        logits = model.part_logits(fb, embedding=emb)
        served = model.combination.logit(logits[SEQUENCE_PART], logits.get(TREE_PART))
        t2 = time.perf_counter()
        for name, values in (("served", served), *logits.items()):
            out.setdefault(name, np.zeros(index.size))[part] = values
        if embeddings is not None:
            embeddings[part] = emb
        feat_s += t1 - t0
        model_s += t2 - t1
    n = max(index.size, 1)
    if not out:
        out = {"served": np.zeros(0), SEQUENCE_PART: np.zeros(0)}
    return out, {
        "events": float(index.size),
        "featurize_us_per_event": feat_s / n * 1e6,
        "model_us_per_event": model_s / n * 1e6,
        "events_per_s": n / max(feat_s + model_s, 1e-9),
    }


def incremental_replay(
    model: OnnxRiskModel,
    data: LabelledData,
    before_rows: np.ndarray,
    after_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings when every card streams through the step graph in time order with its
    state kept, from its first event in the data: what a worker whose cache holds the
    card computes (``scoring.incremental_state.replay``): before each of
    ``before_rows``, after each of ``after_rows``."""
    if model.empty_history_embedding is None:
        raise ValueError("load the model first")
    steps = StepFeatures.of(data, model.artifact.spec)
    return replay(
        model.step,
        model.state_layout,
        model.empty_history_embedding,
        (steps.num, steps.mcc, steps.channel),
        card_runs(data.user_codes),
        before_rows,
        after_rows,
    )


def evaluate(
    model_dir: Path,
    data: LabelledData,
    out_dir: Path | None = None,
    index: np.ndarray | None = None,
    max_negatives: int | None = 200_000,
    seed: int = 0,
    label_delay: LabelDelay | None = None,
) -> dict[str, Any]:
    """Evaluate the artifact's served decision and each part on ``index`` of ``data``.

    An artifact with entity features gets them replayed over all of ``data`` (earlier
    rows outside ``index`` warm the profiles) with labels arriving per ``label_delay``,
    by default the delay model it was trained with.
    """
    artifact = load_artifact(model_dir)
    model = OnnxRiskModel(artifact).load()
    entity_note = entity_setup(artifact, data, label_delay)
    idx = np.arange(len(data)) if index is None else np.asarray(index)
    weight = np.ones(idx.size)
    if max_negatives is not None:
        idx, weight = cap_negatives(data.labels, idx, max_negatives, seed)
    y = data.labels[idx].astype(int)
    embeddings = np.zeros((idx.size, artifact.embedding_dim), dtype=np.float32)
    all_logits, latency = score_onnx(model, data, idx, embeddings=embeddings)
    all_scores = {name: model.probabilities(v) for name, v in all_logits.items()}
    thresholds = {
        name: artifact.part_threshold(name) or artifact.global_threshold for name in all_scores
    }
    thresholds["served"] = artifact.global_threshold
    scores = all_scores["served"]
    results: dict[str, Any] = {
        "model_version": artifact.version,
        "events": int(idx.size),
        "events_represented": float(weight.sum()),
        "fraud": int(y.sum()),
        "providers": model.providers(),
        **entity_note,
        "served_decision": model.combination.kind,
        **{name: summary(y, s, thresholds[name], weight) for name, s in all_scores.items()},
        "latency": latency,
    }
    if artifact.incremental:
        results["rebuilt_from_window"] = _rebuilt_quality(model, data, idx, y, weight, all_logits)
    alternatives = _alternatives(artifact, y, weight, all_logits)
    if alternatives:
        results["served_alternatives"] = alternatives
    if np.all(weight == 1.0):  # every event scored: the threshold replay is meaningful
        from models.threshold_eval import compare
        from scoring.thresholds import ThresholdConfig

        policy = ThresholdConfig().with_learned(artifact.threshold_policy)
        results["per_user_thresholds"] = {
            "policy": policy.model_dump(include=set(LEARNED_FIELDS)),
            "learned": artifact.threshold_policy is not None,
            **compare(
                data.user_ids[idx],
                data.records["ts"][idx],
                scores,
                y,
                artifact.global_threshold,
                policy,
                amounts=data.records["amount"][idx].astype(np.float64),
            ),
        }
    # what the served alert rate can catch at most (an alert rate below the fraud rate caps
    # recall); judged against the alert rate the artifact's threshold gives here
    fraud_rate = float((weight * y).sum() / weight.sum())
    results["alert_budget"] = alert_budget(results["served"]["alert_rate"], fraud_rate)
    cases = _case_purity(
        artifact, model, data, idx[(y == 1) & (scores >= artifact.global_threshold)]
    )
    if cases is not None:
        results["similar_cases"] = cases
    similarity = _similarity_effect(artifact, data, idx, y, weight, scores, embeddings)
    if similarity is not None:
        results["similarity_adjustment"] = similarity
    results["per_scenario_recall"] = _per_scenario(data, idx, y, all_scores, thresholds)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        _plots(out_dir, y, weight, all_scores)
        (out_dir / "report.md").write_text(render_report(results))
    return results


def _alternatives(
    artifact: Any, y: np.ndarray, weight: np.ndarray, logits: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Every combination training considered, on these rows: was the choice right here?"""
    from models.metrics import weighted_pr_auc
    from scoring.served_decision import Combination

    table = artifact.manifest.get("served", {}).get("validation", {}).get("candidates", {})
    if not table or TREE_PART not in logits:
        return {}
    seq, tree = logits[SEQUENCE_PART], logits[TREE_PART]
    out = {}
    for name, row in table.items():
        combo = Combination(row["sequence"], row["tree"], row["bias"], name)
        out[name] = {
            "validation_pr_auc": float(row["validation_pr_auc"]),
            "pr_auc": weighted_pr_auc(y, combo.logit(seq, tree), weight),
        }
    return out


def _case_purity(
    artifact: Any, model: OnnxRiskModel, data: LabelledData, alerts: np.ndarray
) -> dict[str, Any] | None:
    """Purity of the similar cases shown with the fraud alerts (``models.case_purity``)."""
    from models.case_purity import purity
    from scoring.case_memory import FraudCaseMemory

    memory = FraudCaseMemory.from_artifact(artifact)
    if len(memory) == 0 or alerts.size == 0:
        return None
    queries = case_queries_of(model, data, alerts)
    patterns = np.array([s or "" for s in data.scenario[alerts]], dtype=object)
    return {"shown": artifact.similar_cases_shown, **purity(memory, queries, patterns)}


def _rebuilt_quality(
    model: OnnxRiskModel,
    data: LabelledData,
    idx: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    live: dict[str, np.ndarray],
    negatives: int = 10_000,
    seed: int = 1,
) -> dict[str, Any]:
    """Incremental artifacts: PR-AUC when every state is rebuilt from the event's stored
    window (a worker that just started, or evicted the card) beside the live state, on
    the same rows (every fraud, a weighted sample of the rest)."""
    from models.metrics import weighted_pr_auc

    neg = np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    take = rng.choice(neg, min(negatives, neg.size), replace=False) if neg.size else neg
    rows = np.sort(np.concatenate([np.flatnonzero(y == 1), take]))
    w = weight[rows] * np.where(y[rows] == 0, neg.size / max(take.size, 1), 1.0)
    rebuilt: dict[str, list[np.ndarray]] = {}
    # big batches: a rebuild is one call per distinct window length (one step per
    # position for an artifact without the rebuild graph), whatever the batch
    for s in range(0, rows.size, 4096):
        part = rows[s : s + 4096]
        fb = data.features(idx[part], model.artifact.spec)
        logits = model.part_logits(fb, embedding=model.encode(fb))
        served = model.combination.logit(logits[SEQUENCE_PART], logits.get(TREE_PART))
        for name, v in (("served", served), (SEQUENCE_PART, logits[SEQUENCE_PART])):
            rebuilt.setdefault(name, []).append(v)
    out: dict[str, Any] = {"events": int(rows.size), "fraud": int(y[rows].sum())}
    for name, parts in rebuilt.items():
        out[name] = {
            "pr_auc_rebuilt": weighted_pr_auc(y[rows], np.concatenate(parts), w),
            "pr_auc_live": weighted_pr_auc(y[rows], live[name][rows], w),
        }
    return out


def case_queries_of(model: OnnxRiskModel, data: LabelledData, rows: np.ndarray) -> np.ndarray:
    """What serving compares with the case memory for events ``rows``: the card's
    embedding including the event (incremental: its live state advanced by it)."""
    from features.featurize import windows_from_sorted
    from scoring.scorer import case_queries

    if model.artifact.incremental:
        return incremental_replay(model, data, np.zeros(0, np.int64), rows)[1]
    win = windows_from_sorted(data.records, data.user_codes, rows, model.artifact.spec)
    return case_queries(model, win, np.arange(rows.size))


def entity_setup(
    artifact: Any, data: LabelledData, label_delay: LabelDelay | None
) -> dict[str, Any]:
    """Attach entity inputs when the artifact uses them; what the report should say."""
    kinds = data.entity_kinds_present()
    if not artifact.spec.entity:
        return {"entity_features": "not used by this model", "entity_ids_in_data": kinds}
    trained = artifact.manifest.get("training", {}).get("config", {}).get("label_delay", "mix")
    delay = label_delay or (data.label_delay if data.entity is not None else None)
    delay = delay or LabelDelay.parse(str(trained))
    if (data.entity is None or data.label_delay != delay) and not data.attach_entity(delay):
        data.entity = np.zeros((len(data), N_ENTITY))  # no ids: the absent state
    return {
        "entity_features": ", ".join(kinds) if kinds else "absent (no merchant_id/device_id)",
        "entity_ids_in_data": kinds,
        "label_delay": delay.describe(),
    }


def _similarity_effect(
    artifact: Any,
    data: LabelledData,
    idx: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    scores: np.ndarray,
    embeddings: np.ndarray,
) -> dict[str, float] | None:
    """Does nearest-fraud-case similarity improve the score? Fit on half the users.

    score' = sigmoid(logit(score) + beta * max cosine similarity to the case memory);
    beta is chosen on one half of the users (grid search on PR-AUC) and both variants are
    reported on the other half, so the figure is not fitted to itself.
    """
    from features.events import id_hash
    from models.metrics import weighted_pr_auc
    from scoring.case_memory import FraudCaseMemory

    memory = FraudCaseMemory.from_artifact(artifact)
    if len(memory) == 0:
        return None
    near = memory.nearest(embeddings, k=1)
    sim = np.array([n[0][1] if n else 0.0 for n in near])
    logit = np.log(np.clip(scores, 1e-9, 1 - 1e-9) / np.clip(1 - scores, 1e-9, 1))
    # stable across processes (Python's str hash is salted per process)
    fit = (np.array([id_hash(str(u)) for u in data.user_ids[idx]], dtype=np.uint64) % 2) == 0
    best_beta, best = 0.0, -1.0
    for beta in (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0):
        pr = weighted_pr_auc(y[fit], logit[fit] + beta * sim[fit], weight[fit])
        if pr > best:
            best_beta, best = beta, pr
    test = ~fit
    return {
        "beta": best_beta,
        "pr_auc_without": weighted_pr_auc(y[test], logit[test], weight[test]),
        "pr_auc_with": weighted_pr_auc(y[test], logit[test] + best_beta * sim[test], weight[test]),
        "mean_similarity_fraud": float(sim[y == 1].mean()) if (y == 1).any() else 0.0,
        "mean_similarity_legit": float(sim[y == 0].mean()) if (y == 0).any() else 0.0,
    }


def _per_scenario(
    data: LabelledData,
    idx: np.ndarray,
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    thresholds: dict[str, float],
) -> dict[str, dict[str, float]]:
    scen = data.scenario[idx]
    names = sorted({s for s in scen[y == 1] if s})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        mask = (scen == name) & (y == 1)
        out[name] = {"count": int(mask.sum())}
        for model_name, s in scores.items():
            out[name][model_name] = float((s[mask] >= thresholds[model_name]).mean())
    return out


def _plots(out_dir: Path, y: np.ndarray, w: np.ndarray, scores: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, s in scores.items():
        order = np.argsort(-s)
        tp = np.cumsum((y[order] == 1) * w[order])
        fp = np.cumsum((y[order] == 0) * w[order])
        ax.plot(tp / max(tp[-1], 1e-12), tp / np.maximum(tp + fp, 1e-12), label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall (held-out)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "pr_curve.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 3.6), squeeze=False)
    for ax, (name, s) in zip(axes[0], scores.items(), strict=True):
        bins = np.linspace(0, 1, 41)
        ax.hist(s[y == 0], bins=bins, weights=w[y == 0], alpha=0.6, label="legit", log=True)
        ax.hist(s[y == 1], bins=bins, weights=w[y == 1], alpha=0.6, label="fraud", log=True)
        ax.set_title(f"{name} scores")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "score_distribution.png", dpi=110)
    plt.close(fig)


def render_report(results: dict[str, Any]) -> str:
    """Markdown report of an evaluation."""
    models = [m for m in REPORTED_PARTS if m in results]
    rows = [
        "pr_auc",
        "roc_auc",
        "recall_at_fpr_0.1%",
        "recall_at_fpr_1%",
        "threshold",
        "precision",
        "recall",
        "alert_rate",
    ]
    lines = [
        f"# Evaluation of {results['model_version']}",
        "",
        f"{results['events']} events scored ({results['fraud']} fraud), standing for "
        f"{results['events_represented']:.0f} events. Providers: {results['providers']}.",
        "",
        f"Entity features: {results.get('entity_features', 'n/a')}"
        + (f"; labels replayed {results['label_delay']}." if "label_delay" in results else "."),
        "",
        "| metric | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(f"{results[m][r]:.4f}" for m in models) + " |")
    if "alert_budget" in results:
        b = results["alert_budget"]
        lines += [
            "",
            f"Alert budget: alerting on {b['alert_rate']:.4%} of events with fraud at "
            f"{b['fraud_rate']:.4%} can catch at most **{b['max_recall']:.1%}** of the fraud"
            + (" (the alert rate is below the fraud rate)." if b["max_recall"] < 1 else "."),
        ]
    lines += [
        "",
        "## Recall per scenario (at each model's calibrated threshold)",
        "",
        "| scenario | count | " + " | ".join(models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for name, row in results["per_scenario_recall"].items():
        lines.append(
            f"| {name} | {row['count']} | " + " | ".join(f"{row[m]:.3f}" for m in models) + " |"
        )
    if "per_user_thresholds" in results:
        p = results["per_user_thresholds"]
        lines += [
            "",
            "## Per-user thresholds vs one global threshold (equal recall)",
            "",
            f"Policy {p['policy']} ({'learned on validation' if p['learned'] else 'settings'}). "
            f"Recall {p['recall']:.3f}: false positives {p['false_positives_per_user']} "
            f"with per-user thresholds vs {p['false_positives_global']} with a global "
            f"threshold of {p['global_threshold_matched']:.4f} "
            f"({p['false_positive_change']:+.1%}). At equal alert volume ({p['alerts']} "
            f"alerts): false positives {p['false_positives_equal_alerts']['per_user']} "
            f"per-user vs {p['false_positives_equal_alerts']['global']} global; the fraud "
            f"amount caught is {p['fraud_amount_caught_per_user']:.0f} "
            f"per-user vs {p['fraud_amount_caught_global_equal_alerts']:.0f} global, of "
            f"{p['fraud_amount_total']:.0f}.",
            "",
            "| users | count | false positives, per-user | global |",
            "|---|---|---|---|",
            *(
                f"| {name} | {row['users']} | {row['per_user']} | {row['global']} |"
                for name, row in p["false_positives_by_segment"].items()
            ),
        ]
    if results.get("similar_cases", {}).get("measured"):
        c = results["similar_cases"]
        lines += [
            "",
            "## Similar cases shown with fraud alerts",
            "",
            f"{c['queries']} fraud alerts with a known pattern: {c['purity']:.2f} of their "
            f"{c['k']} nearest confirmed cases share it, against {c['random']:.2f} for random "
            f"cases (lift {c['lift']:.1f}); nearest similarity {c['nearest_similarity_mean']:.2f}, "
            f"a random case of another pattern {c['unrelated_case_similarity_mean']:.2f} "
            f"(centred cosine). Shown per alert: {c['shown']}.",
        ]
    if "similarity_adjustment" in results:
        sa = results["similarity_adjustment"]
        lines += [
            "",
            "## Similarity to confirmed fraud as a score adjustment",
            "",
            f"held-out half of the users: PR-AUC {sa['pr_auc_without']:.4f} without, "
            f"{sa['pr_auc_with']:.4f} with (beta {sa['beta']:+.1f} chosen on the other "
            f"half); mean similarity fraud {sa['mean_similarity_fraud']:.3f}, legit "
            f"{sa['mean_similarity_legit']:.3f}.",
        ]
    lat = results["latency"]
    lines += [
        "",
        "## Scoring cost (batches of 256, CPU)",
        "",
        f"featurize {lat['featurize_us_per_event']:.0f} µs/event, "
        f"model {lat['model_us_per_event']:.0f} µs/event, "
        f"{lat['events_per_s']:.0f} events/s end to end",
        "",
        "![PR curves](pr_curve.png)",
        "",
        "![scores](score_distribution.png)",
        "",
    ]
    return "\n".join(lines)
