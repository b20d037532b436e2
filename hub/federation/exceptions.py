"""Why the hub refuses to create a task, or to take a node's result."""

from __future__ import annotations

from hub.exceptions import Conflict, InvalidRequest, NotFound


class UnknownKind(InvalidRequest):
    def __init__(self, kind: str) -> None:
        super().__init__(f"kind: the hub knows no task kind {kind!r}")


class InvalidPayload(InvalidRequest):
    """The payload does not fit the kind's schema (names the field, never the value)."""


class NoTargets(InvalidRequest):
    def __init__(self) -> None:
        super().__init__("nodes: no enrolled node to send the task to")


class TargetNotEnrolled(InvalidRequest):
    def __init__(self, name: str) -> None:
        super().__init__(f"nodes: node {name!r} is not enrolled (or is revoked)")


class TaskNotFound(NotFound):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"no task {task_id} here")


class TaskClosed(Conflict):
    """The node's result arrives for a task no longer pending at that node."""

    def __init__(self, task_id: int, state: str) -> None:
        super().__init__(f"task {task_id} is {state} at this node; the result is not taken")
        self.state = state
