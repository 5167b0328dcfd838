"""Export safety: symbolic dims, ORT == torch (grad and inference_mode), no NaN, new users."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from features.featurize import N_CHANNELS, N_NUMERIC, FeatureSpec
from models.export import (
    ENCODER_INPUTS,
    HEAD_INPUTS,
    example_encoder_inputs,
    example_head_inputs,
    symbolic_dims,
    write_artifact,
)
from models.network import NetworkConfig, RiskModel
from scoring.artifact import ArtifactError, load_artifact

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[RiskModel, Path]:
    torch.manual_seed(0)
    spec = FeatureSpec.identity(tuple(range(5000, 5020)))
    model = RiskModel(NetworkConfig(N_NUMERIC, spec.n_mcc, N_CHANNELS)).eval()
    out = tmp_path_factory.mktemp("art") / "artifact"
    write_artifact(model, spec, out, threshold=0.5)
    return model, out


def test_every_graph_input_dimension_is_symbolic(exported) -> None:
    _, folder = exported
    enc = symbolic_dims(folder / "encoder.onnx")
    assert set(enc) == set(ENCODER_INPUTS)
    for name, dims in enc.items():
        assert isinstance(dims[0], str) and dims[0], f"{name} batch dim fixed: {dims}"
        if name != "hist_len":
            assert isinstance(dims[1], str) and dims[1], f"{name} seq dim fixed: {dims}"
    head = symbolic_dims(folder / "head.onnx")
    assert set(head) == set(HEAD_INPUTS)
    assert all(isinstance(d[0], str) for d in head.values())


@pytest.mark.parametrize("t", [1, 17, 64])
@pytest.mark.parametrize("b", [1, 7])
@pytest.mark.parametrize("mode", ["grad", "inference_mode"])
def test_ort_equals_torch(exported, b: int, t: int, mode: str) -> None:
    import onnxruntime as ort

    model, folder = exported
    enc = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(folder / "head.onnx"), providers=["CPUExecutionProvider"])
    lengths = [0, min(1, t), t, max(t - 3, 0), 1, 0, t][:b] if b > 1 else [0]
    args = example_encoder_inputs(b, t, model.cfg.n_mcc, seed=b * 100 + t, lengths=lengths)
    cur = example_head_inputs(b, model.cfg.n_mcc, model.cfg.embedding_dim, seed=t)[1:]
    if mode == "grad":
        emb_ref = model.encoder(*args)
        logit_ref = model.head(emb_ref, *cur).detach().numpy()
        emb_ref = emb_ref.detach().numpy()
    else:
        with torch.inference_mode():  # torch's fast path: where fully masked rows went NaN
            emb_ref = model.encoder(*args)
            logit_ref = model.head(emb_ref, *cur).numpy()
            emb_ref = emb_ref.numpy()
    emb = enc.run(None, {n: a.numpy() for n, a in zip(ENCODER_INPUTS, args, strict=True)})[0]
    logit = head.run(None, dict(zip(HEAD_INPUTS, [emb, *(c.numpy() for c in cur)], strict=True)))[0]
    assert np.isfinite(emb).all() and np.isfinite(logit).all()
    assert np.isfinite(emb_ref).all()
    np.testing.assert_allclose(emb, emb_ref, atol=1e-5)
    np.testing.assert_allclose(logit, logit_ref, atol=1e-5)


def test_tampered_artifact_is_refused(exported, tmp_path: Path) -> None:
    _, folder = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert load_artifact(copy).version.startswith("tl-")
    with (copy / "head.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match=r"sha256 of head\.onnx"):
        load_artifact(copy)


def test_missing_file_and_foreign_spec_are_refused(exported, tmp_path: Path) -> None:
    _, folder = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "encoder.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"encoder\.onnx is missing"):
        load_artifact(copy)
    shutil.rmtree(copy)
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "model.json").read_text())
    manifest["feature_spec"]["numeric"] = ["something_else"]
    (copy / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="feature spec does not match"):
        load_artifact(copy)
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_artifact(tmp_path)
