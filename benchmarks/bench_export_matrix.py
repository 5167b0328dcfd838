"""Export parity on the full matrix: T ∈ {1, 17, 64, 200, 256} × B ∈ {1, 7, 512}.

    python -m benchmarks.bench_export_matrix

Exports a freshly initialised model (the weights do not matter for parity) and reports the
largest |ORT − torch| over all shapes, with and without ``inference_mode``. CI runs the
small shapes (tests/models/test_export.py); this is the full matrix from the issue.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.common import report
from features.featurize import N_CHANNELS, N_NUMERIC
from models.export import (
    ENCODER_INPUTS,
    HEAD_INPUTS,
    check_dynamic,
    example_encoder_inputs,
    example_head_inputs,
    export_graphs,
)
from models.network import NetworkConfig, RiskModel


def main() -> None:
    torch.manual_seed(0)
    model = RiskModel(NetworkConfig(N_NUMERIC, 22, N_CHANNELS)).eval()
    folder = Path(tempfile.mkdtemp())
    export_graphs(model, folder)
    check_dynamic(folder)
    enc = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(folder / "head.onnx"), providers=["CPUExecutionProvider"])
    worst = {"grad": 0.0, "inference_mode": 0.0}
    nan = False
    t0 = time.perf_counter()
    for t in (1, 17, 64, 200, 256):
        for b in (1, 7, 512):
            args = example_encoder_inputs(b, t, 22, seed=t * 1000 + b)
            cur = example_head_inputs(b, 22, 64, seed=t + b)[1:]
            emb = enc.run(None, {n: a.numpy() for n, a in zip(ENCODER_INPUTS, args, strict=True)})[
                0
            ]
            logit = head.run(
                None, dict(zip(HEAD_INPUTS, [emb, *(c.numpy() for c in cur)], strict=True))
            )[0]
            nan |= bool(np.isnan(emb).any() or np.isnan(logit).any())
            for mode in worst:
                ctx = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
                with ctx:
                    e_ref = model.encoder(*args)
                    l_ref = model.head(e_ref, *cur)
                worst[mode] = max(
                    worst[mode],
                    float(np.abs(emb - e_ref.numpy()).max()),
                    float(np.abs(logit - l_ref.numpy()).max()),
                )
    report(
        "export_parity_matrix",
        max_abs_diff_grad=worst["grad"],
        max_abs_diff_inference_mode=worst["inference_mode"],
        any_nan=nan,
        shapes="T{1,17,64,200,256} x B{1,7,512}, rows with 0 and 1 past events",
        seconds=round(time.perf_counter() - t0, 1),
    )


if __name__ == "__main__":
    main()
