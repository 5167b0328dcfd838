"""The shape of the code, checked: one exception root, and a serving path that imports
neither training code (torch) nor developer tooling."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import features
import models
import scoring
import streams
from features.errors import RiskstreamError

PACKAGES = (features, models, scoring, streams)
SKIP = {"models.train", "models.network", "models.dataset", "models.export"}  # need torch


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        for info in pkgutil.walk_packages(pkg.__path__, f"{pkg.__name__}."):
            names.append(info.name)
    return names


def test_every_error_riskstream_defines_derives_from_the_one_root() -> None:
    outside = []
    for name in _modules():
        if name in SKIP or name.startswith("streams.console.static"):
            continue
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            if not issubclass(cls, RiskstreamError):
                outside.append(f"{name}.{cls.__name__}")
    assert not outside, f"errors outside RiskstreamError: {outside}"


def _imported(modules: str, unwanted: str) -> str:
    """The modules matching ``unwanted`` (a Python expression on ``m``) that importing
    ``modules`` pulls in, in a fresh interpreter."""
    code = f"import sys, {modules}\nprint(','.join(sorted(m for m in sys.modules if {unwanted})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_serving_path_imports_no_training_code_and_no_dev_tooling() -> None:
    bad = _imported(
        "streams.app, streams.service, streams.http_views, streams.console.views",
        "m.split('.')[0] in ('torch', 'lightgbm', 'onnxmltools', 'sklearn') or m.startswith("
        "('models.', 'streams.devtools'))",
    )
    assert bad == "", f"the worker imports {bad}"


def test_the_demo_runs_without_the_training_stack() -> None:
    """Quickstart 1 installs only the ``embedded`` extra: the demo must not import torch."""
    bad = _imported(
        "streams.cli, streams.commands.demo, streams.devtools.embedded,"
        " streams.devtools.local_worker, streams.devtools.simulator",
        "m.split('.')[0] in ('torch', 'sklearn', 'onnx', 'matplotlib', 'lightgbm', 'onnxmltools')",
    )
    assert bad == "", f"the demo imports {bad}"
