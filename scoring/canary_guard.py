"""When a canary should be rolled back: pure arithmetic over its counters.

The canary is judged only once both it and the primary have decided ``min_events``
events under the current roles (a handful of events says nothing about rates). Then:

- error rate: events the canary failed to score (decided by the primary instead) over
  events routed to it, above ``max_error_rate``;
- alert-rate ratio: canary alert rate over primary alert rate, with one pseudo-count on
  each side so that zero alerts do not divide by zero, above ``max_alert_ratio`` or below
  its inverse: a canary that stops alerting is as wrong as one that alerts on everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from scoring.model_roles import CANARY, PRIMARY, RoleCounters


@dataclass(frozen=True)
class Verdict:
    cause: str  # low-cardinality: error_rate | alert_ratio
    detail: str


def canary_verdict(
    counters: RoleCounters, max_error_rate: float, max_alert_ratio: float, min_events: int
) -> Verdict | None:
    """A reason to roll the canary back, or None while it behaves (or is too young)."""
    n_c = counters.events.get(CANARY, 0)
    n_p = counters.events.get(PRIMARY, 0)
    if n_c < min_events:
        return None
    errors = counters.errors.get(CANARY, 0)
    if errors / n_c > max_error_rate:
        return Verdict(
            "error_rate",
            f"canary failed on {errors} of {n_c} events ({errors / n_c:.2%} > "
            f"{max_error_rate:.2%})",
        )
    if n_p < min_events:
        return None
    rate_c = (counters.alerts.get(CANARY, 0) + 1) / (n_c + 1)
    rate_p = (counters.alerts.get(PRIMARY, 0) + 1) / (n_p + 1)
    ratio = rate_c / rate_p
    if ratio > max_alert_ratio or ratio < 1 / max_alert_ratio:
        return Verdict(
            "alert_ratio",
            f"canary alert rate {rate_c:.3%} vs primary {rate_p:.3%} (ratio {ratio:.2f}, "
            f"bound {max_alert_ratio:g})",
        )
    return None
