"""A served tree cut to its first k trees: the same model that k boosting rounds give.

Gradient boosting adds one tree per round, and each round fits the residual of the ones
before, so the first k trees of a trained ensemble are exactly what training with k rounds
would have produced (same data, seed and parameters). Cutting the exported ONNX ensemble
is therefore a way to ask how much of the tree the served decision needs, and what the
rest costs to serve, without retraining (docs/MODEL.md, "What the tree costs to serve").

Works on the ai.onnx.ml ``TreeEnsembleClassifier`` that ``models.baseline.export_tree``
writes; anything else is refused.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

#: the operator ``models.baseline.export_tree`` writes (onnxmltools' LightGBM converter)
ENSEMBLE_OP = "TreeEnsembleClassifier"


def tree_count(graph: Any) -> int:
    """Trees in the graph's ensemble."""
    return len(set(_attributes(_ensemble(graph))["nodes_treeids"].ints))


def first_trees(graph: Any, k: int) -> Any:
    """A copy of ``graph`` (an ``onnx.ModelProto``) whose ensemble keeps only the trees
    with ids below ``k`` (LightGBM numbers them by boosting round)."""
    n = tree_count(graph)
    if not 1 <= k <= n:
        raise ValueError(f"keep between 1 and {n} trees, not {k}")
    out = copy.deepcopy(graph)
    attrs = _attributes(_ensemble(out))
    for prefix, ids in (("nodes_", "nodes_treeids"), ("class_", "class_treeids")):
        keep = np.asarray(attrs[ids].ints) < k
        for name, attr in attrs.items():
            if name.startswith(prefix):
                _filter(attr, keep)
    return out


def _ensemble(graph: Any) -> Any:
    """The graph's one ensemble node."""
    nodes = [n for n in graph.graph.node if n.op_type == ENSEMBLE_OP]
    if len(nodes) != 1:
        raise ValueError(f"expected one {ENSEMBLE_OP} node, found {len(nodes)}")
    return nodes[0]


def _attributes(node: Any) -> dict[str, Any]:
    return {a.name: a for a in node.attribute}


def _filter(attr: Any, keep: np.ndarray) -> None:
    """Keep the entries of a per-node (or per-leaf) list attribute where ``keep``."""
    for field in ("ints", "floats", "strings"):
        values = list(getattr(attr, field))
        if values:
            if len(values) != keep.size:
                raise ValueError(f"{attr.name} has {len(values)} entries, expected {keep.size}")
            del getattr(attr, field)[:]
            getattr(attr, field).extend(v for v, k in zip(values, keep, strict=True) if k)
