"""Users and projects over HTTP, for admins; ``/api/v1/me`` for anyone with a token."""

from __future__ import annotations

from fastapi import APIRouter, status

from hub.deps import AdminUser, CurrentUser, RuntimeDep, SessionDep
from hub.users import service as users
from hub.users.schemas import MemberCreate, ProjectCreate, UserCreate, UserCreated, UserRead

router = APIRouter(prefix="/api/v1", tags=["users"])


@router.get("/me", summary="The user the token belongs to")
def whoami(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)


@router.post("/users", status_code=status.HTTP_201_CREATED, summary="Create a user")
def create_user(
    body: UserCreate, admin: AdminUser, hub: RuntimeDep, session: SessionDep
) -> UserCreated:
    user, token = users.create(
        session=session,
        secret=hub.secret,
        name=body.name,
        role=body.role,
        actor=f"user:{admin.name}",
    )
    return UserCreated(user=UserRead.model_validate(user), token=token)


@router.post("/projects", status_code=status.HTTP_201_CREATED, summary="Create a project")
def create_project(body: ProjectCreate, admin: AdminUser, session: SessionDep) -> ProjectCreate:
    project = users.create_project(session=session, name=body.name, actor=f"user:{admin.name}")
    return ProjectCreate(name=project.name)


@router.post(
    "/projects/{project}/members",
    status_code=status.HTTP_201_CREATED,
    summary="Add a user to a project",
)
def add_member(
    project: str, body: MemberCreate, admin: AdminUser, session: SessionDep
) -> MemberCreate:
    users.add_member(session=session, project=project, user=body.user, actor=f"user:{admin.name}")
    return body
