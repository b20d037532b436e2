"""The combined answer of a cohort query (``GET /api/v1/tasks/{id}/cohort``)."""

from __future__ import annotations

from fastapi import APIRouter

from common.schemas.cohort import COHORT_COUNT
from hub.deps import CurrentUser, SessionDep
from hub.exceptions import InvalidRequest
from hub.federation import service as federation
from hub.query import service as queries
from hub.query.schemas import QueryResult

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


@router.get("/{task_id}/cohort", summary="A cohort query's answers, combined across nodes")
def cohort_result(task_id: int, user: CurrentUser, session: SessionDep) -> QueryResult:
    federation.expire_overdue(session=session)
    task = federation.get_visible(session=session, user=user, task_id=task_id)
    if task.kind != COHORT_COUNT:
        raise InvalidRequest(f"task {task_id} is a {task.kind} task, not {COHORT_COUNT}")
    return queries.result(task)
