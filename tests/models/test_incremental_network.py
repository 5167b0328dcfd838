"""The incremental Transformer+LSTM: the step (serving) computes what the whole-sequence
forward (training) computes, in torch and in ONNX Runtime, and the step reads a fixed
number of events whatever the history length."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from features.featurize import N_CHANNELS, N_NUMERIC, FeatureSpec
from models.export import write_artifact
from models.export_incremental import STEP_INPUTS, check_rebuild_parity, check_step_parity
from models.incremental_network import (
    IncrementalConfig,
    IncrementalRiskModel,
    LocalAttentionLayer,
)
from models.network import NetworkConfig
from scoring.artifact import MANIFEST_FILE, REBUILD_FILE, load_artifact
from scoring.incremental_state import advance, rebuild, replay
from scoring.onnx_model import OnnxRiskModel


def _model(band: int = 4, layers: int = 2, seed: int = 0) -> IncrementalRiskModel:
    torch.manual_seed(seed)
    cfg = NetworkConfig(N_NUMERIC, 12, N_CHANNELS, n_layers=layers)
    return IncrementalRiskModel(cfg, IncrementalConfig(band=band)).eval()


def _sequences(b: int, t: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, t, N_NUMERIC, generator=g),
        torch.randint(1, 12, (b, t), generator=g),
        torch.randint(1, N_CHANNELS, (b, t), generator=g),
    )


def test_local_attention_dense_and_sliced_paths_agree() -> None:
    torch.manual_seed(0)
    layer = LocalAttentionLayer(16, 4, 32, band=5).eval()
    x = torch.randn(3, 11, 16)
    with torch.inference_mode():
        assert torch.allclose(layer(x, dense=True), layer(x, dense=False), atol=1e-6)


@pytest.mark.parametrize("keep", [1, 4, 11])
def test_a_layers_last_positions_alone_equal_the_whole_layers(keep: int) -> None:
    torch.manual_seed(0)
    layer = LocalAttentionLayer(16, 4, 32, band=5).eval()
    x = torch.randn(3, 11, 16)
    with torch.inference_mode():
        assert torch.allclose(layer.last(x, keep), layer(x)[:, -keep:], atol=1e-6)


@pytest.mark.parametrize(("band", "layers"), [(4, 2), (8, 3), (3, 1)])
def test_the_steps_trimmed_attention_equals_the_whole_contexts(band: int, layers: int) -> None:
    """The step computes only what its one output depends on; the output is the same."""
    model = _model(band, layers)
    num, mcc, chan = _sequences(4, model.encoder.context)
    with torch.inference_mode():
        x = model.encoder.tokens(num, mcc, chan)
        whole = model.encoder.attend(x)[:, -1:]
        assert torch.allclose(model.encoder.attend_last(x), whole, atol=1e-6)


def test_an_event_depends_on_its_last_context_events_only() -> None:
    """Changing an event older than the context changes no later attention output."""
    model = _model(band=3, layers=2)  # context 5
    num, mcc, chan = _sequences(1, 12)
    with torch.inference_mode():
        x = model.encoder.tokens(num, mcc, chan)
        before = model.encoder.attend(x)
        x2 = x.clone()
        x2[0, 2] += 3.0 * torch.randn(x.shape[-1])  # not a constant: LayerNorm removes it
        after = model.encoder.attend(x2)
    ctx = model.encoder.context
    assert torch.allclose(before[0, 2 + ctx :], after[0, 2 + ctx :], atol=1e-6)
    assert not torch.allclose(before[0, 2 + ctx - 1], after[0, 2 + ctx - 1], atol=1e-4)


@pytest.mark.parametrize(("band", "layers"), [(4, 2), (8, 2), (3, 1)])
def test_stepping_equals_the_sequence_forward(band: int, layers: int) -> None:
    model = _model(band, layers)
    b, t = 3, 30
    num, mcc, chan = _sequences(b, t)
    with torch.inference_mode():
        ref = model.encoder.sequence(num, mcc, chan)
        ctx, d = model.encoder.context, model.cfg.d_model
        pn = torch.cat([torch.zeros(b, ctx - 1, N_NUMERIC), num], 1)
        pm = torch.cat([torch.zeros(b, ctx - 1, dtype=torch.long), mcc], 1)
        pc = torch.cat([torch.zeros(b, ctx - 1, dtype=torch.long), chan], 1)
        pad = torch.arange(ctx - 1 + t).expand(b, -1) < ctx - 1
        h, c = torch.zeros(b, d), torch.zeros(b, d)
        for i in range(t):
            s = slice(i, i + ctx)
            h, c, emb = model.encoder.step(pn[:, s], pm[:, s], pc[:, s], pad[:, s], h, c)
            assert torch.allclose(emb, ref[:, i], atol=1e-5), i


def test_each_event_is_scored_from_the_state_before_it() -> None:
    model = _model()
    num, mcc, chan = _sequences(2, 9)
    with torch.inference_mode():
        before = model.before_each(num, mcc, chan)
        after = model.encoder.sequence(num, mcc, chan)
        empty = model.encoder.empty_embedding()
    assert torch.allclose(before[:, 0], empty.expand(2, -1))
    assert torch.allclose(before[:, 1:], after[:, :-1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[IncrementalRiskModel, Path]:
    model = _model(band=4)
    spec = FeatureSpec.identity(tuple(range(5000, 5010)))
    out = tmp_path_factory.mktemp("inc") / "artifact"
    write_artifact(model, spec, out, threshold=0.5)
    return model, out


@pytest.mark.slow
def test_export_records_the_architecture_and_onnx_stepping_matches_torch(exported) -> None:
    model, folder = exported
    artifact = load_artifact(folder)
    assert artifact.incremental and artifact.context == model.encoder.context
    assert check_step_parity(model, folder, cards=4, events=25, seed=3) < 1e-5
    onnx = OnnxRiskModel(artifact).load()
    step_inputs = {i.name: i.shape for i in onnx.encoder.get_inputs()}  # type: ignore[union-attr]
    assert set(step_inputs) == set(STEP_INPUTS)
    # the context axis is fixed: the step never reads more events, whatever the history
    assert step_inputs["ctx_num"][1] == model.encoder.context
    with torch.inference_mode():
        empty = model.encoder.empty_embedding().numpy()[0]
    np.testing.assert_allclose(onnx.empty_history_embedding, empty, atol=1e-6)


@pytest.mark.slow
def test_rebuild_replay_and_advance_agree_in_onnx(exported) -> None:
    """The three serving uses of the step: rebuilt from a window, advanced one event at a
    time, replayed over whole cards, all equal torch's sequence forward."""
    model, folder = exported
    onnx = OnnxRiskModel(load_artifact(folder)).load()
    lay, empty = onnx.state_layout, onnx.empty_history_embedding
    assert empty is not None
    num, mcc, chan = _sequences(2, 20, seed=5)
    with torch.inference_mode():
        ref = model.encoder.sequence(num, mcc, chan).numpy()
    n, m, c = num.numpy(), mcc.numpy(), chan.numpy()
    lengths = np.array([20, 13])
    states, emb = rebuild(onnx.step, lay, empty, n, m, c, lengths)
    np.testing.assert_allclose(emb[0], ref[0, 19], atol=1e-5)
    np.testing.assert_allclose(emb[1], ref[1, 12], atol=1e-5)
    # one more event from the rebuilt state = the sequence one step further
    nxt, emb2 = advance(onnx.step, lay, states[1:], n[1, 13:14], m[1, 13:14], c[1, 13:14])
    np.testing.assert_allclose(emb2[0], ref[1, 13], atol=1e-5)
    assert nxt.shape == (1, lay.width)
    # whole cards laid out flat: each event gets the state after the ones before it
    rows = np.arange(33)
    before, after = replay(
        onnx.step,
        lay,
        empty,
        (
            np.concatenate([n[0], n[1, :13]]),
            np.concatenate([m[0], m[1, :13]]),
            np.concatenate([c[0], c[1, :13]]),
        ),
        (np.array([0, 20]), np.array([20, 13])),
        rows,
        rows[::2],
    )
    np.testing.assert_allclose(before[0], empty, atol=1e-6)
    np.testing.assert_allclose(before[1:20], ref[0, :19], atol=1e-5)
    np.testing.assert_allclose(before[20], empty, atol=1e-6)
    np.testing.assert_allclose(before[21:], ref[1, :12], atol=1e-5)
    flat_after = np.concatenate([ref[0], ref[1, :13]])
    np.testing.assert_allclose(after, flat_after[::2], atol=1e-5)


