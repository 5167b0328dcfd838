"""Re-export an incremental artifact's step graph with the current exporter, from the
artifact's own weights: the same function, a new graph, no retraining.

    python -m models.reexport_step SOURCE_ARTIFACT OUT_DIR

Why: the step graph of an artifact exported before ``IncrementalEncoder.attend_last``
computes every context position at every layer, although its one output depends on
fewer (docs/BENCHMARKS.md measures the difference). Retraining to get the new graph
would cost a training run and give other weights; the weights are already in the
artifact, so this rebuilds the encoder from them and exports its step again.

How the weights come back: ``encoder.onnx`` keeps most parameters under their own names.
The exporter stores the rest folded (a matmul weight transposed, the LSTM's two biases
concatenated in ONNX gate order); which initializer holds which parameter is read off an
export of a randomly initialised encoder of the same architecture, by value. Two checks
guard the result, and either failing stops the tool with one line:

1. the recovered encoder's step in torch equals the artifact's step graph in ONNX
   Runtime (``RECOVERY_TOLERANCE``): the weights are the artifact's;
2. the new graph passes the export's own parity check (``check_step_parity``).

The output is a new artifact version (its id is derived from its graphs, as at export);
``model.json`` records the version it came from under ``step_reexported_from``.

Run it as its own process (the CLI): a rebuild graph exported later in a process that
exported a step graph last comes out with a fixed length axis (torch 2.13; see
``models.export_incremental.export_rebuild``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from features.errors import RiskstreamError
from features.featurize import N_NUMERIC
from models.export import version_of_graphs
from models.export_incremental import STEP_INPUTS, STEP_OUTPUTS, check_step_parity, export_step
from models.incremental_network import INCREMENTAL, IncrementalConfig, IncrementalRiskModel
from models.network import NetworkConfig
from scoring.artifact import (
    ENCODER_FILE,
    MANIFEST_FILE,
    ArtifactError,
    load_artifact,
    write_manifest,
)

#: how far the recovered encoder's step may be from the artifact's graph (float32 noise)
RECOVERY_TOLERANCE = 1e-5
#: torch's LSTM gate blocks (input, forget, cell, output) in ONNX's order (i, o, f, c)
_ONNX_GATES = (0, 3, 1, 2)


class ReexportError(RiskstreamError):
    """The artifact cannot be re-exported (said in one line)."""


def _initializers(path: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(path)).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def _to_onnx_gates(bias: np.ndarray) -> np.ndarray:
    return np.concatenate([np.split(bias, 4)[g] for g in _ONNX_GATES])


def _from_onnx_gates(bias: np.ndarray) -> np.ndarray:
    blocks = np.split(bias, 4)
    out = [np.empty(0)] * 4
    for onnx_pos, torch_gate in enumerate(_ONNX_GATES):
        out[torch_gate] = blocks[onnx_pos]
    return np.concatenate(out)


Slot = tuple[str, tuple[int, ...], int]  # (initializer name or "", shape, rank among that shape)


def _slots(found: dict[str, np.ndarray]) -> dict[str, Slot]:
    """Where each initializer sits: a parameter's own name is kept; a folded one is known
    by its shape and its rank among the folded ones of that shape (the exporter names
    those by position, and the position moves when the graph does, but layers are traced
    in order, so the rank does not)."""
    seen: dict[tuple[int, ...], int] = {}
    out: dict[str, Slot] = {}
    for name, value in found.items():
        if name.startswith("encoder."):
            out[name] = (name, value.shape, 0)
        else:
            rank = seen.get(value.shape, 0)
            seen[value.shape] = rank + 1
            out[name] = ("", value.shape, rank)
    return out


def _layout(model: IncrementalRiskModel) -> dict[Slot, tuple[str, str]]:
    """Slot → (encoder parameter, how it is stored), from an export of ``model``'s
    architecture with random, pairwise different weights."""
    enc = model.encoder
    with torch.no_grad():
        for weight in enc.parameters():
            weight.copy_(torch.randn_like(weight))
    params = {k: v.detach().numpy() for k, v in enc.named_parameters()}
    with tempfile.TemporaryDirectory() as tmp:
        export_step(model, Path(tmp))
        found = _initializers(Path(tmp) / ENCODER_FILE)
    lstm_bias = np.concatenate(
        [_to_onnx_gates(params["lstm.bias_ih_l0"]), _to_onnx_gates(params["lstm.bias_hh_l0"])]
    )
    slots = _slots(found)
    layout: dict[Slot, tuple[str, str]] = {}
    for name, value in found.items():
        for key, p in params.items():
            if p.shape == value.shape and np.array_equal(p, value):
                layout[slots[name]] = (key, "as is")
            elif p.ndim == 2 and p.T.shape == value.shape and np.array_equal(p.T, value):
                layout[slots[name]] = (key, "transposed")
        if value.size == lstm_bias.size and np.array_equal(value.ravel(), lstm_bias):
            layout[slots[name]] = ("lstm.bias", "onnx gates")
    return layout


def recover_encoder(folder: Path) -> IncrementalRiskModel:
    """The artifact's incremental model with its encoder's weights (the head is not
    read: only the step graph is re-exported)."""
    art = load_artifact(folder)
    net = art.manifest["network"]
    if net.get("architecture") != INCREMENTAL:
        raise ReexportError(f"{folder}: not an incremental artifact (it has no step graph)")
    names = {f.name for f in dataclasses.fields(NetworkConfig)}
    cfg = NetworkConfig(**{k: v for k, v in net.items() if k in names})
    model = IncrementalRiskModel(cfg, IncrementalConfig(band=int(net["band"]))).eval()
    layout = _layout(model)
    stored = _initializers(folder / ENCODER_FILE)
    state: dict[str, torch.Tensor] = {}
    for name, slot in _slots(stored).items():
        if slot not in layout:
            continue  # a constant of the graph, not a weight
        key, how = layout[slot]
        value = stored[name]
        if how == "onnx gates":
            half = value.size // 2
            state["lstm.bias_ih_l0"] = torch.from_numpy(_from_onnx_gates(value.ravel()[:half]))
            state["lstm.bias_hh_l0"] = torch.from_numpy(_from_onnx_gates(value.ravel()[half:]))
        else:
            state[key] = torch.from_numpy(np.array(value.T if how == "transposed" else value))
    missing = {k for k, _ in model.encoder.named_parameters()} - set(state)
    if missing:
        raise ReexportError(f"{folder}: no initializer holds {sorted(missing)[0]}")
    model.encoder.load_state_dict(state)
    return model


def recovery_error(model: IncrementalRiskModel, folder: Path, seed: int = 3) -> float:
    """Max |torch step of the recovered encoder − the artifact's step graph|."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / ENCODER_FILE), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    b, ctx, d = 16, model.encoder.context, model.cfg.d_model
    pad = torch.rand(b, ctx, generator=g) < 0.3
    pad[:, -1] = False
    args = (
        torch.randn(b, ctx, N_NUMERIC, generator=g),
        torch.randint(1, model.cfg.n_mcc, (b, ctx), generator=g),
        torch.randint(1, model.cfg.n_channel, (b, ctx), generator=g),
        pad,
        torch.randn(b, d, generator=g),
        torch.randn(b, d, generator=g),
    )
    with torch.inference_mode():
        h, c, emb = model.encoder.step(*args)
        before = torch.tanh(model.encoder.out(args[4]))
    feeds = {k: a.numpy() for k, a in zip(STEP_INPUTS, args, strict=True)}
    got = sess.run(list(STEP_OUTPUTS), feeds)
    return max(
        float(np.abs(x.numpy() - y).max()) for x, y in zip((h, c, emb, before), got, strict=True)
    )


