"""The foreign development set: finforge (PyPI, MIT) generated here, never committed.

Writes the dataset in finforge's own layout (CSV, its columns as it exports them) and
reads it back only through the ``finforge`` column mapping (``--map finforge``), exactly
as a user would, then:

1. **transfer**: the packaged artifact (trained on our simulator) and its baseline scored
   on every finforge event (``riskstream evaluate``);
2. **refit on finforge**: the packaged artifact with its served decision and thresholds
   chosen again on the earlier 85 % of finforge's event time, the parts untouched
   (``riskstream refit``), and both evaluated on the latest 15 %, the held-out period of
   the trained rows below; then the same with the tree trained again on finforge's
   earlier 70 % (``--retrain-tree``: the network kept, the combination chosen on the
   15 % before the held-out period);
3. **trained on finforge**: ``riskstream train`` on the same file, with and without the
   merchant profile (``--no-entity``), whose reports hold the held-out later period (the
   last 15 % of event time) for the model and the baseline; labels replayed with the
   default delay model (``--label-delay mix``).
4. **is an id a label there?** each raw field's ROC-AUC alone, target-encoded on the
   earlier half and scored on the later (``single_field_aucs``): when the merchant alone
   is near 1.0, merchant profiles on this data measure the simulator, not the method.

    python -m benchmarks.foreign_finforge --users 400 --months 6 --out /tmp/finforge

``--skip-training`` runs 1, 2 and 4 only (minutes instead of a quarter of an hour).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import report


def generate(users: int, months: int, fraud_rate: float, seed: int, path: Path) -> int:
    """finforge's dataset in its own layout; returns the number of rows."""
    from finforge import DatasetGenerator

    df = (
        DatasetGenerator(seed=seed)
        .with_users(users)
        .with_persona("mixed")
        .for_months(months)
        .with_fraud(rate=fraud_rate)
        .generate()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return len(df)


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "streams.cli", *args], check=True)


def _figures(metrics: dict[str, object]) -> dict[str, object]:
    keep = ("pr_auc", "roc_auc", "recall_at_fpr_0.1%", "recall_at_fpr_1%")
    out: dict[str, object] = {"events": metrics.get("events"), "fraud": metrics.get("fraud")}
    for part in ("served", "transformer_lstm", "baseline"):
        got = metrics.get(part)
        if isinstance(got, dict):
            out[part] = {k: round(float(got[k]), 4) for k in keep if k in got}
    alternatives = metrics.get("served_alternatives")
    if isinstance(alternatives, dict):
        out["served_decision"] = metrics.get("served_decision")
        out["pr_auc_validation_then_test"] = {
            name: [round(row["validation_pr_auc"], 4), round(row["pr_auc"], 4)]
            for name, row in alternatives.items()
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--months", type=int, default=6)
    ap.add_argument("--fraud-rate", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-minutes", type=float, default=5.0, help="Training budget.")
    ap.add_argument("--out", type=Path, default=Path("/tmp/finforge"))
    ap.add_argument("--skip-training", action="store_true", help="No train runs (step 3).")
    args = ap.parse_args()
    data = args.out / "finforge.csv"
    t0 = time.monotonic()
    rows = generate(args.users, args.months, args.fraud_rate, args.seed, data)
    gen_s = time.monotonic() - t0
    _cli("evaluate", "--data", str(data), "--map", "finforge", "--out", str(args.out / "transfer"))
    transfer = json.loads((args.out / "transfer" / "metrics.json").read_text())

    def train(name: str, *extra: str) -> dict[str, object]:
        out = args.out / name
        _cli(
            "train",
            *("--data", str(data), "--map", "finforge", "--out", str(out)),
            *("--max-minutes", str(args.max_minutes), "--seed", str(args.seed)),
            *extra,
        )
        return dict(json.loads((out / "report" / "metrics.json").read_text()))

    def refit(name: str, *extra: str) -> dict[str, object]:
        out = args.out / name
        cli = [sys.executable, "-m", "streams.cli", "refit", "--data", str(data)]
        run = subprocess.run(
            [*cli, "--map", "finforge", "--out", str(out), *extra],
            check=True,
            capture_output=True,
            text=True,
        )
        summary = json.loads(run.stdout)
        held = summary["held_out"]
        return {
            "served_decision": summary["served_decision"],
            "fit_pr_auc": {k: round(v, 4) for k, v in summary["fit_pr_auc"].items()},
            "held_out_refit": _figures({**held, **held["refit"]}),
            "held_out_packaged": _figures({**held, **held["source"]}),
        }

    refit_figures = refit("refit")
    retree_figures = refit("refit-tree", "--retrain-tree")
    skipped: dict[str, object] = {"skipped": "--skip-training"}
    trained = skipped if args.skip_training else train("model")
    plain = skipped if args.skip_training else train("model-no-entity", "--no-entity")
    report(
        "foreign_finforge",
        finforge={
            "users": args.users,
            "months": args.months,
            "fraud_rate": args.fraud_rate,
            "seed": args.seed,
            "rows": rows,
            "generate_s": round(gen_s, 1),
        },
        transfer_packaged_artifact_all_events=_figures(transfer),
        refit_packaged_artifact=refit_figures,
        refit_packaged_artifact_tree_retrained=retree_figures,
        trained_on_finforge_held_out_later_period=_figures(trained),
        trained_without_entity_features=_figures(plain),
        entity_features=trained.get("entity_features"),
        label_delay=trained.get("label_delay"),
        per_scenario_recall_held_out=trained.get("per_scenario_recall"),
        per_scenario_recall_held_out_without_entity=plain.get("per_scenario_recall"),
        single_field_roc_auc=_single_fields(data),
    )


def _single_fields(data: Path) -> dict[str, float]:
    """Each contract field's ROC-AUC alone, read through the finforge mapping."""
    import pyarrow as pa

    from features.column_mapping import load_mapping
    from features.labelled_files import iter_batches
    from streams.devtools.simulator import single_field_aucs

    table = pa.Table.from_batches(list(iter_batches(data, mapping=load_mapping("finforge"))))
    return {k: round(v, 3) for k, v in single_field_aucs(table.sort_by("timestamp")).items()}


if __name__ == "__main__":
    main()
