"""Task handlers, by kind. Later work adds kinds with :func:`register`; the agent looks the
kind of each task up here and refuses a kind it has no handler for.

A handler runs in a worker thread, gets the task and the node's context, and returns the
answer payload — aggregates only — or raises :class:`TaskRefused` with a PHI-free reason.
Any other exception makes the task ``failed``, reported by the exception's type alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from common import __version__
from common.schemas.channel import NODE_STATUS, NodePolicy, NodeStatusAnswer, TaskRead
from common.schemas.cohort import COHORT_COUNT
from common.schemas.release import RELEASE_REJECTED, RELEASE_REQUEST
from node.settings import NodeSettings
from node.store import service as store
from node.store.db import transaction


@dataclass(frozen=True)
class HandlerContext:
    settings: NodeSettings
    sessions: sessionmaker[Session]


Handler = Callable[[TaskRead, HandlerContext], dict[str, Any]]


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._handlers)


def node_status(task: TaskRead, context: HandlerContext) -> dict[str, Any]:
    """The node's software version and how many studies, series and instances it holds."""
    with transaction(context.sessions) as session:
        counts = store.status_counts(session=session)
    settings = context.settings
    answer = NodeStatusAnswer(
        software_version=__version__,
        studies=counts["studies"],
        series=counts["series"],
        instances=counts["instances"],
        policy=NodePolicy(
            min_cell=settings.query_min_cell,
            rounding=settings.query_rounding,
            noise=settings.query_noise > 0,
            breakdowns=sorted(settings.query_breakdowns),
            statistics=settings.query_statistics,
            auto_answer=settings.query_auto_answer,
            budget_per_project=settings.query_budget_per_project,
        ),
    )
    return answer.model_dump(mode="json", exclude={"version": True, "policy": {"version"}})


registry = Registry()
register = registry.register
register(NODE_STATUS, node_status)


def cohort_count(task: TaskRead, context: HandlerContext) -> dict[str, Any]:
    """A federated cohort count, under the node's disclosure policy (``node.query``)."""
    from node.query.handlers import handle_cohort_count  # noqa: PLC0415 - it imports this module

    return handle_cohort_count(task, context)


register(COHORT_COUNT, cohort_count)


def release_request(task: TaskRead, context: HandlerContext) -> dict[str, Any]:
    """A data request, recorded for hospital IT to approve or decline (``node.release``)."""
    from node.release.handlers import handle_release_request  # noqa: PLC0415 - imports this

    return handle_release_request(task, context)


def release_rejected(task: TaskRead, context: HandlerContext) -> dict[str, Any]:
    """A curator's rejection of a released study, recorded with its reason."""
    from node.release.handlers import handle_release_rejected  # noqa: PLC0415 - imports this

    return handle_release_rejected(task, context)


register(RELEASE_REQUEST, release_request)
register(RELEASE_REJECTED, release_rejected)
