"""The hub admin's pages: nodes with their enrollment tokens (a new node's token is shown once,
on the page that created it), users and projects with their members, and the audit log with
a search box.

A token is a secret: it is rendered into the one response that created it (not cached, not
in a URL), and the hub keeps only its keyed hash.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from hub.audit import AuditRecord
from hub.db import aware, transaction, utcnow
from hub.exceptions import HubError
from hub.nodes import service as nodes
from hub.nodes.models import EnrollmentToken, Node, NodeState
from hub.nodes.schemas import NodeCreate
from hub.users import service as users
from hub.users.models import Membership, Project, Role, User
from hub.users.schemas import ProjectCreate, UserCreate
from hub.web.base import no_store, page, runtime, see_other, signed_in

router = APIRouter(prefix="/admin")

AUDIT_SHOWN = 100
AUDIT_MAX = 1000


def _actor(user: User) -> str:
    return f"user:{user.name}"


def _name_problem(model: type[BaseModel], **fields: Any) -> str:
    """What is wrong with a name typed into a form, or ''."""
    try:
        model.model_validate(fields)
    except ValidationError as exc:
        if any(error["loc"] == ("role",) for error in exc.errors()):
            return "choose a role"
        return "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return ""


# -- nodes and enrollment tokens --------------------------------------------------------------


@router.get("/nodes", response_class=HTMLResponse)
def nodes_page(request: Request) -> Response:
    return _nodes_page(request)


@router.post("/nodes", response_class=HTMLResponse)
def create_node(request: Request, name: Annotated[str, Form()]) -> Response:
    """A node entry and its one-time enrollment token, shown on this response only."""
    hub = runtime(request)
    name = name.strip()
    created: dict[str, str] | None = None
    error = _name_problem(NodeCreate, name=name)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, Role.ADMIN)
        if isinstance(user, Response):
            return user
        if not error:
            try:
                node, token, expires = nodes.create(
                    session=session,
                    secret=hub.secret,
                    name=name,
                    token_hours=hub.settings.enrollment_token_hours,
                    actor=_actor(user),
                )
                created = {"name": node.name, "token": token, "expires": _when(expires)}
            except HubError as exc:
                session.rollback()  # nothing of a refused action is kept
                error = str(exc)
    if created is None:
        return _nodes_page(request, error=f"Node name: {error}.", status_code=422)
    return no_store(_nodes_page(request, created=created, status_code=201))


@router.post("/nodes/{name}/revoke")
def revoke_node(request: Request, name: str) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, Role.ADMIN)
        if isinstance(user, Response):
            return user
        try:
            nodes.revoke(session=session, name=name, actor=_actor(user))
        except HubError as exc:
            session.rollback()  # nothing of a refused action is kept
            error = str(exc)
        else:
            return see_other("/ui/admin/nodes")
    return _nodes_page(request, error=f"{error}.", status_code=404)


def _nodes_page(
    request: Request,
    *,
    created: dict[str, str] | None = None,
    error: str = "",
    status_code: int = 200,
) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, Role.ADMIN)
        if isinstance(user, Response):
            return user
        now = utcnow()
        found = session.execute(
            select(Node).order_by(Node.name).options(selectinload(Node.tokens))
        ).scalars()
        rows = [_node_row(node, now) for node in found]
    return page(
        request,
        "nodes.html",
        user,
        nodes=rows,
        created=created,
        error=error,
        status_code=status_code,
    )


def _node_row(node: Node, now: dt.datetime) -> dict[str, Any]:
    return {
        "name": node.name,
        "state": node.state,
        "revocable": NodeState(node.state) is not NodeState.REVOKED,
        "last_seen": _ago(now, node.last_seen_at),
        "key_age": _ago(now, node.key_rotated_at or node.enrolled_at),
        "version": node.software_version or "",
        "tokens": [_token_row(token, now) for token in sorted(node.tokens, key=_issued)],
    }


def _issued(token: EnrollmentToken) -> dt.datetime:
    return aware(token.created_at)


def _token_row(token: EnrollmentToken, now: dt.datetime) -> dict[str, str]:
    if token.used_at is not None:
        state = f"used {_when(token.used_at)}"
    elif aware(token.expires_at) <= now:
        state = f"expired {_when(token.expires_at)}"
    else:
        state = f"unused, expires {_when(token.expires_at)}"
    return {"issued": _when(token.created_at), "state": state}


def _when(value: dt.datetime) -> str:
    return aware(value).strftime("%Y-%m-%d %H:%M UTC")


def _ago(now: dt.datetime, then: dt.datetime | None) -> str:
    if then is None:
        return "never"
    seconds = int((now - aware(then)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


# -- users, projects and members ---------------------------------------------------------------


@router.get("/projects", response_class=HTMLResponse)
def projects_page(request: Request) -> Response:
    return _projects_page(request)


@router.post("/users", response_class=HTMLResponse)
def create_user(
    request: Request, name: Annotated[str, Form()], role: Annotated[str, Form()]
) -> Response:
    """A user and their token, shown on this response only."""
    hub = runtime(request)
    name = name.strip()
    created: dict[str, str] | None = None
    error = _name_problem(UserCreate, name=name, role=role)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, Role.ADMIN)
        if isinstance(user, Response):
            return user
        if not error:
            try:
                made, token = users.create(
                    session=session,
                    secret=hub.secret,
                    name=name,
                    role=Role(role),
                    actor=_actor(user),
                )
                created = {"name": made.name, "role": Role(made.role).value, "token": token}
            except HubError as exc:
                session.rollback()  # nothing of a refused action is kept
                error = str(exc)
    if created is None:
        return _projects_page(request, error=f"User: {error}.", status_code=422)
    return no_store(_projects_page(request, created_user=created, status_code=201))


@router.post("/projects")
def create_project(request: Request, name: Annotated[str, Form()]) -> Response:
    hub = runtime(request)
    name = name.strip()
    error = _name_problem(ProjectCreate, name=name)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, Role.ADMIN)
        if isinstance(user, Response):
            return user
        if not error:
            try:
                users.create_project(session=session, name=name, actor=_actor(user))
            except HubError as exc:
                session.rollback()  # nothing of a refused action is kept
                error = str(exc)
    if error:
        return _projects_page(request, error=f"Project: {error}.", status_code=422)
    return see_other("/ui/admin/projects")


@router.post("/projects/{project}/members")
def add_member(request: Request, project: str, member: Annotated[str, Form()]) -> Response:
    hub = runtime(request)
    error = ""
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, Role.ADMIN)
        if isinstance(user, Response):
            return user
        try:
            users.add_member(session=session, project=project, user=member, actor=_actor(user))
        except HubError as exc:
            session.rollback()  # nothing of a refused action is kept
            error = str(exc)
    if error:
        return _projects_page(request, error=f"Member: {error}.", status_code=422)
    return see_other("/ui/admin/projects")


def _projects_page(
    request: Request,
    *,
    created_user: dict[str, str] | None = None,
    error: str = "",
    status_code: int = 200,
) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, Role.ADMIN)
        if isinstance(user, Response):
            return user
        everyone = list(session.execute(select(User).order_by(User.name)).scalars())
        projects = _projects_with_members(session)
    return page(
        request,
        "projects.html",
        user,
        users=[{"name": u.name, "role": Role(u.role).value} for u in everyone],
        projects=projects,
        roles=[role.value for role in Role],
        created_user=created_user,
        error=error,
        status_code=status_code,
    )


def _projects_with_members(session: Session) -> list[dict[str, Any]]:
    members: dict[int, list[str]] = {}
    rows = session.execute(
        select(Membership.project_id, User.name)
        .join(User, Membership.user_id == User.id)
        .order_by(User.name)
    ).all()
    for project_id, name in rows:
        members.setdefault(project_id, []).append(name)
    return [
        {"name": project.name, "members": members.get(project.id, [])}
        for project in session.execute(select(Project).order_by(Project.name)).scalars()
    ]


# -- the audit log -------------------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, q: str = "", limit: int = AUDIT_SHOWN) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, Role.ADMIN)
        if isinstance(user, Response):
            return user
        statement = (
            select(AuditRecord).order_by(AuditRecord.id.desc()).limit(max(1, min(limit, AUDIT_MAX)))
        )
        if q.strip():
            like = f"%{q.strip()}%"
            statement = statement.where(
                or_(
                    AuditRecord.actor.like(like),
                    AuditRecord.action.like(like),
                    AuditRecord.subject.like(like),
                    AuditRecord.details.like(like),
                )
            )
        records = [
            {
                "at": aware(r.at).strftime("%Y-%m-%d %H:%M:%S"),
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
                "details": r.details if r.details != "{}" else "",
            }
            for r in session.execute(statement).scalars()
        ]
    return page(request, "audit.html", user, records=records, q=q)
