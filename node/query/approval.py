"""Local approval of federated queries (node policy ``query_auto_answer`` off).

A ``cohort.count`` task arriving at such a node is *held* (:func:`hold`): recorded here, and
the hub told that the answer waits for approval — the task stays pending there, within its
time-to-live. Hospital IT lists what waits (:func:`pending`, read with :func:`read`: the
cohort in words, the project, the researcher and the answer the node would give), then
:func:`approve` — the query is answered under the full disclosure control of the moment
(policy, budget, differencing guard), so an approval may still end in a refusal — or
:func:`decline` with a reason. Either decision is audited and stored as the channel's
``TaskResult``; :mod:`node.query.delivery` posts it to the hub.

Plain functions taking a keyword-only ``session``; none commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common import audit
from common.crypto import SiteSecret
from common.schemas.channel import ResultStatus, TaskRead, TaskResult
from common.schemas.cohort import CohortCountRequest, canonical_hash, describe_request
from node.query import service
from node.query.concepts import Expander
from node.query.disclosure import Policy
from node.query.exceptions import ApprovalClosed, ApprovalNotFound, InvalidReason, QueryRefused
from node.query.models import ApprovalState, QueryApproval
from node.query.schemas import QueryApprovalRead
from node.store.db import lock_for_writing
from node.store.models import AuditRecord, utcnow

logger = logging.getLogger(__name__)

# What the hub shows the researcher while the query waits.
AWAITING_REASON = "awaiting approval by the hospital"
MAX_REASON = 400  # the channel takes 500 characters, with a prefix


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _audit(
    session: Session, approval: QueryApproval, actor: str, action: str, **details: Any
) -> None:
    audit.append(
        session,
        AuditRecord,
        actor=actor,
        action=action,
        subject=f"task {approval.task_id}",
        details={"project": approval.project, "question": approval.question_hash, **details},
    )


def hold(request: CohortCountRequest, task: TaskRead, *, session: Session) -> QueryApproval:
    """Record the query for hospital IT (a task delivered again is the same query)."""
    found = get(session=session, task_id=task.id)
    if found is not None:
        return found
    approval = QueryApproval(
        task_id=task.id,
        project=request.project,
        requested_by=task.requested_by,
        request=request.model_dump(mode="json", by_alias=True),
        question_hash=canonical_hash(request),
        expires_at=task.expires,
    )
    session.add(approval)
    session.flush()
    _audit(session, approval, f"hub:{task.requested_by or 'unknown'}", "query.held")
    logger.info("task %d (project %s) waits for local approval", task.id, request.project)
    return approval


def get(*, session: Session, task_id: int) -> QueryApproval | None:
    return session.execute(
        select(QueryApproval).where(QueryApproval.task_id == task_id)
    ).scalar_one_or_none()


def require(*, session: Session, task_id: int) -> QueryApproval:
    found = get(session=session, task_id=task_id)
    if found is None:
        raise ApprovalNotFound(task_id)
    return found


def expire(*, session: Session, now: dt.datetime | None = None) -> int:
    """Mark the queries whose time-to-live ran out undecided; how many."""
    now = now or utcnow()
    waiting = session.execute(
        select(QueryApproval).where(QueryApproval.state == ApprovalState.AWAITING)
    ).scalars()
    expired = [a for a in waiting if _aware(a.expires_at) <= now]
    for approval in expired:
        approval.state = ApprovalState.EXPIRED
        _audit(session, approval, "node", "query.expired")
    return len(expired)


def pending(*, session: Session, now: dt.datetime | None = None) -> list[QueryApproval]:
    """The queries awaiting a decision, oldest first (expired ones are marked so first)."""
    expire(session=session, now=now)
    return list(
        session.execute(
            select(QueryApproval)
            .where(QueryApproval.state == ApprovalState.AWAITING)
            .order_by(QueryApproval.id)
        ).scalars()
    )


def listing(
    *, session: Session, now: dt.datetime | None = None, limit: int = 100
) -> list[QueryApproval]:
    """Every held query, decided or not, newest first."""
    expire(session=session, now=now)
    return list(
        session.execute(
            select(QueryApproval).order_by(QueryApproval.id.desc()).limit(limit)
        ).scalars()
    )


def read(
    approval: QueryApproval,
    *,
    session: Session,
    policy: Policy,
    secret: SiteSecret,
    expander: Expander | None = None,
) -> QueryApprovalRead:
    """The query for hospital IT; one still awaiting carries the answer the node would give
    now (evaluated on the spot: about as long as answering it)."""
    request = CohortCountRequest.model_validate(approval.request)
    answer: dict[str, Any] | None = None
    refusal = approval.reason
    if ApprovalState(approval.state) is ApprovalState.AWAITING:
        found = service.preview(
            request, session=session, policy=policy, secret=secret, expander=expander
        )
        answer = found.answer.model_dump(mode="json") if found.answer is not None else None
        refusal = found.refusal
    elif approval.result is not None:
        sent = TaskResult.model_validate(approval.result)
        answer = sent.payload if sent.status is ResultStatus.ANSWERED else None
    return QueryApprovalRead(
        task_id=approval.task_id,
        project=approval.project,
        requested_by=approval.requested_by,
        received_at=_aware(approval.received_at),
        expires_at=_aware(approval.expires_at),
        state=ApprovalState(approval.state),
        question_hash=approval.question_hash,
        cohort=describe_request(request),
        request=approval.request,
        answer=answer,
        refusal=refusal,
        decided_by=approval.decided_by,
        decided_at=_aware(approval.decided_at) if approval.decided_at else None,
        sent_at=_aware(approval.sent_at) if approval.sent_at else None,
        hub_reply=approval.hub_reply,
    )


def _awaiting(session: Session, task_id: int, now: dt.datetime) -> QueryApproval:
    approval = require(session=session, task_id=task_id)
    state = ApprovalState(approval.state)
    if state is not ApprovalState.AWAITING:
        raise ApprovalClosed(task_id, state.value)
    if _aware(approval.expires_at) <= now:
        raise ApprovalClosed(task_id, "past its time-to-live")
    return approval


def _decide(
    approval: QueryApproval,
    state: ApprovalState,
    result: TaskResult,
    *,
    actor: str,
    now: dt.datetime,
    reason: str = "",
) -> None:
    approval.state = state
    approval.result = result.model_dump(mode="json")
    approval.reason = reason
    approval.decided_by = actor
    approval.decided_at = now


def approve(
    task_id: int,
    *,
    session: Session,
    policy: Policy,
    secret: SiteSecret,
    actor: str,
    expander: Expander | None = None,
    now: dt.datetime | None = None,
) -> QueryApproval:
    """Answer the query under the disclosure control of now; a refusal by that control
    (budget spent, differencing) is the decision sent instead."""
    now = now or utcnow()
    lock_for_writing(session)  # one decision at a time: the state read is the state changed
    approval = _awaiting(session, task_id, now)
    request = CohortCountRequest.model_validate(approval.request)
    requester = f"hub:{approval.requested_by or 'unknown'}"
    try:
        answered = service.answer(
            request,
            session=session,
            policy=policy,
            secret=secret,
            actor=requester,
            expander=expander,
        )
    except QueryRefused as refused:
        service.refuse(
            session,
            actor=requester,
            project=approval.project,
            question_hash=approval.question_hash,
            reason=refused.reason,
        )
        result = TaskResult(status=ResultStatus.REFUSED, reason=refused.reason)
        _decide(
            approval, ApprovalState.REFUSED, result, actor=actor, now=now, reason=refused.reason
        )
        _audit(session, approval, actor, "query.approved", refused=refused.reason)
        return approval
    payload = answered.model_dump(mode="json")
    result = TaskResult(status=ResultStatus.ANSWERED, payload=payload)
    _decide(approval, ApprovalState.APPROVED, result, actor=actor, now=now)
    _audit(session, approval, actor, "query.approved", answer=payload)
    return approval


def decline(
    task_id: int, *, session: Session, reason: str, actor: str, now: dt.datetime | None = None
) -> QueryApproval:
    """Refuse the query; ``reason`` goes to the hub and the researcher (no patient data)."""
    now = now or utcnow()
    reason = " ".join(reason.split())
    if not reason or len(reason) > MAX_REASON:
        raise InvalidReason(MAX_REASON)
    approval = _awaiting(session, task_id, now)
    result = TaskResult(status=ResultStatus.REFUSED, reason=f"declined by the hospital: {reason}")
    _decide(approval, ApprovalState.DECLINED, result, actor=actor, now=now, reason=reason)
    _audit(session, approval, actor, "query.declined", reason=reason)
    return approval


# -- what goes back to the hub ------------------------------------------------------------------


def due(*, session: Session) -> list[QueryApproval]:
    """Decisions the hub has not taken yet, oldest first."""
    return list(
        session.execute(
            select(QueryApproval)
            .where(QueryApproval.result.is_not(None), QueryApproval.sent_at.is_(None))
            .order_by(QueryApproval.id)
        ).scalars()
    )


def mark_sent(
    *, session: Session, task_id: int, hub_reply: str, now: dt.datetime | None = None
) -> None:
    approval = require(session=session, task_id=task_id)
    if approval.sent_at is None:
        approval.sent_at = now or utcnow()
        approval.hub_reply = hub_reply[:500]
