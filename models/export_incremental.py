"""Export of the incremental encoder: the ``step`` graph (``encoder.onnx``) beside the head,
and the ``rebuild`` graph (``rebuild.onnx``).

The step takes a card's last ``context`` events' step features (the new event last,
``ctx_pad`` True before the card's first event) and its LSTM state, and returns the
next state, the embedding after the event (``next_embedding``) and the embedding of
the state it was given (``history_embedding``: with a zero state, the embedding of a
card with no events, which serving needs once). The context axis is fixed by the
architecture; the batch axis is symbolic (checked). Parity is checked the way serving
uses the graph: ONNX Runtime stepping through random card sequences event by event
must equal PyTorch's whole-sequence forward.

The rebuild graph takes a card's stored window (step features of equal-length windows,
oldest first) and returns the state and embedding after it in one call. Without it a
cache miss steps once per stored event: at batch 1, one ORT call per event of the
window (docs/BENCHMARKS.md). Its sequence axis is symbolic; serving groups the rows it
rebuilds by exact length, so it pads nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from features.featurize import N_NUMERIC
from models.incremental_network import IncrementalEncoder, IncrementalRiskModel
from models.onnx_export import onnx_export
from scoring.artifact import ENCODER_FILE, REBUILD_FILE

STEP_INPUTS = ("ctx_num", "ctx_mcc", "ctx_channel", "ctx_pad", "state_h", "state_c")
STEP_OUTPUTS = ("next_h", "next_c", "next_embedding", "history_embedding")
REBUILD_INPUTS = ("hist_num", "hist_mcc", "hist_channel")
REBUILD_OUTPUTS = ("next_h", "next_c", "next_embedding")
#: the longest window the rebuild graph is exported for (windows hold ``max_history``)
MAX_REBUILD_LENGTH = 4096


class _Step(nn.Module):
    """``IncrementalEncoder.step`` plus the embedding of the incoming state."""

    def __init__(self, encoder: IncrementalEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self,
        ctx_num: torch.Tensor,
        ctx_mcc: torch.Tensor,
        ctx_channel: torch.Tensor,
        ctx_pad: torch.Tensor,
        state_h: torch.Tensor,
        state_c: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h, c, emb = self.encoder.step(ctx_num, ctx_mcc, ctx_channel, ctx_pad, state_h, state_c)
        return h, c, emb, torch.tanh(self.encoder.out(state_h))


class _Rebuild(nn.Module):
    """``IncrementalEncoder.final_state``: equal-length windows → the state after them."""

    def __init__(self, encoder: IncrementalEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, hist_num: torch.Tensor, hist_mcc: torch.Tensor, hist_channel: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encoder.final_state(hist_num, hist_mcc, hist_channel)


def example_step_inputs(
    model: IncrementalRiskModel, b: int, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ctx, d = model.encoder.context, model.cfg.d_model
    pad = torch.rand(b, ctx, generator=g) < 0.3
    pad[:, -1] = False
    return (
        torch.randn(b, ctx, N_NUMERIC, generator=g),
        torch.randint(1, model.cfg.n_mcc, (b, ctx), generator=g),
        torch.randint(1, 5, (b, ctx), generator=g),
        pad,
        torch.randn(b, d, generator=g) * 0.1,
        torch.randn(b, d, generator=g) * 0.1,
    )


def export_step(model: IncrementalRiskModel, folder: Path) -> None:
    """Write the step graph as ``encoder.onnx`` (dynamic batch)."""
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=8192)
    args = example_step_inputs(model, 7)
    onnx_export(
        _Step(model.encoder),
        args,
        folder / ENCODER_FILE,
        list(STEP_INPUTS),
        list(STEP_OUTPUTS),
        tuple({0: batch} for _ in args),
    )


def check_step_parity(
    model: IncrementalRiskModel, folder: Path, cards: int = 5, events: int = 40, seed: int = 7
) -> float:
    """Max |ORT stepping − torch sequence| over the embeddings after every event."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / ENCODER_FILE), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    num = torch.randn(cards, events, N_NUMERIC, generator=g)
    mcc = torch.randint(1, model.cfg.n_mcc, (cards, events), generator=g)
    chan = torch.randint(1, 5, (cards, events), generator=g)
    with torch.inference_mode():
        ref = model.encoder.sequence(num, mcc, chan).numpy()
        empty = model.encoder.empty_embedding().numpy()
    ctx, d = model.encoder.context, model.cfg.d_model
    pn = np.concatenate([np.zeros((cards, ctx - 1, N_NUMERIC), np.float32), num.numpy()], 1)
    pm = np.concatenate([np.zeros((cards, ctx - 1), np.int64), mcc.numpy()], 1)
    pc = np.concatenate([np.zeros((cards, ctx - 1), np.int64), chan.numpy()], 1)
    pad = np.arange(ctx - 1 + events)[None, :].repeat(cards, 0) < ctx - 1
    h = np.zeros((cards, d), np.float32)
    c = np.zeros((cards, d), np.float32)
    worst = 0.0
    for t in range(events):
        feeds = dict(
            zip(
                STEP_INPUTS,
                (
                    pn[:, t : t + ctx],
                    pm[:, t : t + ctx],
                    pc[:, t : t + ctx],
                    pad[:, t : t + ctx],
                    h,
                    c,
                ),
                strict=True,
            )
        )
        h, c, emb, before = sess.run(list(STEP_OUTPUTS), feeds)
        if t == 0:
            worst = max(worst, float(np.abs(before - empty).max()))
        worst = max(worst, float(np.abs(emb - ref[:, t]).max()))
    return worst


