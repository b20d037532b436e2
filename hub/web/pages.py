"""The hub's pages (``/ui``): catalogue search for researchers, nodes and the audit log for
admins. Rendered on the server; the only script is a small typeahead served by the hub.

Pages show node names, counts and user names — the hub holds nothing else (DESIGN.md,
decision 6), so no identifier can reach a page.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from common import __version__
from common.web import session as web_session
from common.web.charts import Bar, bar_chart
from hub import audit
from hub.audit import AuditRecord
from hub.catalogue import service as catalogue
from hub.catalogue.ontology import concept_expander, typeahead
from hub.catalogue.schemas import CatalogueQuery
from hub.db import aware, transaction
from hub.deps import Runtime
from hub.exceptions import NotAuthenticated
from hub.nodes import service as nodes
from hub.users import service as users
from hub.users.models import Role, User

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)

LIST_FILTERS = ("modality", "body_part", "sequence_type", "manufacturer")


def _runtime(request: Request) -> Runtime:
    hub: Runtime = request.app.state.hub
    return hub


def _user(request: Request, session: Session) -> User | None:
    user_id = web_session.verify(
        _runtime(request).secret, request.cookies.get(web_session.COOKIE, "")
    )
    return session.get(User, user_id) if user_id is not None else None


def _to_login(request: Request) -> RedirectResponse:
    target = quote(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/ui/login?next={target}", status_code=303)


def _page(request: Request, name: str, user: User | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"user": user, "version": __version__, **context}
    )


def _forbidden(request: Request, user: User, needed: str) -> HTMLResponse:
    response = _page(request, "forbidden.html", user, needed=needed)
    response.status_code = 403
    return response


# -- log-in ----------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: str = "/ui/") -> HTMLResponse:
    return _page(request, "login.html", None, next=_safe_next(next), error="")


@router.post("/login")
def login(
    request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/ui/"
) -> Response:
    hub = _runtime(request)
    with transaction(hub.sessions) as session:
        try:
            user = users.authenticate(session=session, secret=hub.secret, token=token.strip())
        except NotAuthenticated:
            response = _page(
                request, "login.html", None, next=_safe_next(next), error="That token is not valid."
            )
            response.status_code = 401
            return response
        audit.record(session=session, actor=f"user:{user.name}", action="web.login")
        cookie = web_session.issue(hub.secret, user.id)
    redirect = RedirectResponse(_safe_next(next), status_code=303)
    redirect.set_cookie(
        web_session.COOKIE,
        cookie,
        max_age=web_session.LIFETIME_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
    )
    return redirect


@router.post("/logout")
def logout() -> RedirectResponse:
    redirect = RedirectResponse("/ui/login", status_code=303)
    redirect.delete_cookie(web_session.COOKIE, path="/ui")
    return redirect


def _safe_next(target: str) -> str:
    """Only a page of this hub: never an open redirect."""
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


# -- researcher: the catalogue ---------------------------------------------------------------


def _query_from(request: Request) -> CatalogueQuery:
    params = request.query_params

    def number(name: str) -> float | None:
        try:
            return float(params[name]) if params.get(name) else None
        except ValueError:
            return None

    contrast = params.get("contrast", "")
    year_from, year_to = number("year_from"), number("year_to")
    return CatalogueQuery(
        **{name: [v for v in params.getlist(name) if v] for name in LIST_FILTERS},
        contrast=True if contrast == "yes" else False if contrast == "no" else None,
        field_strength=[float(v) for v in params.getlist("field_strength") if _is_number(v)],
        slice_thickness_max=number("slice_thickness_max"),
        year_from=int(year_from) if year_from is not None else None,
        year_to=int(year_to) if year_to is not None else None,
        concepts=[v.strip() for v in params.getlist("concept") if v.strip()],
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@router.get("/", response_class=HTMLResponse)
def catalogue_page(request: Request) -> Response:
    hub = _runtime(request)
    with transaction(hub.sessions) as session:
        user = _user(request, session)
        if user is None:
            return _to_login(request)
        query = _query_from(request)
        result = catalogue.search(query, session=session, expand=concept_expander(session))
    chart = bar_chart(
        [Bar(node.node, node.series) for node in result.nodes],
        title="Series per node",
    )
    return _page(request, "catalogue.html", user, query=query, result=result, chart=chart)


@router.get("/concepts")
def concepts(request: Request, q: str = "") -> Response:
    hub = _runtime(request)
    with transaction(hub.sessions) as session:
        if _user(request, session) is None:
            return JSONResponse({"detail": "log in first"}, status_code=401)
        hits = typeahead(session, q, 10) if len(q.strip()) >= 2 else []
    return JSONResponse([hit.model_dump() for hit in hits])


# -- admin -------------------------------------------------------------------------------------


@router.get("/admin/nodes", response_class=HTMLResponse)
def nodes_page(request: Request) -> Response:
    hub = _runtime(request)
    with transaction(hub.sessions) as session:
        user = _user(request, session)
        if user is None:
            return _to_login(request)
        if Role(user.role) is not Role.ADMIN:
            return _forbidden(request, user, "admin")
        now = dt.datetime.now(dt.UTC)
        rows = [
            {
                "name": node.name,
                "state": node.state,
                "last_seen": _ago(now, node.last_seen_at),
                "key_age": _ago(now, node.key_rotated_at or node.enrolled_at),
                "version": node.software_version or "",
            }
            for node in nodes.get_all(session=session)
        ]
    return _page(request, "nodes.html", user, nodes=rows)


@router.get("/admin/audit", response_class=HTMLResponse)
def audit_page(request: Request, q: str = "", limit: int = 100) -> Response:
    hub = _runtime(request)
    with transaction(hub.sessions) as session:
        user = _user(request, session)
        if user is None:
            return _to_login(request)
        if Role(user.role) is not Role.ADMIN:
            return _forbidden(request, user, "admin")
        statement = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(min(limit, 1000))
        if q.strip():
            like = f"%{q.strip()}%"
            statement = statement.where(
                or_(
                    AuditRecord.actor.like(like),
                    AuditRecord.action.like(like),
                    AuditRecord.subject.like(like),
                )
            )
        records = [
            {
                "at": aware(r.at).strftime("%Y-%m-%d %H:%M:%S"),
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
            }
            for r in session.execute(statement).scalars()
        ]
    return _page(request, "audit.html", user, records=records, q=q)


def _ago(now: dt.datetime, then: dt.datetime | None) -> str:
    if then is None:
        return "never"
    seconds = int((now - aware(then)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"
