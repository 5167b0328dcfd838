"""Export a trained model to an artifact folder: two ONNX graphs + model.json.

``torch.onnx.export(dynamo=True)`` with dynamic batch and sequence axes. The exporter
has been seen to silently specialise a dimension (DESIGN §8), so every export checks
that each graph input dimension is symbolic and that ONNX Runtime equals PyTorch on
shapes the trace never saw, before the artifact is written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.entity_profile import N_ENTITY
from features.errors import RiskstreamError
from features.featurize import N_NUMERIC, FeatureSpec
from models.export_incremental import (
    check_rebuild_parity,
    check_step_parity,
    export_rebuild,
    export_step,
)
from models.incremental_network import INCREMENTAL, WINDOW, IncrementalRiskModel
from models.network import RiskModel
from models.onnx_export import OPSET, onnx_export
from scoring.artifact import (
    ENCODER_FILE,
    FRAUD_CASES_FILE,
    HEAD_FILE,
    TREE_FILE,
    update_manifest,
    write_manifest,
)
from scoring.served_decision import Combination

ENCODER_INPUTS = ("hist_num", "hist_mcc", "hist_channel", "hist_pad", "hist_len")
HEAD_INPUTS = ("history_embedding", "cur_num", "cur_mcc", "cur_channel")
ENTITY_INPUT = "cur_entity"  # a head trained with merchant/device profiles has it too


def head_input_names(n_entity: int) -> tuple[str, ...]:
    """The head graph's inputs for a network with ``n_entity`` entity inputs."""
    return (*HEAD_INPUTS, ENTITY_INPUT) if n_entity else HEAD_INPUTS


class ExportError(RiskstreamError):
    """The exported graphs are not safe to serve."""


def example_encoder_inputs(
    b: int, t: int, n_mcc: int, seed: int = 0, lengths: list[int] | None = None
) -> tuple[torch.Tensor, ...]:
    """Random valid encoder inputs; ``lengths`` default to a mix including 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    if lengths is None:
        hist_len = torch.randint(0, t + 1, (b,), generator=g)
        hist_len[0] = 0
        if b > 1:
            hist_len[1] = min(1, t)
    else:
        hist_len = torch.tensor(lengths, dtype=torch.int64)
    pad = torch.arange(t)[None, :] >= hist_len[:, None]
    num = torch.randn(b, t, N_NUMERIC, generator=g).masked_fill(pad[..., None], 0.0)
    mcc = torch.randint(1, n_mcc, (b, t), generator=g).masked_fill(pad, 0)
    chan = torch.randint(1, 5, (b, t), generator=g).masked_fill(pad, 0)
    return num, mcc, chan, pad, hist_len


def example_head_inputs(
    b: int, n_mcc: int, emb_dim: int, seed: int = 0, n_entity: int = 0
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    base = (
        torch.tanh(torch.randn(b, emb_dim, generator=g)),
        torch.randn(b, N_NUMERIC, generator=g),
        torch.randint(0, n_mcc, (b,), generator=g),
        torch.randint(0, 5, (b,), generator=g),
    )
    return (*base, torch.randn(b, n_entity, generator=g)) if n_entity else base


def export_head(model: RiskModel | IncrementalRiskModel, folder: Path) -> None:
    """Write head.onnx with a dynamic batch axis."""
    model.eval()
    cfg = model.cfg
    batch = torch.export.Dim("batch", min=1, max=8192)
    head_args = example_head_inputs(7, cfg.n_mcc, cfg.embedding_dim, n_entity=cfg.n_entity)
    head_names = head_input_names(cfg.n_entity)
    onnx_export(
        model.head,
        head_args,
        folder / HEAD_FILE,
        list(head_names),
        ["logit"],
        tuple({0: batch} for _ in head_names),
    )


def export_graphs(model: RiskModel, folder: Path) -> None:
    """Write encoder.onnx and head.onnx with dynamic batch/sequence axes."""
    model.eval()
    cfg = model.cfg
    batch = torch.export.Dim("batch", min=1, max=8192)
    seq = torch.export.Dim("seq", min=1, max=4096)
    enc_args = example_encoder_inputs(7, 17, cfg.n_mcc)
    seq_axes = {0: batch, 1: seq}
    onnx_export(
        model.encoder,
        enc_args,
        folder / ENCODER_FILE,
        list(ENCODER_INPUTS),
        ["history_embedding"],
        (seq_axes, seq_axes, seq_axes, seq_axes, {0: batch}),
    )
    export_head(model, folder)


def symbolic_dims(path: Path) -> dict[str, list[str | int]]:
    """Each graph input's dims: a name for symbolic dims, an int for fixed ones."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in graph.input
    }


