"""Shared helpers for benchmark scripts: machine description and result printing."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def report(name: str, **figures: Any) -> None:
    """Print one JSON line per measurement (copied into docs/BENCHMARKS.md)."""
    print(json.dumps({"bench": name, **figures, "machine": machine()}), flush=True)
