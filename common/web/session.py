"""The pages' log-in: a user signs in with their API token once; the browser then holds a
signed session cookie (user id and expiry, HMAC under the app's secret) — never the token."""

from __future__ import annotations

import hashlib
import hmac
import time

COOKIE = "havenet_session"
LIFETIME_SECONDS = 8 * 3600


def _mac(secret: bytes, payload: str) -> str:
    return hmac.new(secret, f"web-session:{payload}".encode(), hashlib.sha256).hexdigest()


def issue(secret: bytes, user_id: int, *, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + LIFETIME_SECONDS)
    payload = f"{user_id}.{expires}"
    return f"{payload}.{_mac(secret, payload)}"


def verify(secret: bytes, cookie: str, *, now: float | None = None) -> int | None:
    """The user id of a valid, unexpired cookie; None otherwise."""
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    payload = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_mac(secret, payload), parts[2]):
        return None
    if int(parts[1]) < (now if now is not None else time.time()):
        return None
    return int(parts[0])
