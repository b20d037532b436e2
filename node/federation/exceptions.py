"""Errors of the node's hub channel.

    HavenetError                         (common.errors)
    ├── ConfigurationError
    │   └── NotEnrolled                  no enrollment in the data folder
    ├── RetryableError
    │   └── HubUnreachable               no connection, a timeout, or a 5xx: try again later
    ├── PermanentError
    │   └── HubRefused                   the hub said no (401/403/4xx); carries its detail
    │       └── ResultNotTaken           409: the task is no longer pending at this node
    ├── TaskRefused                      raised by a handler that declines a task (policy)
    └── TaskDeferred                     raised by a handler that answers later (approval)

The hub's details name the check that failed, never a secret; they are safe to log.
"""

from __future__ import annotations

from common.errors import ConfigurationError, HavenetError, PermanentError, RetryableError


class NotEnrolled(ConfigurationError):
    def __init__(self) -> None:
        super().__init__(
            "this node is not enrolled with a hub: run `havenet node enroll HUB_URL TOKEN`"
        )


class HubUnreachable(RetryableError):
    """The hub could not be reached or failed on its side; the agent backs off and retries."""


class HubRefused(PermanentError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the hub refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail


class ResultNotTaken(HubRefused):
    """The hub no longer takes a result for this task (expired, or answered already)."""


class TaskRefused(HavenetError):
    """A handler declines the task; ``reason`` goes to the hub (PHI-free by contract)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskDeferred(HavenetError):
    """A handler holds the task and answers later (after local approval); the agent tells
    the hub so, with ``reason`` (PHI-free by contract), and the answer follows over the
    channel when it is ready."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
