"""Why the hub refuses a data request, a node's report on one, or an upload."""

from __future__ import annotations

from hub.exceptions import Conflict, Forbidden, InvalidRequest, NotFound


class RequestNotFound(NotFound):
    def __init__(self, request_id: int) -> None:
        super().__init__(f"no data request {request_id} here")


class NotATarget(Forbidden):
    def __init__(self, request_id: int) -> None:
        super().__init__(f"data request {request_id} was not sent to this node")


class StateNotAllowed(Conflict):
    def __init__(self, request_id: int, current: str, wanted: str) -> None:
        super().__init__(
            f"data request {request_id} is {current} at this node; it cannot become {wanted}"
        )


class ChunkMismatch(InvalidRequest):
    def __init__(self, sha256: str) -> None:
        super().__init__(f"chunk {sha256}: the bytes sent do not hash to this name")


class BatchInvalid(InvalidRequest):
    """A batch of chunks whose parts do not add up to its body (names the part, by index)."""


class ManifestInvalid(InvalidRequest):
    """A manifest, its signature or a file it lists fails verification (names what, never a
    value)."""
