"""Federated tasks: creation (checked against the kind, the role and the project), delivery
to the nodes that poll for them, results, and expiry after the time-to-live.

A node may defer a task (it waits for local approval): the task stays pending there, is not
handed to the node again, and takes the node's answer when it comes, within the TTL. Users
see each node's :class:`TargetStatus`: a pending task at a node not seen for
``node_offline_after_seconds`` shows ``offline`` at once, so nobody waits for it in vain.

Plain functions taking a keyword-only ``session``; none of them commits. Every task created
and every result received is written to the hub's audit log in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from common.schemas.channel import ResultStatus, TaskRead, TaskResult
from hub import audit
from hub.db import aware, utcnow
from hub.federation import kinds
from hub.federation.exceptions import (
    InvalidPayload,
    NoTargets,
    TargetNotEnrolled,
    TaskClosed,
    TaskNotFound,
    UnknownKind,
)
from hub.federation.models import OFFLINE_AFTER, TargetState, TargetStatus, Task, TaskTarget
from hub.federation.schemas import TargetRead, TaskCreate, TaskDetailRead, TaskSummaryRead
from hub.nodes import service as nodes
from hub.nodes.models import Node, NodeState
from hub.users import service as users
from hub.users.models import Project, Role, User

logger = logging.getLogger(__name__)

MAX_TASKS_PER_POLL = 50


def create(
    *,
    session: Session,
    user: User,
    request: TaskCreate,
    default_ttl_seconds: int,
    now: dt.datetime | None = None,
) -> Task:
    """A task for the named nodes (every enrolled node when none are named)."""
    now = now or utcnow()
    kind = kinds.get(request.kind)
    if kind is None:
        raise UnknownKind(request.kind)
    users.require_role(user, *sorted(kind.roles, key=lambda role: role.value))
    project = _project_for(session, user, request.project)
    payload = _validated(kind.payload, request.payload, "payload")
    targets = _targets(session, request.nodes)
    ttl = request.ttl_seconds or default_ttl_seconds
    task = Task(
        kind=kind.name,
        payload=payload,
        project_id=project.id if project is not None else None,
        created_by=user.name,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ttl),
    )
    task.targets = [TaskTarget(node_pk=node.id, state=TargetState.PENDING) for node in targets]
    session.add(task)
    session.flush()
    audit.record(
        session=session,
        actor=f"user:{user.name}",
        action="task.create",
        subject=f"task {task.id}",
        kind=kind.name,
        project=project.name if project is not None else None,
        nodes=sorted(node.name for node in targets),
        ttl_seconds=ttl,
    )
    return task


def _project_for(session: Session, user: User, name: str | None) -> Project | None:
    if name is None:
        if Role(user.role) != Role.ADMIN:
            raise InvalidPayload("project: a researcher's task belongs to one of their projects")
        return None
    project = users.require_project(session=session, name=name)
    if Role(user.role) != Role.ADMIN:
        users.require_member(session=session, project=project, user=user)
    return project


def _validated(model: type[BaseModel], value: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        # By alias: a field named after a keyword (`not`) travels under its own name.
        return model.model_validate(value).model_dump(mode="json", by_alias=True)
    except ValidationError as exc:
        # Locations and messages only: the values may be anything.
        problems = "; ".join(
            f"{'.'.join([where, *(str(part) for part in error['loc'])])}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise InvalidPayload(problems) from None


def _targets(session: Session, names: list[str] | None) -> list[Node]:
    if names is None:
        found = [n for n in nodes.get_all(session=session) if n.state == NodeState.ENROLLED]
        if not found:
            raise NoTargets()
        return found
    chosen: list[Node] = []
    for name in dict.fromkeys(names):
        node = nodes.require(session=session, name=name)
        if node.state != NodeState.ENROLLED:
            raise TargetNotEnrolled(name)
        chosen.append(node)
    if not chosen:
        raise NoTargets()
    return chosen


def expire_overdue(*, session: Session, now: dt.datetime | None = None) -> int:
    """Mark pending targets of tasks past their time-to-live as expired (audited per task)."""
    now = now or utcnow()
    overdue = session.execute(
        select(TaskTarget)
        .join(Task, TaskTarget.task_id == Task.id)
        .where(TaskTarget.state == TargetState.PENDING, Task.expires_at <= now)
        .options(selectinload(TaskTarget.node))
    ).scalars()
    by_task: dict[int, list[str]] = {}
    for target in overdue:
        target.state = TargetState.EXPIRED
        target.finished_at = now
        by_task.setdefault(target.task_id, []).append(target.node.name)
    for task_id, names in sorted(by_task.items()):
        audit.record(
            session=session,
            actor="hub",
            action="task.expire",
            subject=f"task {task_id}",
            nodes=sorted(names),
        )
    return sum(len(names) for names in by_task.values())


def pending_for(*, session: Session, node: Node, now: dt.datetime | None = None) -> list[TaskRead]:
    """The node's pending, unexpired tasks, oldest first (each delivery is counted)."""
    now = now or utcnow()
    targets = session.execute(
        select(TaskTarget)
        .join(Task, TaskTarget.task_id == Task.id)
        .where(
            TaskTarget.node_pk == node.id,
            TaskTarget.state == TargetState.PENDING,
            TaskTarget.deferred_at.is_(None),
            Task.expires_at > now,
        )
        .order_by(Task.id)
        .limit(MAX_TASKS_PER_POLL)
        .options(selectinload(TaskTarget.task))
    ).scalars()
    found = []
    project_names: dict[int, str] = {}
    for target in targets:
        target.delivered += 1
        task = target.task
        found.append(
            TaskRead(
                id=task.id,
                kind=task.kind,
                payload=task.payload,
                issued=aware(task.created_at),
                expires=aware(task.expires_at),
                project=_project_name(session, task.project_id, project_names),
                requested_by=task.created_by,
            )
        )
    return found


