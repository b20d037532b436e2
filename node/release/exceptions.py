"""Errors of the node's data release."""

from __future__ import annotations

from node.exceptions import Conflict, NotFound


class RequestNotFound(NotFound):
    def __init__(self, request_id: int) -> None:
        super().__init__("data request", request_id)


class AlreadyDecided(Conflict):
    def __init__(self, request_id: int, state: str) -> None:
        super().__init__(f"data request {request_id} is {state} already")


class NothingToRetry(Conflict):
    def __init__(self, request_id: int, state: str) -> None:
        super().__init__(
            f"data request {request_id} is {state} and none of its studies failed: nothing to retry"
        )


class Stage2Busy(Conflict):
    def __init__(self, request_id: int) -> None:
        super().__init__(f"stage 2 of data request {request_id} runs in another process")