def reexport(source: Path, out: Path) -> str:
    """Write ``source`` with a re-exported step graph to ``out``; returns its version."""
    model = recover_encoder(source)
    err = recovery_error(model, source)
    if err > RECOVERY_TOLERANCE:
        raise ReexportError(
            f"{source}: the recovered weights give a step {err:.2e} away from the artifact's "
            f"(tolerance {RECOVERY_TOLERANCE:.0e}); not re-exported"
        )
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    for name in (ENCODER_FILE, ENCODER_FILE + ".data"):
        (tmp / name).unlink(missing_ok=True)
    export_step(model, tmp)
    parity = check_step_parity(model, tmp)
    if parity > RECOVERY_TOLERANCE:
        shutil.rmtree(tmp)
        raise ReexportError(f"the re-exported step fails its parity check ({parity:.2e})")
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    created = datetime.now(UTC)
    version = version_of_graphs(tmp, created)
    manifest.pop("files", None)
    manifest.pop("format", None)
    manifest |= {
        "model_version": version,
        "step_reexported_from": {
            "model_version": manifest["model_version"],
            "at": created.isoformat(),
            "step_parity_max_abs_diff": parity,
            "recovery_max_abs_diff": err,
        },
    }
    (tmp / MANIFEST_FILE).unlink()
    write_manifest(tmp, manifest)
    load_artifact(tmp)  # every hash verifies
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return version


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="an incremental artifact folder")
    ap.add_argument("out", type=Path, help="where the re-exported artifact goes")
    args = ap.parse_args(argv)
    try:
        version = reexport(args.source, args.out)
    except (ReexportError, ArtifactError, OSError, ValueError) as exc:
        print(f"reexport_step: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: model {version}, step graph re-exported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
