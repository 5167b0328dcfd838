"""The foreign development set: finforge (PyPI, MIT) generated here, never committed.

Writes the dataset in finforge's own layout (CSV, its columns as it exports them) and
reads it back only through the ``finforge`` column mapping (``--map finforge``), exactly
as a user would, then:

1. **transfer**: the packaged artifact (trained on our simulator) and its baseline scored
   on every finforge event (``riskstream evaluate``);
2. **trained on finforge**: ``riskstream train`` on the same file, whose report holds the
   held-out later period (the last 15 % of event time) for the model and the baseline.

No label-derived feature exists yet, so no label-delay model applies to these figures.

    python -m benchmarks.foreign_finforge --users 400 --months 6 --out /tmp/finforge
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
    for part in ("transformer_lstm", "baseline"):
        got = metrics.get(part)
        if isinstance(got, dict):
            out[part] = {k: round(float(got[k]), 4) for k in keep if k in got}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--months", type=int, default=6)
    ap.add_argument("--fraud-rate", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-minutes", type=float, default=5.0, help="Training budget.")
    ap.add_argument("--out", type=Path, default=Path("/tmp/finforge"))
    args = ap.parse_args()
    data = args.out / "finforge.csv"
    t0 = time.monotonic()
    rows = generate(args.users, args.months, args.fraud_rate, args.seed, data)
    gen_s = time.monotonic() - t0
    _cli("evaluate", "--data", str(data), "--map", "finforge", "--out", str(args.out / "transfer"))
    transfer = json.loads((args.out / "transfer" / "metrics.json").read_text())
    _cli(
        "train",
        "--data",
        str(data),
        "--map",
        "finforge",
        "--out",
        str(args.out / "model"),
        "--max-minutes",
        str(args.max_minutes),
        "--seed",
        str(args.seed),
    )
    trained = json.loads((args.out / "model" / "report" / "metrics.json").read_text())
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
        trained_on_finforge_held_out_later_period=_figures(trained),
        per_scenario_recall_held_out=trained.get("per_scenario_recall"),
    )


if __name__ == "__main__":
    main()
