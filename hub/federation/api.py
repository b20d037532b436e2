"""Tasks over HTTP: the nodes' long poll and results (``/api/v1/channel/tasks``, signed), and
the users' creation, listing and results (``/api/v1/tasks``, bearer tokens)."""

from __future__ import annotations

import datetime as dt
import time
from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, status

from common.schemas.channel import API_PREFIX, ResultReceipt, TaskList, TaskRead, TaskResult
from hub.db import transaction, utcnow
from hub.deps import CurrentUser, Runtime, RuntimeDep, SessionDep, SignedNode
from hub.federation import service as federation
from hub.federation.models import TargetState
from hub.federation.schemas import TaskCreate, TaskDetailRead, TaskSummaryRead
from hub.nodes import service as nodes
from hub.nodes.models import Node

channel = APIRouter(prefix=API_PREFIX, tags=["channel"])
router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


@channel.get("/tasks", summary="The node's pending tasks; held open up to `wait` seconds")
async def poll_tasks(
    node: SignedNode,
    hub: RuntimeDep,
    wait: Annotated[float, Query(ge=0, le=300, description="Seconds to hold the poll.")] = 0,
) -> TaskList:
    """Answers at once when tasks are pending, else when one arrives or the wait ends."""
    deadline = time.monotonic() + min(wait, hub.settings.max_poll_wait_seconds)
    fetch = partial(_pending, hub, node)
    while True:
        woken = hub.signal.current()
        tasks = await anyio.to_thread.run_sync(fetch)
        remaining = deadline - time.monotonic()
        if tasks or remaining <= 0:
            return TaskList(tasks=tasks)
        await hub.signal.wait(woken, min(remaining, hub.settings.poll_recheck_seconds))


def _pending(hub: Runtime, node: Node) -> list[TaskRead]:
    now = utcnow()
    with transaction(hub.sessions) as session:
        federation.expire_overdue(session=session, now=now)
        return federation.pending_for(
            session=session, node=nodes.attached(session=session, node=node), now=now
        )


@channel.post("/tasks/{task_id}/result", summary="The node's result for one task")
def post_result(
    task_id: int, body: TaskResult, node: SignedNode, session: SessionDep
) -> ResultReceipt:
    target = federation.record_result(
        session=session,
        node=nodes.attached(session=session, node=node),
        task_id=task_id,
        result=body,
    )
    return ResultReceipt(task_id=task_id, state=TargetState(target.state).value)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Send a task to nodes")
def create_task(
    body: TaskCreate, user: CurrentUser, hub: RuntimeDep, session: SessionDep
) -> TaskDetailRead:
    task = federation.create(
        session=session,
        user=user,
        request=body,
        default_ttl_seconds=hub.settings.default_task_ttl_seconds,
    )
    detail = federation.detail(session=session, task=task, offline_after=offline_after(hub))
    session.commit()  # before the nodes' polls are woken, so they find it
    hub.signal.notify()
    return detail


@router.get("", summary="Tasks you may see, newest first, with per-node states")
def list_tasks(
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TaskSummaryRead]:
    federation.expire_overdue(session=session)
    found = federation.visible(session=session, user=user, limit=limit)
    return [
        federation.summary(session=session, task=task, offline_after=offline_after(hub))
        for task in found
    ]


@router.get("/{task_id}", summary="One task: per-node state, results and reasons")
def get_task(
    task_id: int, user: CurrentUser, hub: RuntimeDep, session: SessionDep
) -> TaskDetailRead:
    federation.expire_overdue(session=session)
    task = federation.get_visible(session=session, user=user, task_id=task_id)
    return federation.detail(session=session, task=task, offline_after=offline_after(hub))


def offline_after(hub: Runtime) -> dt.timedelta:
    return dt.timedelta(seconds=hub.settings.node_offline_after_seconds)