def check_dynamic(folder: Path, incremental: bool = False) -> None:
    """Refuse graphs where a batch or sequence dimension was specialised (the step
    graph's context and state widths are fixed by design: only its batch must be free)."""
    for name in (ENCODER_FILE, HEAD_FILE):
        for inp, dims in symbolic_dims(folder / name).items():
            if incremental and name == ENCODER_FILE:
                if isinstance(dims[0], int):
                    raise ExportError(f"{name}: input {inp} has a fixed batch dimension {dims}")
                continue
            fixed_ok = {N_NUMERIC} if inp.endswith("_num") else set()
            if inp == ENTITY_INPUT:
                fixed_ok = {N_ENTITY}
            if inp == "history_embedding":
                fixed_ok = {dims[-1]} if isinstance(dims[-1], int) else set()
            leading = dims[:-1] if fixed_ok else dims
            if any(isinstance(d, int) for d in leading):
                raise ExportError(f"{name}: input {inp} has a fixed dimension {dims}")


def check_parity(
    model: RiskModel, folder: Path, shapes: list[tuple[int, int]], atol: float = 1e-5
) -> float:
    """Max |ORT − torch| over the given (batch, seq) shapes; raises over ``atol``."""
    import onnxruntime as ort

    enc = ort.InferenceSession(str(folder / ENCODER_FILE), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(folder / HEAD_FILE), providers=["CPUExecutionProvider"])
    worst = 0.0
    model.eval()
    for i, (b, t) in enumerate(shapes):
        args = example_encoder_inputs(b, t, model.cfg.n_mcc, seed=100 + i)
        cur = example_head_inputs(
            b, model.cfg.n_mcc, model.cfg.embedding_dim, seed=200 + i, n_entity=model.cfg.n_entity
        )[1:]
        with torch.inference_mode():
            emb_ref = model.encoder(*args)
            logit_ref = model.head(emb_ref, *cur)
        emb = enc.run(None, {n: a.numpy() for n, a in zip(ENCODER_INPUTS, args, strict=True)})[0]
        logit = head.run(
            None,
            dict(
                zip(
                    head_input_names(model.cfg.n_entity),
                    [emb, *(c.numpy() for c in cur)],
                    strict=True,
                )
            ),
        )[0]
        if not (np.isfinite(emb).all() and np.isfinite(logit).all()):
            raise ExportError(f"non-finite output at batch={b} seq={t}")
        worst = max(
            worst,
            float(np.abs(emb - emb_ref.numpy()).max()),
            float(np.abs(logit - logit_ref.numpy()).max()),
        )
    if worst > atol:
        raise ExportError(f"ONNX Runtime differs from PyTorch by {worst:.2e} (> {atol})")
    return worst


