"""One call into ``torch.onnx.export`` for every graph of an artifact."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPSET = 18


def onnx_export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic_shapes: tuple[dict[int, Any], ...],
) -> None:
    """``torch.onnx.export(dynamo=True)`` at the artifacts' opset, quietly: the exporter
    logs a warning per torchvision op it cannot find (not ours, not actionable)."""
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            verbose=False,
        )
