"""Who is at the console: a signed session cookie, or a bearer token plus a name header.

Every label carries the analyst's name, so the console always asks for one. Where the
HTTP token is configured (required to bind beyond loopback) the login also asks for it;
without a token the server only listens on loopback and a name is enough.

The cookie is ``<payload>.<hmac>``: the payload (name, expiry) is readable but cannot be
forged without the key. The key derives from the token, so every worker behind one load
balancer accepts each other's cookies; without a token it is random per process (a
restart asks loopback users to type their name again). ``SameSite=Strict`` plus
JSON-only POST bodies keep other sites from submitting labels in an analyst's name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from features.errors import RiskstreamError

COOKIE = "riskstream_console"
SESSION_S = 12 * 3600
MAX_NAME = 64


class LoginError(RiskstreamError, ValueError):
    """A login that cannot be accepted; the message is shown to the user."""

    http_status = 401


@dataclass(frozen=True)
class ConsoleAuth:
    token: str | None
    key: bytes

    @classmethod
    def create(cls, token: str | None) -> ConsoleAuth:
        key = (
            hmac.new(token.encode(), b"riskstream-console-session", hashlib.sha256).digest()
            if token
            else secrets.token_bytes(32)
        )
        return cls(token, key)

    @property
    def needs_password(self) -> bool:
        return self.token is not None

    def login(self, analyst: object, password: object, now: float | None = None) -> str:
        """Check a login form; return the cookie value."""
        name = clean_name(analyst)
        if self.token is not None and not (
            isinstance(password, str) and hmac.compare_digest(password, self.token)
        ):
            raise LoginError("wrong password")
        expiry = int((time.time() if now is None else now) + SESSION_S)
        payload = _b64(json.dumps({"a": name, "e": expiry}).encode())
        return f"{payload}.{self._sign(payload)}"

    def analyst(
        self,
        cookie: str | None,
        authorization: str | None = None,
        analyst_header: str | None = None,
        now: float | None = None,
    ) -> str | None:
        """The analyst behind a request, or None (→ 401)."""
        if (
            self.token is not None
            and authorization is not None
            and hmac.compare_digest(authorization, f"Bearer {self.token}")
        ):
            try:
                return clean_name(analyst_header or "api")
            except LoginError:
                return None
        if not cookie or "." not in cookie:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            if int(data["e"]) < (time.time() if now is None else now):
                return None
            return clean_name(data["a"])
        except (ValueError, KeyError, TypeError, LoginError):
            return None

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())


def clean_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LoginError("an analyst name is required")
    name = " ".join(value.split())
    if len(name) > MAX_NAME or not name.isprintable():
        raise LoginError(f"the analyst name must be printable and at most {MAX_NAME} characters")
    return name


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
