"""Hospital IT's page of the federated queries that wait for local approval (node policy
``query_auto_answer`` off): each with the cohort in words, who asked for which project, until
when an answer is taken, and exactly what would leave the node if approved — the
disclosure-controlled answer, or why the node's control would refuse it now. Approve, or
decline with a reason the researcher reads; below, the queries decided already.

The decisions are those of the node API (:mod:`node.query.api`): the same functions, the
same audit records; the decision is posted to the hub at once, or by the agent later.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from common.errors import HavenetError
from common.schemas.cohort import CohortCountAnswer
from node.query import approval as approvals
from node.query import delivery
from node.query.disclosure import Policy
from node.query.models import ApprovalState
from node.query.schemas import QueryApprovalRead
from node.store.db import transaction
from node.web.base import actor, logged_in, page, runtime, see_other, to_login

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/queries")

DONE = {
    "approved": "decided: the answer below is what the hub receives",
    "declined": "declined; the hub will show your reason",
}


@router.get("", response_class=HTMLResponse)
def queries_page(request: Request) -> Response:
    if not logged_in(request):
        return to_login(request)
    done = request.query_params.get("done", "")
    number = request.query_params.get("task", "")
    notice = f"Query {number} {DONE[done]}." if done in DONE and number.isdigit() else ""
    error = "Give a reason for declining." if request.query_params.get("error") == "reason" else ""
    return _queries_page(request, notice=notice, error=error)


def _queries_page(
    request: Request, *, notice: str = "", error: str = "", status_code: int = 200
) -> HTMLResponse:
    node = runtime(request)
    policy = Policy.from_settings(node.settings)
    secret = node.settings.secret()
    with transaction(node.sessions) as session:
        found = [
            approvals.read(a, session=session, policy=policy, secret=secret)
            for a in approvals.listing(session=session)
        ]
    pending = [_row(q) for q in reversed(found) if q.state is ApprovalState.AWAITING]
    decided = [_row(q) for q in found if q.state is not ApprovalState.AWAITING]
    return page(
        request,
        "queries.html",
        logged_in=True,
        auto_answer=policy.auto_answer,
        pending=pending,
        decided=decided,
        notice=notice,
        error=error,
        reason_max=approvals.MAX_REASON,
        status_code=status_code,
    )


def _row(read: QueryApprovalRead) -> dict[str, Any]:
    return {
        "id": read.task_id,
        "project": read.project,
        "by": read.requested_by,
        "at": read.received_at.strftime("%Y-%m-%d %H:%M"),
        "expires": read.expires_at.strftime("%Y-%m-%d %H:%M"),
        "state": read.state.value,
        "cohort": read.cohort,
        "answer": answer_lines(read.answer),
        "refusal": read.refusal,
        "decided_by": read.decided_by,
        "sent": read.sent_at.strftime("%Y-%m-%d %H:%M") if read.sent_at else "",
        "hub_reply": read.hub_reply,
    }


def answer_lines(payload: dict[str, Any] | None) -> list[str]:
    """The answer as it would leave the node, in lines a person reads (no figure is shown
    that the answer does not carry: suppressed cells read "<10" or "withheld")."""
    if payload is None:
        return []
    answer = CohortCountAnswer.model_validate(payload)
    floor = answer.min_cell
    lines = [
        f"patients {answer.patients.display(floor)}, studies {answer.studies.display(floor)}, "
        f"series {answer.series.display(floor)} (rounded to {answer.rounding}"
        f"{', with noise' if answer.noisy else ''})"
    ]
    for name, cells in sorted(answer.breakdowns.items()):
        shown = ", ".join(f"{c.value or 'unknown'}: {c.patients.display(floor)}" for c in cells)
        lines.append(f"by {name.replace('_', ' ')}: {shown}")
    if answer.statistic is not None:
        groups = ", ".join(
            f"{g.group}: {'withheld' if g.n is None else f'n={g.n}'}"
            for g in answer.statistic.groups
        )
        lines.append(
            f"statistic of {answer.statistic.measurement} by {answer.statistic.by} "
            f"(count, sum, sum of squares and a histogram per group): {groups}"
        )
    return lines


@router.post("/{task_id}/approve")
async def approve(request: Request, task_id: int) -> Response:
    if not logged_in(request):
        return to_login(request)
    node = runtime(request)

    def decide() -> None:
        with transaction(node.sessions) as session:
            approvals.approve(
                task_id,
                session=session,
                policy=Policy.from_settings(node.settings),
                secret=node.settings.secret(),
                actor=actor(request),
            )

    try:
        await anyio.to_thread.run_sync(decide)
    except HavenetError as exc:
        return _queries_page(request, error=f"Query {task_id}: {exc}.", status_code=409)
    await anyio.to_thread.run_sync(delivery.try_sending, node.settings, node.sessions)
    return see_other(f"/ui/queries?done=approved&task={task_id}")


@router.post("/{task_id}/decline")
async def decline(request: Request, task_id: int, reason: Annotated[str, Form()] = "") -> Response:
    if not logged_in(request):
        return to_login(request)
    reason = " ".join(reason.split())
    if not reason or len(reason) > approvals.MAX_REASON:
        return see_other("/ui/queries?error=reason")
    node = runtime(request)

    def decide() -> None:
        with transaction(node.sessions) as session:
            approvals.decline(task_id, session=session, reason=reason, actor=actor(request))

    try:
        await anyio.to_thread.run_sync(decide)
    except HavenetError as exc:
        return _queries_page(request, error=f"Query {task_id}: {exc}.", status_code=409)
    await anyio.to_thread.run_sync(delivery.try_sending, node.settings, node.sessions)
    return see_other(f"/ui/queries?done=declined&task={task_id}")
