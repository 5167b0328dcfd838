"""Re-exporting an incremental artifact's step graph from its own weights: the weights
come back exactly, the new graph computes what the old one did, and an artifact the
tool cannot handle gets one line, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from features.featurize import N_CHANNELS, N_NUMERIC, FeatureSpec
from models.export import write_artifact
from models.export_incremental import STEP_INPUTS, STEP_OUTPUTS
from models.incremental_network import IncrementalConfig, IncrementalEncoder, IncrementalRiskModel
from models.network import NetworkConfig
from models.reexport_step import main
from scoring.artifact import ENCODER_FILE, MANIFEST_FILE, load_artifact
from tests.model_versions import WINDOW_ARTIFACT

pytestmark = pytest.mark.slow

#: exported after a step graph, in the same process, a rebuild graph's length axis comes
#: out fixed (torch 2.13, ``models.export_incremental.export_rebuild``), so what exports a
#: step alone runs in a process of its own, as the tool's CLI does
_COMPARE = """
import json, sys, torch
from models.reexport_step import recover_encoder
got = recover_encoder(__import__("pathlib").Path(sys.argv[1])).encoder.state_dict()
want = torch.load(sys.argv[2])
same = {k: bool(torch.equal(got[k], v)) for k, v in want.items() if not k.startswith("lstm.bias")}
bias = float(((got["lstm.bias_ih_l0"] + got["lstm.bias_hh_l0"])
              - (want["lstm.bias_ih_l0"] + want["lstm.bias_hh_l0"])).abs().max())
print(json.dumps({"same": same, "bias": bias}))
"""


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[IncrementalRiskModel, Path]:
    """A trained-looking artifact whose step graph was exported the old way: every
    context position through every layer."""
    torch.manual_seed(5)
    cfg = NetworkConfig(N_NUMERIC, 12, N_CHANNELS, n_layers=2)
    model = IncrementalRiskModel(cfg, IncrementalConfig(band=4)).eval()
    with torch.no_grad():  # trained weights: no two parameters alike (the exporter
        for p in model.parameters():  # stores equal ones once)
            p.add_(0.1 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("dense") / "artifact"
    trimmed = IncrementalEncoder.attend_last
    IncrementalEncoder.attend_last = lambda self, x: self.attend(x, dense=True)[:, -1:]  # type: ignore[method-assign]
    try:
        write_artifact(model, FeatureSpec.identity(tuple(range(5000, 5010))), out, threshold=0.5)
    finally:
        IncrementalEncoder.attend_last = trimmed  # type: ignore[method-assign]
    torch.save(model.encoder.state_dict(), out.parent / "encoder.pt")
    return model, out


def _step_outputs(folder: Path, seed: int = 0) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(folder / ENCODER_FILE), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    ctx = sess.get_inputs()[0].shape[1]
    pad = rng.random((9, ctx)) < 0.3
    pad[:, -1] = False
    feeds = dict(
        zip(
            STEP_INPUTS,
            (
                rng.normal(size=(9, ctx, N_NUMERIC)).astype(np.float32),
                rng.integers(1, 12, (9, ctx)),
                rng.integers(1, N_CHANNELS, (9, ctx)),
                pad,
                rng.normal(size=(9, 64)).astype(np.float32),
                rng.normal(size=(9, 64)).astype(np.float32),
            ),
            strict=True,
        )
    )
    return [np.asarray(x) for x in sess.run(list(STEP_OUTPUTS), feeds)]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


def test_the_weights_come_back_exactly(dense) -> None:
    _, folder = dense
    done = _run("-c", _COMPARE, str(folder), str(folder.parent / "encoder.pt"))
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["same"] and all(got["same"].values()), got["same"]
    assert got["bias"] < 1e-6  # only the two LSTM biases' sum reaches the graph


def test_the_new_step_graph_computes_what_the_old_one_did(dense, tmp_path: Path) -> None:
    _, folder = dense
    out = tmp_path / "reexported"
    done = _run("-m", "models.reexport_step", str(folder), str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = _step_outputs(folder), _step_outputs(out)
    for old, new in zip(before, after, strict=True):
        assert np.abs(old - new).max() < 1e-5
    art = load_artifact(out)  # every hash verifies
    assert art.version in done.stdout and art.version != load_artifact(folder).version
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["step_reexported_from"]["model_version"] == load_artifact(folder).version
    assert (out / ENCODER_FILE).read_bytes() != (folder / ENCODER_FILE).read_bytes()


@pytest.mark.parametrize(
    ("source", "says"),
    [(WINDOW_ARTIFACT, "not an incremental artifact"), (Path("/nonexistent"), "not a model")],
)
def test_an_artifact_it_cannot_handle_gets_one_line(
    source: Path, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reexport_step: ") and says in err
    assert "\n" not in err and not (tmp_path / "out").exists()
