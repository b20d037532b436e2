"""The curator's pages: the quarantine queue, a study with a thumbnail of every series, a
viewer that scrolls through one series frame by frame, the node's de-identification report
beside the hub's PHI-scan findings, and accept or reject with a reason
(``hub.curation.service``; pixels drawn by ``hub.curation.preview``).

The viewer works without a script (a link per step); ``/ui/static/viewer.js`` adds a range
slider that swaps the frame in place. Frame URLs carry the upload's content digest, so a
browser may keep a frame while the study's files stay the same.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from hub.curation import preview
from hub.curation import service as curation
from hub.curation.models import ReceivedStudy, StudyState
from hub.db import transaction
from hub.exceptions import HubError
from hub.users.models import Role, User
from hub.web.base import page, problem, runtime, see_other, signed_in, storage

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/curation")

REVIEWERS = (Role.CURATOR, Role.ADMIN)
REASON_MAX = 500
THUMBNAIL = "thumb"


def _reviewer(user: User) -> str:
    return f"user:{user.name}"


@router.get("", response_class=HTMLResponse)
def queue_page(request: Request, state: str = StudyState.AWAITING_REVIEW.value) -> Response:
    shown = state if state in {s.value for s in StudyState} else StudyState.AWAITING_REVIEW.value
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *REVIEWERS)
        if isinstance(user, Response):
            return user
        studies = [
            curation.summary(session=session, study=study)
            for study in curation.queue(session=session, state=StudyState(shown))
        ]
    return page(
        request,
        "curation_queue.html",
        user,
        studies=studies,
        state=shown,
        states=[s.value for s in StudyState],
        done=request.query_params.get("done", ""),
        done_study=request.query_params.get("study", ""),
    )


@router.get("/{study_id}", response_class=HTMLResponse)
def study_page(request: Request, study_id: int) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *REVIEWERS)
        if isinstance(user, Response):
            return user
        try:
            detail = curation.show(session=session, study_id=study_id)
            study = curation.require(session=session, study_id=study_id)
        except HubError as exc:
            return problem(request, user, str(exc))
        series, unavailable = _series_or_reason(request, detail.project, study)
        version = study.content_sha256[:16]
        records = [
            {"path": r["path"], "format": r["format"], "size": r["size"]}
            for r in study.manifest.get("records", [])
        ]
    return page(
        request,
        "curation_study.html",
        user,
        study=detail,
        series=series,
        records=records,
        unavailable=unavailable,
        version=version,
        report=report_rows(detail.report),
        actions=sorted(detail.report.get("actions", {}).items()),
        reviewable=detail.state is StudyState.AWAITING_REVIEW,
        reason_max=REASON_MAX,
        error=request.query_params.get("error", ""),
    )


def _series_or_reason(
    request: Request, project: str, study: ReceivedStudy
) -> tuple[list[preview.SeriesView], str]:
    try:
        return preview.layout(storage=storage(request), project=project, study=study), ""
    except HubError as exc:
        return [], str(exc)


@router.get("/{study_id}/series/{number}", response_class=HTMLResponse)
def viewer_page(request: Request, study_id: int, number: int, frame: int = 0) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *REVIEWERS)
        if isinstance(user, Response):
            return user
        try:
            study = curation.require(session=session, study_id=study_id)
            project = curation.summary(session=session, study=study).project
            view = preview.series(
                storage=storage(request), project=project, study=study, number=number
            )
            count = len(preview.layout(storage=storage(request), project=project, study=study))
        except HubError as exc:
            return problem(request, user, str(exc))
        version = study.content_sha256[:16]
    total = len(view.frames)
    current = min(max(frame or view.middle, 1), max(total, 1))
    return page(
        request,
        "curation_viewer.html",
        user,
        study_id=study_id,
        series=view,
        series_count=count,
        frame=current,
        total=total,
        version=version,
    )


@router.get("/{study_id}/series/{number}/frames/{frame}.png")
def frame_image(
    request: Request, study_id: int, number: int, frame: int, size: str = ""
) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *REVIEWERS)
        if isinstance(user, Response):  # an image answers with the status, not a page
            return Response(status_code=403 if user.status_code == 403 else 401)
        try:
            study = curation.require(session=session, study_id=study_id)
            project = curation.summary(session=session, study=study).project
            data = preview.frame_png(
                storage=storage(request),
                project=project,
                study=study,
                number=number,
                frame=frame,
                max_size=preview.THUMBNAIL_SIZE if size == THUMBNAIL else preview.VIEWER_SIZE,
            )
        except HubError:
            return Response(status_code=404)
    # The URL carries the upload's digest (?v=): the same URL is the same picture.
    headers = {"Cache-Control": "private, max-age=3600"}
    return Response(content=data, media_type="image/png", headers=headers)


# -- decisions ---------------------------------------------------------------------------------


@router.post("/{study_id}/accept")
def accept(request: Request, study_id: int) -> Response:
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *REVIEWERS)
        if isinstance(user, Response):
            return user
        try:
            curation.accept(
                session=session,
                storage=storage(request),
                reviewer=_reviewer(user),
                study_id=study_id,
            )
        except HubError as exc:
            session.rollback()
            return problem(request, user, str(exc), 409)
    return see_other(f"/ui/curation?done=accepted&study={study_id}")


@router.post("/{study_id}/reject")
def reject(request: Request, study_id: int, reason: Annotated[str, Form()] = "") -> Response:
    reason = " ".join(reason.split())
    if not reason or len(reason) > REASON_MAX:
        return see_other(f"/ui/curation/{study_id}?error=reason")
    hub = runtime(request)
    with transaction(hub.sessions) as session:
        user = signed_in(request, session, *REVIEWERS)
        if isinstance(user, Response):
            return user
        try:
            curation.reject(
                session=session,
                storage=storage(request),
                reviewer=_reviewer(user),
                study_id=study_id,
                reason=reason,
                ttl_seconds=hub.settings.default_task_ttl_seconds,
            )
        except HubError as exc:
            session.rollback()
            return problem(request, user, str(exc), 409)
    hub.signal.notify()  # after the commit: the node's poll finds the rejection
    return see_other(f"/ui/curation?done=rejected&study={study_id}")


def report_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's scalar entries (profile, files, leak check, pixels) as label/value."""
    rows = []
    for key in ("profile", "files", "leak_check"):
        if key in report:
            rows.append((key.replace("_", " "), str(report[key])))
    pixels = report.get("pixels", {})
    if isinstance(pixels, dict) and pixels:
        rows.append(("pixels", ", ".join(f"{name} {n}" for name, n in sorted(pixels.items()))))
    return rows
