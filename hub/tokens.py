"""Bearer and enrollment tokens: random, shown once, stored only as a keyed hash.

A copy of the hub's database therefore holds no usable token, and a token cannot be
checked against it without the hub secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

USER_PREFIX = "hvu_"
ENROLLMENT_PREFIX = "hve_"


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(secret: bytes, token: str) -> str:
    return hmac.new(secret, token.encode("utf-8"), hashlib.sha256).hexdigest()
