"""Hospital IT's page of the hub's data requests: those waiting for a decision, each with an
approve button and a decline form (a reason is required: the researcher reads it), the
requests decided already with the files stage 2 held back and why, and the studies a curator
at the hub rejected.

Approval runs :func:`node.release.workflow.approve_and_release` — the decision is committed
first, then stage 2 — in a worker thread, as the API's approve does; the page answers when
stage 2 is done and the studies are queued for upload.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from common.errors import HavenetError
from common.schemas.release import ReleaseState
from node.release import service as releases
from node.release import workflow
from node.release.models import ReleaseRequest
from node.store.db import transaction
from node.web.base import actor, logged_in, page, runtime, see_other, to_login

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/requests")

REASON_MAX = 500
DONE = {
    "approved": "approved: stage 2 ran and the studies are queued for upload to the hub",
    "declined": "declined; the hub will show your reason",
}


@router.get("", response_class=HTMLResponse)
def requests_page(request: Request) -> Response:
    if not logged_in(request):
        return to_login(request)
    done = request.query_params.get("done", "")
    number = request.query_params.get("request", "")
    notice = f"Data request {number} {DONE[done]}." if done in DONE and number.isdigit() else ""
    error = "Give a reason for declining." if request.query_params.get("error") == "reason" else ""
    return _requests_page(request, notice=notice, error=error)


def _requests_page(
    request: Request, *, notice: str = "", error: str = "", status_code: int = 200
) -> HTMLResponse:
    node = runtime(request)
    with transaction(node.sessions) as session:
        found = releases.listing(session=session)
        pending = [
            _row(r, _selects(session, r))
            for r in found
            if ReleaseState(r.state) is ReleaseState.REQUESTED
        ]
        decided = [_row(r) for r in reversed(found) if r.state != ReleaseState.REQUESTED]
        rejected = [releases.read_rejection(r) for r in releases.rejections(session=session)]
    return page(
        request,
        "requests.html",
        logged_in=True,
        pending=pending,
        decided=decided,
        rejections=rejected,
        notice=notice,
        error=error,
        reason_max=REASON_MAX,
        status_code=status_code,
    )


def _selects(session: Session, found: ReleaseRequest) -> str:
    """What approving would release from this node today, in counts."""
    try:
        counted = releases.selects(session=session, request=found)
    except HavenetError as exc:
        return f"cannot be counted now ({exc})"
    return (
        f"{_plural(counted.patients, 'patient')}, {_plural(counted.studies, 'study', 'studies')}, "
        f"{_plural(counted.instances, 'instance')} ({counted.megabytes:g} MB); clinical records "
        f"of {_plural(counted.patients_with_records, 'patient')}"
    )


def _plural(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def _row(found: ReleaseRequest, selects: str = "") -> dict[str, Any]:
    read = releases.read(found)
    return {
        "selects": selects,
        "id": read.id,
        "project": read.project,
        "profile": read.profile,
        "by": read.requested_by,
        "at": read.created_at.strftime("%Y-%m-%d %H:%M"),
        "state": read.state.value,
        "reason": read.reason,
        "decided_by": read.decided_by,
        "studies": read.studies,
        "held": read.held,
        "selection": selection_summary(read.selection),
        "selection_json": json.dumps(read.selection, indent=1, sort_keys=True),
    }


def selection_summary(selection: dict[str, Any]) -> str:
    """What the request asks for, in a line (the full selection is one click away)."""
    parts = []
    cohort = selection.get("cohort")
    if isinstance(cohort, dict):
        name = str(cohort.get("name", "") or "")
        parts.append(f"the patients of the cohort {name!r}" if name else "the patients of a cohort")
    for key, one, many in (
        ("study_uids", "study", "studies"),
        ("subject_keys", "patient", "patients"),
    ):
        if selection.get(key):
            parts.append(_plural(len(selection[key]), one, many))
    return ", ".join(parts) or "nothing"


@router.post("/{request_id}/approve")
async def approve(request: Request, request_id: int) -> Response:
    if not logged_in(request):
        return to_login(request)
    node = runtime(request)
    run = partial(
        workflow.approve_and_release, node.sessions, node.settings, request_id, actor(request)
    )
    try:
        await anyio.to_thread.run_sync(run)
    except HavenetError as exc:
        return _requests_page(request, error=f"Data request {request_id}: {exc}.", status_code=409)
    except Exception as exc:  # stage 2 failed; the workflow recorded it as failed
        logger.error("approving data request %d failed (%s)", request_id, type(exc).__name__)
        return _requests_page(
            request,
            error=f"Data request {request_id}: stage 2 failed ({type(exc).__name__}).",
            status_code=500,
        )
    return see_other(f"/ui/requests?done=approved&request={request_id}")


@router.post("/{request_id}/decline")
def decline(request: Request, request_id: int, reason: Annotated[str, Form()] = "") -> Response:
    if not logged_in(request):
        return to_login(request)
    reason = " ".join(reason.split())
    if not reason or len(reason) > REASON_MAX:
        return see_other("/ui/requests?error=reason")
    node = runtime(request)
    try:
        with transaction(node.sessions) as session:
            releases.decline(
                session=session, hub_request_id=request_id, reason=reason, actor=actor(request)
            )
    except HavenetError as exc:
        return _requests_page(request, error=f"Data request {request_id}: {exc}.", status_code=409)
    return see_other(f"/ui/requests?done=declined&request={request_id}")
