"""Data-access requests: a researcher asks a project's nodes for a selection; each node's
hospital IT decides, then reports the release's progress.

A request becomes one ``release.request`` task to the chosen nodes (``hub.federation``);
the node answers it at once ("requested") and reports its decision and progress later over
the signed channel (:func:`record_state`), because a person decides, not the agent.
Plain functions taking a keyword-only ``session``; none commits; every step is audited.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.schemas.release import (
    RELEASE_REQUEST,
    ReleaseRequestPayload,
    ReleaseState,
    StateReport,
)
from hub import audit
from hub.db import aware, utcnow
from hub.federation import service as federation
from hub.federation.schemas import TaskCreate
from hub.nodes.models import Node
from hub.release.exceptions import NotATarget, RequestNotFound, StateNotAllowed
from hub.release.models import DataRequest, RequestTarget
from hub.release.schemas import RequestCreate, RequestRead, RequestTargetRead
from hub.users import service as users
from hub.users.models import Project, Role, User

logger = logging.getLogger(__name__)

_NEXT: dict[ReleaseState, frozenset[ReleaseState]] = {
    ReleaseState.REQUESTED: frozenset({ReleaseState.APPROVED, ReleaseState.DECLINED}),
    ReleaseState.APPROVED: frozenset(
        {ReleaseState.RELEASING, ReleaseState.RELEASED, ReleaseState.FAILED}
    ),
    ReleaseState.RELEASING: frozenset({ReleaseState.RELEASED, ReleaseState.FAILED}),
    ReleaseState.FAILED: frozenset({ReleaseState.RELEASING, ReleaseState.RELEASED}),
    ReleaseState.RELEASED: frozenset({ReleaseState.RELEASING}),
    ReleaseState.DECLINED: frozenset(),
}


def create(
    *, session: Session, user: User, request: RequestCreate, default_ttl_seconds: int
) -> DataRequest:
    """A request, and the ``release.request`` task that carries it to the nodes."""
    users.require_role(user, Role.RESEARCHER, Role.ADMIN)
    project = users.require_project(session=session, name=request.project)
    if Role(user.role) != Role.ADMIN:
        users.require_member(session=session, project=project, user=user)
    data_request = DataRequest(
        project_id=project.id,
        created_by=user.name,
        profile=request.profile,
        selection=request.selection.model_dump(mode="json", by_alias=True),
    )
    session.add(data_request)
    session.flush()
    payload = ReleaseRequestPayload(
        request_id=data_request.id, profile=request.profile, selection=request.selection
    )
    task = federation.create(
        session=session,
        user=user,
        request=TaskCreate(
            kind=RELEASE_REQUEST,
            payload=payload.model_dump(mode="json", by_alias=True),
            project=project.name,
            nodes=request.nodes,
            ttl_seconds=request.ttl_seconds,
        ),
        default_ttl_seconds=default_ttl_seconds,
    )
    data_request.task_id = task.id
    data_request.targets = [RequestTarget(node_pk=target.node_pk) for target in task.targets]
    session.flush()
    audit.record(
        session=session,
        actor=f"user:{user.name}",
        action="release.request",
        subject=f"data request {data_request.id}",
        project=project.name,
        profile=request.profile,
        task=task.id,
        cohort=request.selection.cohort is not None,
        studies=len(request.selection.study_uids),
        subjects=len(request.selection.subject_keys),
    )
    return data_request


def require_target(*, session: Session, node: Node, request_id: int) -> RequestTarget:
    target = session.execute(
        select(RequestTarget).where(
            RequestTarget.request_id == request_id, RequestTarget.node_pk == node.id
        )
    ).scalar_one_or_none()
    if target is None:
        raise NotATarget(request_id)
    return target


def record_state(
    *,
    session: Session,
    node: Node,
    request_id: int,
    report: StateReport,
    now: dt.datetime | None = None,
) -> RequestTarget:
    """A node's decision or progress; a report repeated (a retried send) changes nothing."""
    target = require_target(session=session, node=node, request_id=request_id)
    current = ReleaseState(target.state)
    if report.state != current and report.state not in _NEXT[current]:
        raise StateNotAllowed(request_id, current.value, report.state.value)
    if report.state == current and (target.studies, target.held) == (report.studies, report.held):
        return target
    target.state = report.state
    target.reason = report.reason
    target.studies = report.studies
    target.held = report.held
    target.updated_at = now or utcnow()
    audit.record(
        session=session,
        actor=f"node:{node.name}",
        action=f"release.{report.state.value}",
        subject=f"data request {request_id}",
        reason=report.reason,
        studies=report.studies,
        held=report.held,
    )
    return target


def get_visible(*, session: Session, user: User, request_id: int) -> DataRequest:
    data_request = session.get(DataRequest, request_id)
    if data_request is None:
        raise RequestNotFound(request_id)
    if Role(user.role) == Role.RESEARCHER and data_request.project_id not in users.project_ids_of(
        session=session, user=user
    ):
        raise RequestNotFound(request_id)  # not told apart from a missing one
    return data_request


def visible(*, session: Session, user: User, limit: int = 100) -> list[DataRequest]:
    query = select(DataRequest).order_by(DataRequest.id.desc()).limit(limit)
    if Role(user.role) == Role.RESEARCHER:
        query = query.where(
            DataRequest.project_id.in_(users.project_ids_of(session=session, user=user))
        )
    return list(session.execute(query).scalars())


def project_of(*, session: Session, data_request: DataRequest) -> Project:
    project = session.get(Project, data_request.project_id)
    assert project is not None  # the foreign key cascades
    return project


def read(*, session: Session, data_request: DataRequest) -> RequestRead:
    return RequestRead(
        id=data_request.id,
        project=project_of(session=session, data_request=data_request).name,
        created_by=data_request.created_by,
        profile=data_request.profile,
        task_id=data_request.task_id,
        created_at=aware(data_request.created_at),
        targets=[
            RequestTargetRead(
                node=target.node.name,
                state=ReleaseState(target.state),
                reason=target.reason,
                studies=target.studies,
                held=target.held,
                updated_at=aware(target.updated_at),
            )
            for target in data_request.targets
        ],
    )
