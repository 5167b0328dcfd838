"""Errors of the scoring engine."""

from __future__ import annotations

from features.errors import RiskstreamError


class ScoringError(RiskstreamError):
    """The model could not score a batch."""


class ModelLoadError(ScoringError):
    """An artifact loaded but its graphs do not match its feature spec."""