def check_head_parity(model: IncrementalRiskModel, folder: Path, atol: float = 1e-5) -> float:
    """Max |ORT − torch| of the head alone on random inputs; raises over ``atol``."""
    import onnxruntime as ort

    head = ort.InferenceSession(str(folder / HEAD_FILE), providers=["CPUExecutionProvider"])
    names = head_input_names(model.cfg.n_entity)
    worst = 0.0
    for i, b in enumerate((1, 7, 64)):
        args = example_head_inputs(
            b, model.cfg.n_mcc, model.cfg.embedding_dim, seed=300 + i, n_entity=model.cfg.n_entity
        )
        with torch.inference_mode():
            ref = model.head(*args).numpy()
        got = head.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]
        if not np.isfinite(got).all():
            raise ExportError(f"non-finite head output at batch={b}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst > atol:
        raise ExportError(f"ONNX Runtime differs from PyTorch by {worst:.2e} (> {atol})")
    return worst


def export_network(
    model: RiskModel | IncrementalRiskModel,
    folder: Path,
    parity_shapes: list[tuple[int, int]] | None = None,
) -> tuple[float, dict[str, Any]]:
    """Write and verify the network's graphs; returns the parity and the manifest's
    ``network`` block (the architecture is recorded there)."""
    if isinstance(model, IncrementalRiskModel):
        export_rebuild(model, folder)  # first: see its docstring
        export_step(model, folder)
        export_head(model, folder)
        check_dynamic(folder, incremental=True)
        parity = max(
            check_step_parity(model, folder),
            check_rebuild_parity(model, folder),
            check_head_parity(model, folder),
        )
        if parity > 1e-5:
            raise ExportError(f"ONNX Runtime differs from PyTorch by {parity:.2e} (> 1e-05)")
        block = {
            **model.cfg.to_json(),
            **model.inc.to_json(),
            "architecture": INCREMENTAL,
            "context": model.encoder.context,
        }
        return parity, block
    export_graphs(model, folder)
    check_dynamic(folder)
    parity = check_parity(model, folder, parity_shapes or [(1, 1), (7, 17), (3, 64)])
    return parity, {**model.cfg.to_json(), "architecture": WINDOW}


@dataclass(frozen=True)
class TreePart:
    """The tree and how the served decision uses it (``models.train.TrainOutcome``)."""

    clf: Any
    #: real input rows (validation) for the ORT-vs-LightGBM parity check
    parity_rows: np.ndarray
    combination: Combination
    #: every candidate's validation figures (``models.combine.choose``)
    report: dict[str, Any]
    #: each part's own calibrated threshold
    thresholds: dict[str, float]


def export_tree_part(tree: TreePart, entity: bool, folder: Path, atol: float = 1e-5) -> float:
    """Write ``tree.onnx``; max |ORT − LightGBM| probability on the parity rows (raises
    over ``atol``: a converter that takes a different branch must not ship)."""
    import onnxruntime as ort

    from models.baseline import baseline_probabilities, export_tree

    path = folder / TREE_FILE
    path.write_bytes(export_tree(tree.clf, entity))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = np.ascontiguousarray(tree.parity_rows, dtype=np.float32)
    got = np.asarray(sess.run(["probabilities"], {"tree_features": rows})[0])[:, 1]
    worst = float(np.abs(got - baseline_probabilities(tree.clf, rows)).max(initial=0.0))
    if not np.isfinite(got).all() or worst > atol:
        raise ExportError(f"the tree in ONNX Runtime differs from LightGBM by {worst:.2e}")
    return worst


def version_of_graphs(folder: Path, created: datetime) -> str:
    """An artifact's version id: its date and a digest of its graphs (encoder, head and
    tree where there is one), so the same graphs always get the same id."""
    graphs = [g for g in (ENCODER_FILE, HEAD_FILE, TREE_FILE) if (folder / g).exists()]
    digest = hashlib.sha256(b"".join((folder / g).read_bytes() for g in graphs)).hexdigest()
    return f"tl-{created:%Y%m%d}-{digest[:10]}"


def write_artifact(
    model: RiskModel | IncrementalRiskModel,
    spec: FeatureSpec,
    out: Path,
    threshold: float,
    metrics: dict[str, Any] | None = None,
    fraud_cases: tuple[np.ndarray, np.ndarray] | None = None,
    case_patterns: np.ndarray | None = None,
    training: dict[str, Any] | None = None,
    parity_shapes: list[tuple[int, int]] | None = None,
    tree: TreePart | None = None,
) -> Path:
    """Export, verify and write the artifact folder atomically (temp dir + rename)."""
    out = Path(out)
    tmp = Path(
        tempfile.mkdtemp(prefix=".artifact-", dir=out.parent if out.parent.exists() else None)
    )
    try:
        parity, network = export_network(model, tmp, parity_shapes)
        if fraud_cases is not None:
            ids, emb = fraud_cases
            # each case's fraud pattern, where the data names one: for purity reports only
            arrays = {
                "ids": np.asarray(ids, dtype=str),
                "embeddings": np.asarray(emb, dtype=np.float32),
            }
            if case_patterns is not None:
                arrays["patterns"] = np.asarray(case_patterns, dtype=str)
            np.savez(tmp / FRAUD_CASES_FILE, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds loosely
        served: dict[str, Any] = {}
        thresholds = {"global": float(threshold)}
        if tree is not None:
            served_parity = export_tree_part(tree, spec.entity, tmp)
            served = {
                "served": {
                    **tree.combination.to_json(),
                    "validation": tree.report,
                    "tree_parity_max_abs_diff": served_parity,
                }
            }
            thresholds |= {k: float(v) for k, v in tree.thresholds.items()}
        created = datetime.now(UTC)
        write_manifest(
            tmp,
            {
                "model_version": version_of_graphs(tmp, created),
                "created_at": created.isoformat(),
                "opset": OPSET,
                "feature_spec": spec.to_json(),
                "network": network,
                "thresholds": thresholds,
                "export_parity_max_abs_diff": parity,
                **served,
                "metrics": metrics or {},
                "training": training or {},
            },
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def update_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    """Add evaluation metrics to model.json (hashes of the graphs stay valid)."""
    manifest = json.loads((folder / "model.json").read_text())
    update_manifest(folder, {"metrics": {**manifest.get("metrics", {}), **metrics}})
