"""Why the hub refuses a node: each names the check that failed, never a key or token."""

from __future__ import annotations

from hub.exceptions import Conflict, Forbidden, InvalidRequest, NotAuthenticated, NotFound


class NotSigned(NotAuthenticated):
    def __init__(self) -> None:
        super().__init__(
            "the request is not signed: X-Havenet-Node, X-Havenet-Timestamp, X-Havenet-Nonce "
            "and X-Havenet-Signature are required"
        )


class UnknownNode(NotAuthenticated):
    def __init__(self) -> None:
        super().__init__("no enrolled node has this X-Havenet-Node id")


class BadSignature(NotAuthenticated):
    def __init__(self) -> None:
        super().__init__("the signature does not verify with the node's enrolled key")


class StaleTimestamp(NotAuthenticated):
    def __init__(self, skew_seconds: int) -> None:
        super().__init__(
            f"X-Havenet-Timestamp is not within ±{skew_seconds} s of the hub's clock; "
            "check the node's clock"
        )


class ReplayedRequest(NotAuthenticated):
    def __init__(self) -> None:
        super().__init__("X-Havenet-Nonce was already used: a replayed request is refused")


class EnrollmentRefused(NotAuthenticated):
    """The enrollment token is unknown, used or expired (the reason says which)."""


class NodeRevoked(Forbidden):
    def __init__(self) -> None:
        super().__init__("this node is revoked; ask the hub admin to enroll it again")


class NodeNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no node named {name!r}")


class NodeExists(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"a node named {name!r} exists already")


class InvalidKey(InvalidRequest):
    """A public key or a rotation proof cannot be accepted (names the field)."""
