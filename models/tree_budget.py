"""How many trees the served decision needs, and a served tree cut to its first k trees.

``choose_rounds`` is training's choice (on validation): the fewest boosting rounds whose
served decision stays within a margin of the whole early-stopped tree's. The tree is
part of every event's cost, and most of what its last rounds add, the blend with the
network does not need (docs/MODEL.md, "What the tree costs to serve").

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
from collections.abc import Callable
from typing import Any

import numpy as np

#: the operator ``models.baseline.export_tree`` writes (onnxmltools' LightGBM converter)
ENSEMBLE_OP = "TreeEnsembleClassifier"
#: the round counts tried below the trained one
ROUND_GRID = (25, 50, 75, 100, 150, 200, 300, 400)


def choose_rounds(
    trained: int, served_pr_auc: Callable[[int], float], margin: float
) -> tuple[int, dict[str, Any]]:
    """The fewest rounds k (of ``ROUND_GRID`` below ``trained``, and ``trained``) whose
    ``served_pr_auc(k)`` (validation) is at least the trained tree's minus ``margin``;
    with the figures behind the choice, for ``model.json``."""
    if margin < 0:
        raise ValueError(f"the tree margin must be 0 or more, not {margin}")
    grid = sorted({k for k in ROUND_GRID if k < trained} | {trained})
    figures = {k: float(served_pr_auc(k)) for k in grid}
    floor = figures[trained] - margin
    chosen = min(k for k in grid if figures[k] >= floor)
    return chosen, {
        "rounds": chosen,
        "trained_rounds": trained,
        "margin": margin,
        "served_validation_pr_auc": {str(k): v for k, v in figures.items()},
    }


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