def _project_name(session: Session, project_id: int | None, cache: dict[int, str]) -> str | None:
    if project_id is None:
        return None
    if project_id not in cache:
        project = session.get(Project, project_id)
        cache[project_id] = project.name if project is not None else ""
    return cache[project_id] or None


def record_result(
    *,
    session: Session,
    node: Node,
    task_id: int,
    result: TaskResult,
    now: dt.datetime | None = None,
) -> TaskTarget:
    """Take a node's result for a task still pending there.

    An answer that does not fit the kind's answer model is not stored: the target becomes
    ``failed`` with a reason naming the fields. A deferral leaves the task pending.
    """
    now = now or utcnow()
    target = session.execute(
        select(TaskTarget)
        .where(TaskTarget.task_id == task_id, TaskTarget.node_pk == node.id)
        .options(selectinload(TaskTarget.task))
    ).scalar_one_or_none()
    if target is None:
        raise TaskNotFound(task_id)
    if target.state == TargetState.PENDING and aware(target.task.expires_at) <= now:
        expire_overdue(session=session, now=now)
    if target.state != TargetState.PENDING:
        raise TaskClosed(task_id, TargetState(target.state).value)
    if result.status == ResultStatus.DEFERRED:
        return _defer(session, node, target, result, now)
    state, payload, reason = _outcome(target.task, result)
    target.state = state
    target.result = payload
    target.reason = reason
    target.finished_at = now
    audit.record(
        session=session,
        actor=f"node:{node.name}",
        action="task.answer",
        subject=f"task {task_id}",
        kind=target.task.kind,
        status=result.status.value,
        state=state.value,
    )
    return target


def _defer(
    session: Session, node: Node, target: TaskTarget, result: TaskResult, now: dt.datetime
) -> TaskTarget:
    if target.deferred_at is None:
        target.deferred_at = now
    target.reason = result.reason or "the node answers later"
    audit.record(
        session=session,
        actor=f"node:{node.name}",
        action="task.defer",
        subject=f"task {target.task_id}",
        kind=target.task.kind,
        reason=target.reason,
    )
    return target


def _outcome(task: Task, result: TaskResult) -> tuple[TargetState, dict[str, Any] | None, str]:
    if result.status == ResultStatus.REFUSED:
        return TargetState.REFUSED, None, result.reason or "refused by the node"
    if result.status == ResultStatus.FAILED:
        return TargetState.FAILED, None, result.reason or "failed at the node"
    kind = kinds.get(task.kind)
    if kind is None:  # the kind was withdrawn after the task was created
        return TargetState.FAILED, None, f"the hub no longer knows kind {task.kind!r}"
    try:
        return TargetState.ANSWERED, _validated(kind.answer, result.payload, "answer"), ""
    except InvalidPayload as exc:
        return TargetState.FAILED, None, f"the answer does not fit {task.kind}: {exc}"


