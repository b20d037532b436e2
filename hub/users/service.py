"""Users (tokens stored as keyed hashes, one role each), projects and membership.

Plain functions taking a keyword-only ``session``; none of them commits.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import audit, tokens
from hub.users.exceptions import (
    NameTaken,
    NotAMember,
    ProjectNotFound,
    RoleRequired,
    TokenRejected,
    UserNotFound,
)
from hub.users.models import Membership, Project, Role, User

logger = logging.getLogger(__name__)


def create(
    *, session: Session, secret: bytes, name: str, role: Role, actor: str
) -> tuple[User, str]:
    """A user and their API token (returned once, stored hashed)."""
    if get_by_name(session=session, name=name) is not None:
        raise NameTaken("user", name)
    token = tokens.new_token(tokens.USER_PREFIX)
    user = User(name=name, role=role, token_hash=tokens.token_hash(secret, token))
    session.add(user)
    session.flush()
    audit.record(session=session, actor=actor, action="user.add", subject=name, role=role.value)
    return user, token


def get_by_name(*, session: Session, name: str) -> User | None:
    return session.execute(select(User).where(User.name == name)).scalar_one_or_none()


def authenticate(*, session: Session, secret: bytes, token: str) -> User:
    if not token:
        raise TokenRejected()
    user = session.execute(
        select(User).where(User.token_hash == tokens.token_hash(secret, token))
    ).scalar_one_or_none()
    if user is None:
        raise TokenRejected()
    return user


def require_role(user: User, *roles: Role) -> None:
    if Role(user.role) not in roles:
        raise RoleRequired(" or ".join(role.value for role in roles))


def create_project(*, session: Session, name: str, actor: str) -> Project:
    if get_project(session=session, name=name) is not None:
        raise NameTaken("project", name)
    project = Project(name=name)
    session.add(project)
    session.flush()
    audit.record(session=session, actor=actor, action="project.add", subject=name)
    return project


def get_project(*, session: Session, name: str) -> Project | None:
    return session.execute(select(Project).where(Project.name == name)).scalar_one_or_none()


def require_project(*, session: Session, name: str) -> Project:
    project = get_project(session=session, name=name)
    if project is None:
        raise ProjectNotFound(name)
    return project


def add_member(*, session: Session, project: str, user: str, actor: str) -> Membership:
    found_project = require_project(session=session, name=project)
    found_user = get_by_name(session=session, name=user)
    if found_user is None:
        raise UserNotFound(user)
    if is_member(session=session, project=found_project, user=found_user):
        raise NameTaken("member", user)
    membership = Membership(project_id=found_project.id, user_id=found_user.id)
    session.add(membership)
    session.flush()
    audit.record(
        session=session, actor=actor, action="project.member_add", subject=project, user=user
    )
    return membership


def is_member(*, session: Session, project: Project, user: User) -> bool:
    found = session.execute(
        select(Membership.id).where(
            Membership.project_id == project.id, Membership.user_id == user.id
        )
    ).first()
    return found is not None


def require_member(*, session: Session, project: Project, user: User) -> None:
    if not is_member(session=session, project=project, user=user):
        raise NotAMember(project.name)


def project_ids_of(*, session: Session, user: User) -> list[int]:
    return list(
        session.execute(select(Membership.project_id).where(Membership.user_id == user.id))
        .scalars()
        .all()
    )
