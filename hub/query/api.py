"""The combined answer of a cohort query (``GET /api/v1/tasks/{id}/cohort``)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter

from common.schemas.cohort import COHORT_COUNT
from hub.deps import CurrentUser, RuntimeDep, SessionDep
from hub.exceptions import InvalidRequest
from hub.federation import service as federation
from hub.query import service as queries
from hub.query.schemas import QueryResult

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


@router.get("/{task_id}/cohort", summary="A cohort query's answers, combined across nodes")
def cohort_result(
    task_id: int, user: CurrentUser, hub: RuntimeDep, session: SessionDep
) -> QueryResult:
    """Complete when every node that was seen lately has answered (or refused, failed,
    expired): a node offline for longer than ``node_offline_after_seconds`` is not waited
    for, though it still answers if it returns within the task's time-to-live."""
    federation.expire_overdue(session=session)
    task = federation.get_visible(session=session, user=user, task_id=task_id)
    if task.kind != COHORT_COUNT:
        raise InvalidRequest(f"task {task_id} is a {task.kind} task, not {COHORT_COUNT}")
    offline_after = dt.timedelta(seconds=hub.settings.node_offline_after_seconds)
    return queries.result(task, offline_after=offline_after)
