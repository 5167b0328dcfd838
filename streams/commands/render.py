"""Human-readable rendering of alerts for terminals."""

from __future__ import annotations

from typing import Any


def render_alert(alert: dict[str, Any]) -> str:
    """A few lines: who, how risky versus their own bar, what was bought, why, and what it
    resembles."""
    head = (
        f"ALERT {alert['transaction_id']}  user {alert['user_id']}  "
        f"score {alert['score']:.3f} ≥ threshold {alert['threshold']:.3f}  "
        f"(history {alert['sequence_length']} events, model {alert['model_version']})"
    )
    lines = [head]
    ctx = alert.get("context")
    if ctx:
        where = " · ".join(
            str(v)
            for v in (
                ctx.get("merchant_id"),
                f"MCC {ctx.get('mcc')}",
                ctx.get("channel"),
                ctx.get("country"),
            )
            if v
        )
        lines.append(f"    {ctx.get('amount')} {ctx.get('currency')}  {where}")
    for r in alert.get("reasons", []):
        lines.append(f"    · {r['text']}  (+{r['contribution']:.2f})")
    cases = alert.get("similar_cases", [])
    if cases:
        lines.append(
            "    similar confirmed fraud: "
            + ", ".join(f"{c['case_id']} ({c['similarity']:.2f})" for c in cases)
        )
    return "\n".join(lines)
