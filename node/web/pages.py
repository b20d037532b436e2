"""The node's pages (``/ui``) for hospital IT: what arrived, what was rejected and why, the
jobs, the QA preview of the de-identification, the hub's data requests to approve or
decline (:mod:`node.web.requests`), and the federated queries that wait for approval
(:mod:`node.web.queries`). Log-in with the node's API token; the browser then holds
a signed session cookie, never the token.

These pages show pseudonyms (subject keys, stage-1 UIDs), as the node's API does; the
correspondence table is never reachable from them.
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.web import session as web_session
from common.web.charts import Bar, bar_chart
from node import qa
from node.exceptions import NodeError
from node.jobs import service as jobs
from node.store.db import transaction
from node.store.models import Instance, RejectedInstance, Series
from node.web import queries as query_pages
from node.web import requests as request_pages
from node.web.base import HERE, NODE_USER, logged_in, page, runtime, session_key, to_login

__all__ = ["HERE", "router"]

router = APIRouter(prefix="/ui", include_in_schema=False)

DAYS_SHOWN = 14


@router.get("/login")
def login_form(request: Request, next: str = "/ui/") -> HTMLResponse:
    return page(request, "login.html", next=_safe_next(next), error="", logged_in=False)


@router.post("/login")
def login(
    request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/ui/"
) -> Response:
    node = runtime(request)
    if not hmac.compare_digest(token.strip().encode(), node.api_token):
        response = page(
            request,
            "login.html",
            next=_safe_next(next),
            error="That is not this node's token.",
            logged_in=False,
        )
        response.status_code = 401
        return response
    redirect = RedirectResponse(_safe_next(next), status_code=303)
    redirect.set_cookie(
        web_session.COOKIE,
        web_session.issue(session_key(node), NODE_USER),
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
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


# -- arrivals ----------------------------------------------------------------------------------


def _arrivals(session: Session, since: dt.datetime) -> tuple[list[Bar], list[Bar]]:
    day = func.date(Instance.received_at)
    per_day = session.execute(
        select(day, func.count(Instance.id))
        .where(Instance.received_at >= since)
        .group_by(day)
        .order_by(day)
    ).all()
    per_modality = session.execute(
        select(Series.modality, func.count(Instance.id))
        .join(Series, Instance.series_id == Series.id)
        .where(Instance.received_at >= since)
        .group_by(Series.modality)
        .order_by(func.count(Instance.id).desc())
    ).all()
    return (
        [Bar(str(d), int(n)) for d, n in per_day],
        [Bar(m or "unknown", int(n)) for m, n in per_modality],
    )


def _rejections(session: Session, since: dt.datetime) -> list[dict[str, Any]]:
    rows = session.execute(
        select(RejectedInstance.code, RejectedInstance.reason, func.count(RejectedInstance.id))
        .where(RejectedInstance.received_at >= since)
        .group_by(RejectedInstance.code, RejectedInstance.reason)
        .order_by(func.count(RejectedInstance.id).desc())
        .limit(50)
    ).all()
    return [{"code": code, "reason": reason, "count": int(n)} for code, reason, n in rows]


@router.get("/", response_class=HTMLResponse)
def arrivals_page(request: Request) -> Response:
    if not logged_in(request):
        return to_login(request)
    node = runtime(request)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=DAYS_SHOWN)
    with transaction(node.sessions) as session:
        per_day, per_modality = _arrivals(session, since)
        rejections = _rejections(session, since)
    return page(
        request,
        "arrivals.html",
        logged_in=True,
        days=DAYS_SHOWN,
        per_day=bar_chart(per_day, title="Instances stored per day"),
        per_modality=bar_chart(per_modality, title="Instances stored per modality"),
        stored=sum(bar.value for bar in per_day),
        rejections=rejections,
        ingest=node.ingest.counts(),
    )


# -- jobs ---------------------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request) -> Response:
    if not logged_in(request):
        return to_login(request)
    node = runtime(request)
    with transaction(node.sessions) as session:
        rows = [
            {
                "id": job.id,
                "kind": job.kind,
                "status": job.status,
                "done": job.done_items,
                "total": job.total,
                "found": job.found,
                "stored": job.stored,
                "rejected": job.rejected,
                "error": job.error,
            }
            for job in jobs.get_all(session=session, limit=100)
        ]
    return page(request, "jobs.html", logged_in=True, jobs=rows)


# -- QA preview ---------------------------------------------------------------------------------


@router.get("/qa", response_class=HTMLResponse)
def qa_list_page(request: Request) -> Response:
    if not logged_in(request):
        return to_login(request)
    node = runtime(request)
    with transaction(node.sessions) as session:
        rows = session.execute(
            select(Instance.sop_uid, Series.modality, Series.description, Instance.received_at)
            .join(Series, Instance.series_id == Series.id)
            .order_by(Instance.id.desc())
            .limit(50)
        ).all()
    recent = [
        {"sop_uid": sop, "modality": modality, "description": text, "received": str(at)[:19]}
        for sop, modality, text, at in rows
    ]
    return page(request, "qa_list.html", logged_in=True, instances=recent)


@router.get("/qa/{sop_uid}", response_class=HTMLResponse)
def qa_page(request: Request, sop_uid: str) -> Response:
    if not logged_in(request):
        return to_login(request)
    node = runtime(request)
    with transaction(node.sessions) as session:
        try:
            found = qa.preview(session=session, data_dir=node.settings.data_dir, sop_uid=sop_uid)
        except NodeError as exc:
            response = page(request, "problem.html", logged_in=True, problem=str(exc))
            response.status_code = 404
            return response
    return page(request, "qa.html", logged_in=True, preview=found)


@router.get("/qa/{sop_uid}/image.png")
def qa_image(request: Request, sop_uid: str) -> Response:
    if not logged_in(request):
        return Response(status_code=401)
    node = runtime(request)
    with transaction(node.sessions) as session:
        try:
            png = qa.render_png(session=session, data_dir=node.settings.data_dir, sop_uid=sop_uid)
        except NodeError:
            return Response(status_code=404)
    return Response(content=png, media_type="image/png", headers={"Cache-Control": "no-store"})


router.include_router(request_pages.router)
router.include_router(query_pages.router)