# -- reads for users --------------------------------------------------------------------------


def visible(*, session: Session, user: User, limit: int = 100) -> list[Task]:
    """Tasks the user may see, newest first: all for an admin, else their projects' tasks."""
    query = select(Task).order_by(Task.id.desc()).limit(limit)
    if Role(user.role) != Role.ADMIN:
        query = query.where(Task.project_id.in_(users.project_ids_of(session=session, user=user)))
    return list(session.execute(query.options(selectinload(Task.targets))).scalars())


def latest(*, session: Session, limit: int = 100) -> list[Task]:
    """The newest tasks, for the hub admin's command line."""
    query = select(Task).order_by(Task.id.desc()).limit(limit)
    return list(session.execute(query.options(selectinload(Task.targets))).scalars())


def get_visible(*, session: Session, user: User, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise TaskNotFound(task_id)
    if Role(user.role) != Role.ADMIN and task.project_id not in users.project_ids_of(
        session=session, user=user
    ):
        raise TaskNotFound(task_id)  # not told apart from a missing one
    return task


def is_offline(node: Node, now: dt.datetime, offline_after: dt.timedelta) -> bool:
    """Not seen (no signed request) for longer than ``offline_after``."""
    seen = node.last_seen_at or node.enrolled_at
    return seen is None or now - aware(seen) > offline_after


def status(
    target: TaskTarget,
    *,
    now: dt.datetime | None = None,
    offline_after: dt.timedelta = OFFLINE_AFTER,
) -> TargetStatus:
    """Where the task stands at the target's node, as users see it."""
    state = TargetState(target.state)
    if state is not TargetState.PENDING:
        return TargetStatus(state.value)
    if is_offline(target.node, now or utcnow(), offline_after):
        return TargetStatus.OFFLINE
    if target.deferred_at is not None:
        return TargetStatus.DEFERRED
    return TargetStatus.PENDING


def statuses(
    task: Task, *, now: dt.datetime | None = None, offline_after: dt.timedelta = OFFLINE_AFTER
) -> dict[str, TargetStatus]:
    """Each target node's name and status."""
    now = now or utcnow()
    return {
        target.node.name: status(target, now=now, offline_after=offline_after)
        for target in task.targets
    }


def summary(
    *,
    session: Session,
    task: Task,
    now: dt.datetime | None = None,
    offline_after: dt.timedelta = OFFLINE_AFTER,
) -> TaskSummaryRead:
    return TaskSummaryRead(**_summary_fields(session, task, now or utcnow(), offline_after))


def detail(
    *,
    session: Session,
    task: Task,
    now: dt.datetime | None = None,
    offline_after: dt.timedelta = OFFLINE_AFTER,
) -> TaskDetailRead:
    now = now or utcnow()
    kind = kinds.get(task.kind)
    present = kind.present if kind is not None else None
    targets = [
        TargetRead(
            node=target.node.name,
            state=status(target, now=now, offline_after=offline_after),
            result=present(target.result)
            if present is not None and target.result is not None
            else target.result,
            reason=target.reason,
            finished_at=aware(target.finished_at) if target.finished_at else None,
        )
        for target in task.targets
    ]
    return TaskDetailRead(
        **_summary_fields(session, task, now, offline_after), payload=task.payload, targets=targets
    )


def _summary_fields(
    session: Session, task: Task, now: dt.datetime, offline_after: dt.timedelta
) -> dict[str, Any]:
    project = session.get(Project, task.project_id) if task.project_id is not None else None
    states = Counter(
        status(target, now=now, offline_after=offline_after).value for target in task.targets
    )
    return {
        "id": task.id,
        "kind": task.kind,
        "project": project.name if project is not None else None,
        "created_by": task.created_by,
        "created_at": aware(task.created_at),
        "expires_at": aware(task.expires_at),
        "states": dict(sorted(states.items())),
    }
