"""The served decision: one logit from the sequence model's and the tree's.

``served = sequence · logit_seq + tree · logit_tree + bias``. The weights are chosen on
validation data at training time (``models.combine``) and stored in the artifact's
``model.json`` under ``served``; an artifact without a tree serves the sequence model's
logit unchanged. Pure numpy: serving never imports the training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: a float32 probability cannot get closer to 0 or 1 than this without losing the logit
_P_EPS = 1e-7


@dataclass(frozen=True)
class Combination:
    """Weights of the two logits in the served one."""

    sequence: float = 1.0
    tree: float = 0.0
    bias: float = 0.0
    #: which candidate training chose (``models.combine``), for reports
    kind: str = "transformer_lstm"

    @property
    def uses_tree(self) -> bool:
        return self.tree != 0.0

    @classmethod
    def from_manifest(cls, served: dict[str, Any] | None) -> Combination:
        """From ``model.json``'s ``served`` block (absent: the sequence model alone)."""
        if not served:
            return cls()
        w = served["weights"]
        return cls(float(w["sequence"]), float(w["tree"]), float(w["bias"]), str(served["kind"]))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "weights": {"sequence": self.sequence, "tree": self.tree, "bias": self.bias},
        }

    def logit(self, sequence_logit: np.ndarray, tree_logit: np.ndarray | None) -> np.ndarray:
        """The served logit (NaN stays NaN: the caller fails closed on it)."""
        out = self.sequence * sequence_logit + self.bias
        if self.uses_tree:
            if tree_logit is None:
                raise ValueError("this combination needs the tree's logit")
            out = out + self.tree * tree_logit
        return out


def tree_logit(probability: np.ndarray) -> np.ndarray:
    """Log-odds of the tree's float32 probability, clipped where float32 saturates."""
    p = np.clip(np.asarray(probability, dtype=np.float64), _P_EPS, 1.0 - _P_EPS)
    return np.log(p) - np.log1p(-p)
