"""What every hub page shares: the templates, the signed-in user and the role a page needs.

A page route asks :func:`signed_in` for its user; it gets either the user or the response to
send instead (the log-in page, or "not for your role"), so each route reads as one check
followed by its work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from common import __version__
from common.web import session as web_session
from hub.deps import Runtime
from hub.storage.service import LocalStorage, Storage
from hub.users.models import Role, User

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# Where each role lands after logging in, unless a page was asked for.
HOME = {Role.RESEARCHER: "/ui/", Role.CURATOR: "/ui/curation", Role.ADMIN: "/ui/admin/nodes"}


def runtime(request: Request) -> Runtime:
    hub: Runtime = request.app.state.hub
    return hub


def storage(request: Request) -> Storage:
    return LocalStorage(runtime(request).settings.storage_root)


def current_user(request: Request, session: Session) -> User | None:
    user_id = web_session.verify(
        runtime(request).secret, request.cookies.get(web_session.COOKIE, "")
    )
    return session.get(User, user_id) if user_id is not None else None


def to_login(request: Request) -> RedirectResponse:
    target = quote(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/ui/login?next={target}", status_code=303)


def page(
    request: Request, name: str, user: User | None, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, name, {"user": user, "version": __version__, **context}
    )
    response.status_code = status_code
    return response


def forbidden(request: Request, user: User, needed: str) -> HTMLResponse:
    return page(request, "forbidden.html", user, needed=needed, status_code=403)


def problem(request: Request, user: User, message: str, status_code: int = 404) -> HTMLResponse:
    """A page that says what went wrong (a domain error's message: names and numbers only)."""
    return page(request, "problem.html", user, problem=message, status_code=status_code)


def signed_in(request: Request, session: Session, *roles: Role) -> User | Response:
    """The user of this request when they hold one of ``roles`` (any role if none given);
    otherwise the response to send instead."""
    user = current_user(request, session)
    if user is None:
        return to_login(request)
    if roles and Role(user.role) not in roles:
        return forbidden(request, user, " or ".join(role.value for role in roles))
    return user


def see_other(target: str) -> RedirectResponse:
    """After a form is posted: the browser loads ``target``, so a reload posts nothing again."""
    return RedirectResponse(target, status_code=303)


def no_store(response: Response) -> Response:
    """For a page that shows a secret once (a new token): never kept by the browser."""
    response.headers["Cache-Control"] = "no-store"
    return response
