"""The hub's pages (``/ui``), rendered on the server; the only scripts are small ones the hub
serves itself (a typeahead, a frame slider). Every page needs a log-in, and most a role:

* researchers — the catalogue (here), cohort queries, data requests and exports
  (:mod:`hub.web.research`);
* curators — the quarantine queue, a study's series and its frames, accept or reject
  (:mod:`hub.web.curator`);
* admins — nodes and enrollment tokens, users and projects, the audit log
  (:mod:`hub.web.admin`).

Pages show node, project and user names, counts, and the project keys and project UIDs of
released studies — the hub holds nothing else (DESIGN.md, decision 6), so no hospital
identifier can reach a page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from common.web import session as web_session
from common.web.charts import Bar, bar_chart
from hub import audit
from hub.catalogue import service as catalogue
from hub.catalogue.ontology import concept_expander, typeahead
from hub.catalogue.schemas import CatalogueQuery
from hub.db import transaction
from hub.exceptions import NotAuthenticated
from hub.users import service as users
from hub.users.models import Role
from hub.web import admin, curator, research
from hub.web.base import HERE, HOME, current_user, page, runtime, to_login

__all__ = ["HERE", "router"]

router = APIRouter(prefix="/ui", include_in_schema=False)

LIST_FILTERS = ("modality", "body_part", "sequence_type", "manufacturer")


# -- log-in ----------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: str = "") -> HTMLResponse:
    return page(request, "login.html", None, next=_safe_next(next), error="")


@router.post("/login")
def login(
    request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = ""
) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        try:
            user = users.authenticate(session=session, secret=hub.secret, token=token.strip())
        except NotAuthenticated:
            return page(
                request,
                "login.html",
                None,
                next=_safe_next(next),
                error="That token is not valid.",
                status_code=401,
            )
        audit.record(session=session, actor=f"user:{user.name}", action="web.login")
        cookie = web_session.issue(hub.secret, user.id)
        home = HOME[Role(user.role)]
    redirect = RedirectResponse(_safe_next(next, home), status_code=303)
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


def _safe_next(target: str, home: str = "/ui/") -> str:
    """Only a page of this hub: never an open redirect. A role's home when none was asked."""
    if target.startswith("/ui/") and not target.startswith("//") and target != "/ui/":
        return target
    return home


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
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = current_user(request, session)
        if user is None:
            return to_login(request)
        query = _query_from(request)
        result = catalogue.search(query, session=session, expand=concept_expander(session))
    chart = bar_chart(
        [Bar(node.node, node.series) for node in result.nodes],
        title="Series per node",
    )
    return page(request, "catalogue.html", user, query=query, result=result, chart=chart)


@router.get("/concepts")
def concepts(request: Request, q: str = "") -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        if current_user(request, session) is None:
            return JSONResponse({"detail": "log in first"}, status_code=401)
        hits = typeahead(session, q, 10) if len(q.strip()) >= 2 else []
    return JSONResponse([hit.model_dump() for hit in hits])


router.include_router(research.router)
router.include_router(curator.router)
router.include_router(admin.router)
