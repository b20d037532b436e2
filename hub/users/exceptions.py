"""Why the hub refuses a user, or cannot find a user or project."""

from __future__ import annotations

from hub.exceptions import Conflict, Forbidden, NotAuthenticated, NotFound


class TokenRejected(NotAuthenticated):
    def __init__(self) -> None:
        super().__init__("a valid user token is required (Authorization: Bearer TOKEN)")


class RoleRequired(Forbidden):
    def __init__(self, roles: str) -> None:
        super().__init__(f"this needs the role {roles}")


class NotAMember(Forbidden):
    def __init__(self, project: str) -> None:
        super().__init__(f"you are not a member of project {project!r}")


class UserNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no user named {name!r}")


class ProjectNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no project named {name!r}")


class NameTaken(Conflict):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"a {kind} named {name!r} exists already")
