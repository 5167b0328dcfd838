"""The incremental model against the window model: same data, split, seed and budget.

    python -m benchmarks.architecture_ab --data tx.parquet --seeds 0,1,2 --max-minutes 8
    python -m benchmarks.architecture_ab --data finforge.csv --map finforge --no-entity

Trains both architectures per seed (alternating, since this host drifts) and prints, per
run, the test-period PR-AUC of the network, the tree and the served decision, and the
epochs it got; then the mean per architecture and the mean difference. Scored in torch:
the window model on each event's window, the incremental model on whole cards in order
(what a warm worker computes; the export proves ONNX Runtime stepping equals it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import report


def run_one(data: Any, arch: str, seed: int, minutes: float, entity: bool) -> dict[str, Any]:
    from models.baseline import baseline_probabilities, tree_features
    from models.metrics import weighted_pr_auc
    from models.train import TrainConfig, predict_logits, train
    from models.train_incremental import CardLayout, sequence_logits
    from scoring.served_decision import tree_logit

    cfg = TrainConfig(
        seed=seed, max_minutes=minutes, max_history=64, architecture=arch, entity_features=entity
    )
    t0 = time.monotonic()
    out = train(data, cfg)
    test = out.split_index[2]  # type: ignore[index]  # set by train
    if arch == "incremental":
        layout = out.layout or CardLayout.of(data, out.spec)
        net = sequence_logits(out.model, layout, layout.length, len(data))[test]  # type: ignore[arg-type]
    else:
        net = predict_logits(
            out.model,  # type: ignore[arg-type]
            data,
            test,
            out.spec,
            data.history_lengths(test, out.spec),
        )
    tree = tree_logit(baseline_probabilities(out.baseline, tree_features(data, out.spec, test)))
    y, w = data.labels[test], np.ones(test.size)
    return {
        "architecture": arch,
        "seed": seed,
        "network_pr_auc": round(weighted_pr_auc(y, net, w), 4),
        "tree_pr_auc": round(weighted_pr_auc(y, tree, w), 4),
        "served_pr_auc": round(weighted_pr_auc(y, out.combination.logit(net, tree), w), 4),
        "served_decision": out.combination_report.get("chosen"),
        "epochs": len(out.history),
        "minutes": round((time.monotonic() - t0) / 60, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--map", default=None, help="Column mapping preset or YAML file.")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-minutes", type=float, default=8.0)
    ap.add_argument("--no-entity", action="store_true", help="Without merchant/device profiles.")
    args = ap.parse_args()
    from features.column_mapping import load_mapping
    from models.dataset import LabelledData

    mapping = load_mapping(args.map) if args.map else None
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for arch in ("incremental", "window"):
            data = LabelledData.from_files([args.data], mapping)
            row = run_one(data, arch, seed, args.max_minutes, not args.no_entity)
            report("architecture_run", data=str(args.data), **row)
            runs.append(row)
    means = {
        arch: {
            k: round(float(np.mean([r[k] for r in runs if r["architecture"] == arch])), 4)
            for k in ("network_pr_auc", "served_pr_auc")
        }
        for arch in ("incremental", "window")
    }
    report(
        "architecture_ab",
        data=str(args.data),
        seeds=args.seeds,
        means=means,
        incremental_minus_window={
            k: round(means["incremental"][k] - means["window"][k], 4) for k in means["window"]
        },
    )


if __name__ == "__main__":
    main()
