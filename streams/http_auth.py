"""The bearer-token check of the worker's HTTP API.

Constant time (``hmac.compare_digest`` on bytes): with ``!=`` the time a wrong guess
takes grows with the length of its correct prefix, which leaks the token byte by byte.
"""

from __future__ import annotations

import hmac


def bearer_ok(authorization: str | None, token: str | None) -> bool:
    """True when no token is configured or ``authorization`` is ``Bearer <token>``."""
    if token is None:
        return True
    if authorization is None:
        return False
    return hmac.compare_digest(
        authorization.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode()
    )