@pytest.mark.slow
def test_the_rebuild_graph_gives_the_state_stepping_gives(exported) -> None:
    """A miss rebuilt by the rebuild graph (one call per window length) must leave the
    same state, context and embedding as stepping through the window, for windows
    shorter and longer than the step's context, and for empty ones."""
    model, folder = exported
    artifact = load_artifact(folder)
    assert artifact.rebuild_path is not None
    assert check_rebuild_parity(model, folder) < 1e-5
    onnx = OnnxRiskModel(artifact).load()
    assert onnx.rebuild_graph is not None
    lay, empty = onnx.state_layout, onnx.empty_history_embedding
    assert empty is not None
    num, mcc, chan = _sequences(5, 24, seed=9)
    n, m, c = num.numpy(), mcc.numpy(), chan.numpy()
    lengths = np.array([24, 3, 0, lay.kept, 3])
    stepped = rebuild(onnx.step, lay, empty, n, m, c, lengths)
    whole = onnx.rebuild_states(n, m, c, lengths)
    np.testing.assert_allclose(whole[1], stepped[1], atol=1e-5)
    np.testing.assert_allclose(whole[0], stepped[0], atol=1e-5)
    # the rebuilt state steps on like the live one
    _, emb2 = advance(onnx.step, lay, whole[0][:1], n[0, :1], m[0, :1], c[0, :1])
    _, ref2 = advance(onnx.step, lay, stepped[0][:1], n[0, :1], m[0, :1], c[0, :1])
    np.testing.assert_allclose(emb2, ref2, atol=1e-5)


@pytest.mark.slow
def test_an_artifact_without_the_rebuild_graph_still_serves(exported, tmp_path: Path) -> None:
    """Artifacts exported before the rebuild graph existed rebuild by stepping."""
    model, folder = exported
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / REBUILD_FILE).unlink()
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    del manifest["files"][REBUILD_FILE]
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    onnx = OnnxRiskModel(load_artifact(old)).load()
    assert onnx.rebuild_graph is None
    num, mcc, chan = _sequences(2, 20, seed=5)
    with torch.inference_mode():
        ref = model.encoder.sequence(num, mcc, chan).numpy()
    _, emb = onnx.rebuild_states(num.numpy(), mcc.numpy(), chan.numpy(), np.array([20, 13]))
    np.testing.assert_allclose(emb[0], ref[0, 19], atol=1e-5)
    np.testing.assert_allclose(emb[1], ref[1, 12], atol=1e-5)
