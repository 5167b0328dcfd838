"""``riskstream refit``: an artifact's served decision and thresholds chosen again on a
bank's labelled history, the parts untouched, the latest period held out and evaluated."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pytest

from features.labelled_files import write_table
from models.dataset import LabelledData, cap_negatives
from models.refit import RefitConfig, RefitError, refit, split_by_time
from models.tree_budget import tree_count
from scoring.artifact import MANIFEST_FILE, TREE_FILE, load_artifact
from scoring.onnx_model import OnnxRiskModel
from streams.devtools.simulator import SimulatorConfig, simulate


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("refit") / "tx.parquet"
    write_table(simulate(SimulatorConfig(users=200, days=30, seed=11, fraud_rate=0.02)), path)
    return path


@pytest.fixture(scope="module")
def inverted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged artifact with its blend turned upside down: a served decision that
    ranks fraud last, as a combination chosen elsewhere can be wrong for a bank."""
    src = load_artifact(None)
    out = tmp_path_factory.mktemp("inverted") / "artifact"
    shutil.copytree(src.path, out)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["served"]["weights"] = {"sequence": -0.6, "tree": -0.3, "bias": -4.0}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    return out


def test_a_period_without_fraud_is_one_clear_error(labelled: Path) -> None:
    data = LabelledData.from_files([labelled])
    late = data.records["ts"] >= np.quantile(data.records["ts"], 0.85)
    data.labels[late] = 0
    with pytest.raises(RefitError, match="held-out period has no fraud"):
        split_by_time(data, 0.15)
    with pytest.raises(RefitError, match="between 0 and 1"):
        split_by_time(data, 1.5)


