"""``riskstream train`` / ``evaluate`` end to end on small files: with only a merchant id,
with neither merchant nor device, with an earlier history file, and a bad delay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from models.tree_budget import tree_count
from streams.devtools.simulator import SimulatorConfig, simulate

pytestmark = pytest.mark.slow
REQUIRED = ["transaction_id", "user_id", "timestamp", "amount", "currency", "mcc", "channel"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("labelled")
    table = simulate(SimulatorConfig(users=250, days=40, seed=3, fraud_rate=0.02))
    out = {}
    for name, extra in (("merchant", ["merchant_id"]), ("bare", [])):
        path = folder / f"{name}.csv"
        pacsv.write_csv(table.select([*REQUIRED, *extra, "is_fraud"]), path)
        out[name] = path
    cut = pc.quantile(table.column("timestamp"), 0.6)[0].as_py()
    early = table.filter(pc.less(table.column("timestamp"), cut))
    late = table.filter(pc.greater_equal(table.column("timestamp"), cut))
    for name, part in (("early", early), ("late", late)):
        path = folder / f"{name}.csv"
        pacsv.write_csv(part.select([*REQUIRED, "merchant_id", "is_fraud"]), path)
        out[name] = path
    return out


def _train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli(
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--max-minutes",
        "0.5",
        *extra,
    )


@pytest.mark.timeout(900)  # trains, then evaluates twice (each replays every card in order)
def test_train_with_only_a_merchant_id_then_evaluate_with_history(
    files: dict[str, Path], tmp_path: Path
) -> None:
    run = _train(files["merchant"], tmp_path / "m")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "entity features: merchant" in run.stderr
    spec = json.loads((tmp_path / "m" / "model.json").read_text())["feature_spec"]
    assert spec["entity"][0] == "merchant_present"
    report = json.loads((tmp_path / "m" / "report" / "metrics.json").read_text())
    assert report["entity_features"] == "merchant" and "chargebacks" in report["label_delay"]
    # the served decision and each part, side by side, with the same figures
    for part in ("served", "transformer_lstm", "baseline"):
        assert {"pr_auc", "roc_auc", "recall_at_fpr_0.1%", "recall_at_fpr_1%"} <= set(report[part])
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    chosen = manifest["served"]["validation"]
    parts = [chosen["candidates"][p]["validation_pr_auc"] for p in ("transformer_lstm", "baseline")]
    assert chosen["validation_pr_auc"] >= max(parts)  # never worse than a part on validation
    assert report["served_decision"] == manifest["served"]["kind"] == chosen["chosen"]
    assert set(report["served_alternatives"]) == set(chosen["candidates"])
    assert "tree.onnx" in manifest["files"] and not (tmp_path / "m" / "baseline.pkl").exists()
    assert manifest["served"]["tree_parity_max_abs_diff"] <= 1e-5
    # the tree keeps the rounds its served figure needs, and reads the "match" aggregates
    rounds = chosen["tree_rounds"]
    figures = rounds["served_validation_pr_auc"]
    assert figures[str(rounds["rounds"])] >= figures[str(rounds["trained_rounds"])] - 0.002
    assert tree_count(onnx.load(str(tmp_path / "m" / "tree.onnx"))) == rounds["rounds"]
    assert spec["tree_aggregates"] == "match"
    # the default architecture: per-event cost independent of history (models/incremental_*)
    assert manifest["network"]["architecture"] == "incremental"
    assert manifest["network"]["context"] == 15
    rebuilt = report["rebuilt_from_window"]
    assert set(rebuilt) >= {"served", "transformer_lstm"}
    assert 0.0 <= rebuilt["transformer_lstm"]["pr_auc_rebuilt"] <= 1.0

    ev = _cli(
        "evaluate",
        "--model",
        str(tmp_path / "m"),
        "--history",
        str(files["early"]),
        "--data",
        str(files["late"]),
        "--label-delay",
        "7d",
        "--out",
        str(tmp_path / "ev"),
    )
    assert ev.returncode == 0, ev.stderr[-2000:]
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    late_rows = pacsv.read_csv(files["late"]).num_rows
    assert got["events"] == late_rows  # the history was replayed, not scored
    assert got["label_delay"] == "fixed 7 days after the transaction"
    assert "Entity features: merchant" in (tmp_path / "ev" / "report.md").read_text()


def test_train_without_merchant_or_device_says_the_features_are_absent(
    files: dict[str, Path], tmp_path: Path
) -> None:
    run = _train(files["bare"], tmp_path / "b", "--architecture", "window")
    assert run.returncode == 0, run.stderr[-2000:]
    network = json.loads((tmp_path / "b" / "model.json").read_text())["network"]
    assert network["architecture"] == "window"  # the previous model still trains and serves
    assert "entity features: absent" in run.stderr and "no merchant_id/device_id" in run.stderr
    spec = json.loads((tmp_path / "b" / "model.json").read_text())["feature_spec"]
    assert "entity" not in spec
    report = json.loads((tmp_path / "b" / "report" / "metrics.json").read_text())
    assert report["entity_features"] == "not used by this model"
    assert report["entity_ids_in_data"] == []


def test_a_bad_label_delay_is_one_clear_line(files: dict[str, Path], tmp_path: Path) -> None:
    run = _cli(
        "train", "--data", str(files["bare"]), "--out", str(tmp_path / "x"), "--label-delay", "soon"
    )
    assert run.returncode == 2
    assert "--label-delay" in run.stderr and "Traceback" not in run.stderr


def test_a_bad_architecture_is_one_clear_line(files: dict[str, Path], tmp_path: Path) -> None:
    run = _train(files["bare"], tmp_path / "x", "--architecture", "bidirectional")
    assert run.returncode == 2
    assert "--architecture" in run.stderr and "Traceback" not in run.stderr
