"""Errors of the hub's central storage."""

from __future__ import annotations

from hub.exceptions import InvalidRequest, NotFound


class ObjectNotFound(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__(f"no stored object {key!r}")


class InvalidKey(InvalidRequest):
    def __init__(self, key: str) -> None:
        super().__init__(f"storage key {key!r}: use '/'-separated names, no '..' or leading '/'")
