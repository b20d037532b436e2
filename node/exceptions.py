"""Errors of the node's API, mapped to HTTP once, in ``node.main``.

    HavenetError                     (common.errors)
    └── NodeError                    root of the errors the node's API reports
        ├── NotAuthenticated         no bearer token, or the wrong one          → 401
        ├── NotFound                 no study, series, instance or job so named → 404
        ├── Conflict                 the request clashes with the current state → 409
        └── PreviewUnavailable       the instance cannot be shown (no pixels …) → 422

Elsewhere in the hierarchy, ``PermanentError`` maps to 422, ``RetryableError`` to 503 and
any other ``HavenetError`` to a 500 that carries no message. A message here names what was
asked for by its pseudonymous key (a stage-1 UID, a job number), never a hospital
identifier.
"""

from __future__ import annotations

from common.errors import HavenetError


class NodeError(HavenetError):
    """Root of the errors the node's API reports."""


class NotAuthenticated(NodeError):
    """The request carries no bearer token, or not the node's."""

    def __init__(self) -> None:
        super().__init__("a valid bearer token is required (Authorization: Bearer TOKEN)")


class NotFound(NodeError):
    """Nothing of ``kind`` is known under ``key`` (a stage-1 UID or a job number)."""

    def __init__(self, kind: str, key: str | int) -> None:
        # The key is not echoed: a caller might paste a hospital UID by mistake.
        super().__init__(f"no such {kind} on this node")
        self.kind = kind
        self.key = str(key)


class Conflict(NodeError):
    """The request cannot be carried out in the current state (a finished job, say)."""


class PreviewUnavailable(NodeError):
    """The instance is stored but cannot be rendered; the reason is PHI-free."""

    def __init__(self, sop_uid: str, reason: str) -> None:
        super().__init__(f"instance {sop_uid}: {reason}")
        self.sop_uid = sop_uid
        self.reason = reason
