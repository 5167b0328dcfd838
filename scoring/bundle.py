"""A model together with the state that only makes sense for it.

The embedding cache and the fraud-case memory hold vectors of one model's embedding
space; a hot swap replaces all three at once, so a batch never mixes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from scoring.case_memory import FraudCaseMemory
from scoring.embedding_cache import FaissEmbeddingCache
from scoring.onnx_model import OnnxRiskModel


@dataclass
class ModelBundle:
    """A model with its cache and case memory (either may be off)."""

    model: OnnxRiskModel
    cache: FaissEmbeddingCache | None
    memory: FraudCaseMemory | None