def _windows(
    model: IncrementalRiskModel, b: int, t: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, t, N_NUMERIC, generator=g),
        torch.randint(1, model.cfg.n_mcc, (b, t), generator=g),
        torch.randint(1, 5, (b, t), generator=g),
    )


def export_rebuild(model: IncrementalRiskModel, folder: Path) -> None:
    """Write the rebuild graph as ``rebuild.onnx`` (dynamic batch and length). Export it
    before the step graph: exported after it, in the same process, the length axis came
    out fixed at the example's length (torch 2.13); ``check_rebuild_parity`` catches it."""
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=8192)
    length = torch.export.Dim("length", min=2, max=MAX_REBUILD_LENGTH)
    args = _windows(model, 3, 9, seed=1)
    onnx_export(
        _Rebuild(model.encoder),
        args,
        folder / REBUILD_FILE,
        list(REBUILD_INPUTS),
        list(REBUILD_OUTPUTS),
        tuple({0: batch, 1: length} for _ in args),
    )


def check_rebuild_parity(model: IncrementalRiskModel, folder: Path, seed: int = 11) -> float:
    """Max |ORT rebuild − torch sequence| over the state after windows of several lengths
    (the embedding against ``sequence``'s last position, ``h``/``c`` against torch's own
    ``final_state``), at batch sizes 1 and 5. The LSTM's cell state is unbounded, so its
    error is taken relative to its size where that exceeds 1 (``h`` and the embedding are
    bounded by tanh)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / REBUILD_FILE), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, (b, t) in enumerate([(1, 1), (5, 2), (1, 17), (5, 64)]):
        num, mcc, chan = _windows(model, b, t, seed + i)
        with torch.inference_mode():
            ref_emb = model.encoder.sequence(num, mcc, chan)[:, -1].numpy()
            ref_h, ref_c, _ = (z.numpy() for z in model.encoder.final_state(num, mcc, chan))
        got = sess.run(
            list(REBUILD_OUTPUTS),
            dict(zip(REBUILD_INPUTS, (num.numpy(), mcc.numpy(), chan.numpy()), strict=True)),
        )
        for name, want, have in zip(("h", "c", "emb"), (ref_h, ref_c, ref_emb), got, strict=True):
            diff = np.abs(np.asarray(have) - want)
            if name == "c":  # the cell state is unbounded: its error scales with it
                diff = diff / np.maximum(np.abs(want), 1.0)
            worst = max(worst, float(diff.max()))
    return worst
