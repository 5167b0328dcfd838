"""When a label reaches the bank: the delay model that training and evaluation replay.

A labelled file knows every answer at once; a bank does not. A fraud is confirmed either
by an analyst reviewing an alert (minutes to hours later) or by the card holder's dispute,
a chargeback (days to weeks later, often for fraud nobody alerted on). Training that
counted a label from the moment of the transaction would learn entity risk ("3 confirmed
frauds at this merchant this week") that no worker could ever have had.

Delays are drawn per transaction from its 64-bit id hash, so a replay is deterministic:
the trainer, ``evaluate`` and the worker-parity test place every label at the same time.

Default mix (``mix``), stated as an assumption with its basis (docs/MODEL.md):

* a share ``analyst_share`` of frauds is confirmed by an analyst: log-normal delay,
  median 4 hours, σ = 1;
* the rest arrive as chargebacks: log-normal delay, median 21 days, σ = 0.6, capped at
  120 days — the card networks' time limit for a fraud dispute (Visa Core Rules,
  Mastercard Chargeback Guide: 120 days from the transaction); card holders mostly see
  fraud on their monthly statement, hence a median of about three weeks.

Only fraud labels are replayed. Confirmed-legit labels exist in production (an analyst
clearing an alert), but which transactions get one depends on the previous model's
alerts, so they are kept in the profiles for display and never used as model inputs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from features.errors import RiskstreamError

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
MAX_DISPUTE_MS = 120 * 86_400_000


class LabelDelayError(RiskstreamError, ValueError):
    """A ``--label-delay`` value that is not a duration or a known model."""

    http_status = 400


def parse_duration_ms(text: str) -> int:
    """'7d' → 604800000; '90m', '12h', '0s' ... (one clear error otherwise)."""
    m = _DURATION.match(text)
    if not m:
        raise LabelDelayError(f"label delay {text!r} is not a duration like 7d, 12h, 90m, or 'mix'")
    return round(float(m.group(1)) * _UNITS_MS[m.group(2)])


@dataclass(frozen=True)
class LabelDelay:
    """Fixed delay (``fixed_ms``) or the analyst/chargeback mix."""

    fixed_ms: int | None = None
    analyst_share: float = 0.3
    analyst_median_ms: int = 4 * 3_600_000
    analyst_sigma: float = 1.0
    chargeback_median_ms: int = 21 * 86_400_000
    chargeback_sigma: float = 0.6

    @classmethod
    def parse(cls, text: str) -> LabelDelay:
        """``mix`` (the default model), ``mix:0.5`` (analyst share), or a fixed duration."""
        text = text.strip()
        if text == "mix":
            return cls()
        if text.startswith("mix:"):
            try:
                share = float(text[4:])
            except ValueError:
                share = -1.0
            if not 0.0 <= share <= 1.0:
                raise LabelDelayError(f"label delay {text!r}: the analyst share must be in [0, 1]")
            return cls(analyst_share=share)
        return cls(fixed_ms=parse_duration_ms(text))

    def describe(self) -> str:
        """One line for reports: which delay every figure was computed with."""
        if self.fixed_ms is not None:
            return f"fixed {self.fixed_ms / 86_400_000:g} days after the transaction"
        return (
            f"mix: {self.analyst_share:.0%} analyst-confirmed (median "
            f"{self.analyst_median_ms / 3_600_000:g} h), the rest chargebacks (median "
            f"{self.chargeback_median_ms / 86_400_000:g} d, at most 120 d)"
        )

    def delays_ms(self, tx_hash: np.ndarray) -> np.ndarray:
        """Delay of each transaction's label, from its id hash (deterministic)."""
        n = tx_hash.size
        if self.fixed_ms is not None:
            return np.full(n, self.fixed_ms, dtype=np.int64)
        h = tx_hash.astype(np.uint64)
        # three independent uniforms from one 64-bit hash (disjoint 21-bit slices)
        u = [((h >> np.uint64(s)) & np.uint64(0x1FFFFF)).astype(np.float64) for s in (0, 21, 42)]
        u1, u2, u3 = ((x + 0.5) / 2_097_152.0 for x in u)
        z = np.sqrt(-2.0 * np.log(u2)) * np.cos(2.0 * math.pi * u3)  # Box-Muller
        analyst = u1 < self.analyst_share
        mu = np.where(
            analyst, math.log(self.analyst_median_ms), math.log(self.chargeback_median_ms)
        )
        sigma = np.where(analyst, self.analyst_sigma, self.chargeback_sigma)
        delay = np.exp(mu + sigma * z)
        return np.minimum(delay, MAX_DISPUTE_MS).astype(np.int64)


DEFAULT_LABEL_DELAY = LabelDelay()