def test_the_fit_sample_keeps_every_fraud_and_restores_the_legitimate_weight() -> None:
    y = np.zeros(1000, dtype=np.int8)
    y[::100] = 1
    index = np.arange(1000)
    rows, w = cap_negatives(y, index, 90, seed=0)
    assert set(np.flatnonzero(y)) <= set(rows.tolist())
    assert rows.size == 10 + 90 and np.all(np.diff(rows) > 0)  # no repeats, in order
    assert w[y[rows] == 0].sum() == pytest.approx(990) and np.all(w[y[rows] == 1] == 1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_refit_repairs_a_served_decision_that_is_wrong_for_the_data(
    labelled: Path, inverted: Path, tmp_path: Path
) -> None:
    data = LabelledData.from_files([labelled])
    out = tmp_path / "refit"
    summary = refit(inverted, out, data, RefitConfig(holdout=0.2))
    artifact = load_artifact(out)  # valid: the graphs' hashes still hold
    source = load_artifact(inverted)
    assert artifact.version.startswith(f"{source.version}-refit-")
    assert artifact.manifest["refit"]["from"] == source.version
    # chosen on the fit period: never more than the keep margin below the better part
    fit = artifact.manifest["served"]["validation"]
    parts = [fit["candidates"][p]["validation_pr_auc"] for p in ("transformer_lstm", "baseline")]
    assert fit["validation_pr_auc"] >= max(parts) - RefitConfig().keep_margin
    assert not fit["kept_source"]  # the inverted blend is far below: it goes
    assert artifact.combination.kind == fit["chosen"]
    assert summary["weights"] == artifact.manifest["served"]["weights"]
    assert all("negative weight" in w for w in summary["warnings"])
    # on the held-out period the repaired decision ranks fraud again; the source does not
    held = summary["held_out"]
    refit_pr, source_pr = held["refit"]["served"]["pr_auc"], held["source"]["served"]["pr_auc"]
    best_part = max(held["refit"][p]["pr_auc"] for p in ("transformer_lstm", "baseline"))
    assert source_pr < 0.2 < refit_pr
    assert refit_pr >= best_part - 0.05
    # the same parts: each part's held-out figures are the source's
    for part in ("transformer_lstm", "baseline"):
        assert held["refit"][part]["pr_auc"] == pytest.approx(held["source"][part]["pr_auc"])
    # thresholds at the source's training target, on the fit period
    assert summary["fit"]["target"] == {"alert_rate": 0.005}
    assert 0.0 < artifact.global_threshold < 1.0
    assert artifact.manifest["metrics"]["test"]["served"]["pr_auc"] == refit_pr
    # and it serves (refit attached the merchant/device inputs to ``data``)
    model = OnnxRiskModel(artifact).load()
    assert np.all(np.isfinite(model.score(data.features(np.arange(8), artifact.spec))))


def test_the_cli_names_a_missing_file_in_one_line(tmp_path: Path) -> None:
    run = _cli("refit", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o"))
    assert run.returncode != 0
    assert "nope.csv: no such file" in run.stderr and "Traceback" not in run.stderr


def test_the_cli_names_a_period_without_fraud_in_one_line(tmp_path: Path) -> None:
    table = simulate(SimulatorConfig(users=30, days=10, seed=2))
    at = table.schema.get_field_index("is_fraud")
    clean = table.set_column(at, "is_fraud", pa.array([0] * len(table), pa.int8()))
    path = tmp_path / "clean.parquet"
    write_table(clean, path)
    run = _cli("refit", "--data", str(path), "--out", str(tmp_path / "o"))
    assert run.returncode != 0
    assert "has no fraud" in run.stderr and "Traceback" not in run.stderr


def _logits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(4000) < 0.05).astype(int)
    seq = rng.normal(size=y.size) + 2.0 * y  # informative
    tree = rng.normal(size=y.size)  # noise
    return y, np.ones(y.size), seq, tree


def test_the_source_combination_stays_unless_another_wins_by_the_margin() -> None:
    from models.refit import _keep_or_choose
    from scoring.served_decision import Combination

    y, w, seq, tree = _logits(0)
    right = Combination(1.0, 0.0, -3.0, "transformer_lstm")
    kept, report = _keep_or_choose(right, y, w, seq, tree, margin=0.005)
    assert report["kept_source"] and kept.kind == "transformer_lstm"
    assert report["candidates"]["source"]["validation_pr_auc"] == report["validation_pr_auc"]
    wrong = Combination(0.0, 1.0, -3.0, "baseline")  # the noise part
    chosen, report = _keep_or_choose(wrong, y, w, seq, tree, margin=0.005)
    assert not report["kept_source"] and chosen.sequence > 0
    assert report["validation_pr_auc"] > report["candidates"]["source"]["validation_pr_auc"] + 0.1
    # the kept one is rescaled to these rows, its ranking unchanged
    assert np.array_equal(np.argsort(kept.logit(seq, tree)), np.argsort(seq))


def test_a_negative_weight_is_named() -> None:
    from models.refit import _warnings
    from scoring.served_decision import Combination

    assert _warnings(Combination(0.5, 0.5, -1.0, "blend_0.5")) == []
    (note,) = _warnings(Combination(-0.4, 0.9, -2.0, "stacked_logistic"))
    assert "transformer_lstm" in note and "-0.400" in note


def test_a_refit_worse_than_its_source_on_the_held_out_period_says_so() -> None:
    from models.refit import _held_out_warning

    better, worse = {"served": {"pr_auc": 0.9}}, {"served": {"pr_auc": 0.8}}
    assert _held_out_warning(better, worse) == []
    (note,) = _held_out_warning(worse, better)
    assert "below its source" in note and "0.8000 against 0.9000" in note


def test_the_cli_names_a_bad_artifact_in_one_line(tmp_path: Path, labelled: Path) -> None:
    out = str(tmp_path / "o")
    run = _cli("refit", "--model", str(tmp_path), "--data", str(labelled), "--out", out)
    assert run.returncode != 0
    assert "not a model artifact" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_refit_can_train_the_tree_again_and_keep_the_network(
    labelled: Path, tmp_path: Path
) -> None:
    data = LabelledData.from_files([labelled])
    out = tmp_path / "retrained"
    cfg = RefitConfig(holdout=0.2, choice=0.2, retrain_tree=True)
    summary = refit(None, out, data, cfg)
    artifact, source = load_artifact(out), load_artifact(None)  # the new tree's hash holds
    assert artifact.spec.tree_aggregates == "match"
    assert (out / TREE_FILE).read_bytes() != (source.path / TREE_FILE).read_bytes()
    assert (out / "head.onnx").read_bytes() == (source.path / "head.onnx").read_bytes()
    record = artifact.manifest["refit"]["retrained_tree"]
    assert record["parity_max_abs_diff"] <= 1e-5 and record["aggregates"] == "match"
    assert artifact.manifest["served"]["tree_parity_max_abs_diff"] == record["parity_max_abs_diff"]
    assert (
        record["fit_events"] + record["choice_events"] == artifact.manifest["refit"]["fit_events"]
    )
    rounds = record["rounds"]
    assert tree_count(onnx.load(str(out / TREE_FILE))) == rounds["rounds"]
    assert summary["retrained_tree"] == record
    # chosen on the later part of the fit period, where the new tree is out of sample
    fit = artifact.manifest["served"]["validation"]
    assert fit["events"] <= record["choice_events"]
    parts = [fit["candidates"][p]["validation_pr_auc"] for p in ("transformer_lstm", "baseline")]
    assert fit["validation_pr_auc"] >= max(parts) - RefitConfig().keep_margin
    # held out: the network is the source's, the tree is not
    held = summary["held_out"]
    seq = "transformer_lstm"
    assert held["refit"][seq]["pr_auc"] == pytest.approx(held["source"][seq]["pr_auc"])
    assert held["refit"]["baseline"]["pr_auc"] != held["source"]["baseline"]["pr_auc"]
    model = OnnxRiskModel(artifact).load()
    assert np.all(np.isfinite(model.score(data.features(np.arange(8), artifact.spec))))


def test_a_retrained_tree_reads_the_match_aggregates_and_splits_the_fit_period(
    labelled: Path,
) -> None:
    """Whatever the source's tree read; the tree fits before the choice cut, the
    combination is chosen after it, as train splits 70 / 15 / 15."""
    from models.refit import _TreeRetrain

    data = LabelledData.from_files([labelled])
    cfg = RefitConfig(holdout=0.15, choice=0.15, retrain_tree=True)
    fit, _ = split_by_time(data, cfg.holdout)
    old = dataclasses.replace(load_artifact(None).spec, tree_aggregates="window")
    retrain = _TreeRetrain(data, old, fit, cfg)
    assert retrain.spec.tree_aggregates == "match"
    ts = data.records["ts"]
    assert ts[retrain.tree_idx].max() < ts[retrain.choice_idx].min()
    assert retrain.tree_idx.size + retrain.choice_idx.size == fit.size
    assert retrain.tree_idx.size == pytest.approx(0.70 * len(data), rel=0.02)


def test_a_choice_period_that_leaves_no_room_is_one_clear_error(labelled: Path) -> None:
    data = LabelledData.from_files([labelled])
    cfg = RefitConfig(holdout=0.2, choice=0.85, retrain_tree=True)
    with pytest.raises(RefitError, match=r"choice must be between 0 and 0\.80"):
        refit(None, Path("unused"), data, cfg)
