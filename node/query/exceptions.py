"""Errors of the query engine. Reasons are PHI-free: they name rules and counts of queries."""

from __future__ import annotations

from common.errors import HavenetError, PermanentError
from node.exceptions import Conflict, NotFound


class QueryError(HavenetError):
    """Root of the query engine's errors."""


class QueryRefused(QueryError):
    """The node's disclosure policy does not allow this query; ``reason`` says which rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ApprovalNotFound(NotFound):
    def __init__(self, task_id: int) -> None:
        super().__init__("query awaiting approval", task_id)


class ApprovalClosed(Conflict):
    """The query is decided already, or its time-to-live ran out."""

    def __init__(self, task_id: int, state: str) -> None:
        super().__init__(f"query of task {task_id} is {state}: it can no longer be decided")
        self.state = state


class InvalidReason(PermanentError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"reason: say why, in 1 to {limit} characters (no patient data)")
