"""The one exception root of riskstream (``features`` is the bottom layer, so every package
can import it).

Each package derives small named subclasses; the CLI and HTTP layers map them to one
line and one status code in one place each.
"""

from __future__ import annotations


class RiskstreamError(Exception):
    """Root of every error riskstream raises on purpose."""

    http_status: int = 500

    def one_line(self) -> str:
        """The message as one line, safe to print or put in a dead letter."""
        return " ".join(str(self).split())


class StoreUnavailableError(RiskstreamError):
    """Redis did not answer after the configured retries: never a silent empty history."""

    http_status = 503
