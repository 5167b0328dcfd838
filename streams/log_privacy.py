"""How user ids appear in logs: hashed by default, plain only when an operator asks.

Logs travel further than topics (aggregators, tickets, screenshots), so a user id in a log
line is a keyed hash: stable within a deployment, so one user's lines can be followed,
but not reversible by hashing a list of known ids without the key. The key comes from
``RISKSTREAM_LOG_HASH_KEY``; without one, each process draws a random key, and hashes
then only correlate within that process.
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache


@lru_cache(maxsize=1)
def _process_key() -> bytes:
    return secrets.token_bytes(16)


def user_ref(user_id: str, mode: str = "hashed", key: str | None = None) -> str:
    """``u#<12 hex>`` for ``mode="hashed"``, the id itself for ``mode="plain"``."""
    if mode == "plain":
        return user_id
    secret = key.encode() if key else _process_key()
    return "u#" + hashlib.blake2b(user_id.encode(), digest_size=6, key=secret).hexdigest()
