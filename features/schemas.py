"""Write the JSON Schema of every topic contract to ``docs/schemas``.

Run ``python -m features.schemas`` after changing a contract; a test fails while the
committed schemas differ from the models, so docs cannot drift from code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from features.contracts import CONTRACT_MODELS

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def schemas() -> dict[str, dict[str, Any]]:
    """Contract name → JSON Schema (validation mode: what producers must send)."""
    return {name: model.model_json_schema() for name, model in CONTRACT_MODELS.items()}


def render(schema: dict[str, Any]) -> str:
    """Stable text form, so byte comparison is meaningful."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every schema; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in schemas().items():
        path = directory / f"{name}.json"
        path.write_text(render(schema))
        paths.append(path)
    return paths


if __name__ == "__main__":  # pragma: no cover
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR):
        print(p)
