"""How much of the served tree the blend needs: quality and ORT cost with its first k trees.

    python -m benchmarks.tree_budget [--model DIR] [--users 4000] [--trees 50,100,150,200]

Simulates an unseen population (``--seed``, default 2: not the training seed), replays its
first ``--history-days`` unscored (card histories, merchant/device profiles), and scores
every later event once with the artifact. Then, for each k, the tree cut to its first k
trees (``models.tree_budget``): the tree's PR-AUC alone, the blend in the direction the
artifact serves, the best of the training candidates' directions, and ORT's time per row
at batch 256 and 1 in a tight loop. The network's logits are the same for every k.

The data is a test set, so this informs a choice and makes none: a served tree budget
must be chosen on validation, at training time (docs/MODEL.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow.compute as pc

from benchmarks.common import report
from features.labelled_files import write_table
from features.tree_inputs import tree_inputs
from models.combine import BLEND_WEIGHTS
from models.dataset import LabelledData
from models.evaluate import entity_setup, score_onnx
from models.metrics import weighted_pr_auc
from models.tree_budget import first_trees, tree_count
from scoring.artifact import load_artifact
from scoring.onnx_model import SEQUENCE_PART, TREE_INPUT, TREE_OUTPUT, OnnxRiskModel
from scoring.served_decision import tree_logit
from streams.devtools.simulator import SimulatorConfig, simulate

_DAY_MS = 86_400_000


def _per_row_us(sess: ort.InferenceSession, x: np.ndarray, repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        sess.run([TREE_OUTPUT], {TREE_INPUT: x})
    return (time.perf_counter() - t0) / repeat / len(x) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="Artifact (default: the packaged one).")
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--history-days", type=int, default=35)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--trees", default="50,100,150,200", help="Tree budgets to try.")
    args = ap.parse_args()
    artifact = load_artifact(args.model)
    if artifact.tree_path is None:
        raise SystemExit("tree_budget: this artifact serves no tree")
    model = OnnxRiskModel(artifact).load()
    table = simulate(SimulatorConfig(users=args.users, days=args.days, seed=args.seed))
    ts = table.column("timestamp")
    cut = pc.min(ts).as_py() + args.history_days * _DAY_MS
    folder = Path(tempfile.mkdtemp(prefix="tree-budget-"))
    write_table(table.filter(pc.less(ts, cut)), folder / "history.parquet")
    write_table(table.filter(pc.greater_equal(ts, cut)), folder / "test.parquet")
    data = LabelledData.from_files([folder / "history.parquet", folder / "test.parquet"])
    index = np.flatnonzero(data.source >= 1)
    entity_setup(artifact, data, None)
    logits, _ = score_onnx(model, data, index)
    x = np.concatenate(
        [
            tree_inputs(data.features(index[s : s + 4096], artifact.spec), artifact.spec)
            for s in range(0, index.size, 4096)
        ]
    )
    y, w = data.labels[index].astype(int), np.ones(index.size)
    seq = logits[SEQUENCE_PART]
    combo = artifact.combination
    served_w = combo.sequence / (combo.sequence + combo.tree)  # the served blend's direction
    graph = onnx.load(str(artifact.tree_path))
    n = tree_count(graph)
    rows = []
    for k in sorted({*(int(v) for v in args.trees.split(",")), n}):
        if k > n:
            continue
        sess = ort.InferenceSession(
            first_trees(graph, k).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        tree = tree_logit(np.asarray(sess.run([TREE_OUTPUT], {TREE_INPUT: x})[0])[:, 1])
        best, best_w = max(
            (weighted_pr_auc(y, a * seq + (1 - a) * tree, w), a) for a in BLEND_WEIGHTS
        )
        rows.append(
            {
                "trees": k,
                "tree_pr_auc": round(weighted_pr_auc(y, tree, w), 4),
                "served_direction_pr_auc": round(
                    weighted_pr_auc(y, served_w * seq + (1 - served_w) * tree, w), 4
                ),
                "best_direction_pr_auc": round(best, 4),
                "best_direction_w": best_w,
                "ort_us_per_row_batch256": round(_per_row_us(sess, x[:256], 50), 2),
                "ort_us_per_row_batch1": round(_per_row_us(sess, x[:1], 500), 1),
            }
        )
    report(
        "tree_budget",
        model=artifact.version,
        events=int(index.size),
        fraud=int(y.sum()),
        network_pr_auc=round(weighted_pr_auc(y, seq, w), 4),
        served_direction_w=round(served_w, 3),
        budgets=rows,
    )


if __name__ == "__main__":
    main()
