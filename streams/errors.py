"""The streams package's errors (the root, ``RiskstreamError``, is in ``features.errors``).

Messages say what is wrong and what the operator can do, because they are printed as
the single line a user sees (no traceback unless ``--debug``).
"""

from __future__ import annotations

from features.errors import RiskstreamError, StoreUnavailableError

__all__ = [
    "EmbeddedStackError",
    "InfrastructureError",
    "MissingExtraError",
    "RiskstreamError",
    "StoreUnavailableError",
]


class MissingExtraError(RiskstreamError):
    """An optional dependency group is not installed."""


class EmbeddedStackError(RiskstreamError):
    """The embedded broker or Redis could not be started."""


class InfrastructureError(RiskstreamError):
    """Kafka or Redis failed after retries; the worker should stop so it is restarted."""

    http_status = 503
