"""The ``cohort.count`` task handler (registered in :mod:`node.federation.handlers`).

Runs in the agent's worker thread: validates the payload, answers under the node's policy
and returns the answer, or refuses with a PHI-free reason. An answer and its audit record
commit together; a refusal is audited too, then reported to the hub.

A node that answers only after local approval (``query_auto_answer`` off) holds a query its
policy allows (:func:`node.query.approval.hold`) and tells the hub it is deferred; hospital
IT's decision follows over the channel (:mod:`node.query.delivery`).
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from pydantic import ValidationError

from common.schemas.channel import TaskRead
from common.schemas.cohort import CohortCountRequest, canonical_hash
from node.federation.exceptions import TaskDeferred, TaskRefused
from node.federation.handlers import HandlerContext
from node.query import approval as approvals
from node.query import disclosure, service
from node.query.disclosure import Policy
from node.query.exceptions import QueryRefused
from node.store.db import transaction

logger = logging.getLogger(__name__)


def _request(task: TaskRead) -> CohortCountRequest:
    try:
        request = CohortCountRequest.model_validate(task.payload)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '$'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)[:5]
        )
        raise TaskRefused(f"invalid cohort.count payload: {where}"[:500]) from None
    if task.project is not None and task.project != request.project:
        raise TaskRefused("the payload names another project than the task")
    return request


def handle_cohort_count(task: TaskRead, context: HandlerContext) -> dict[str, Any]:
    request = _request(task)
    policy = Policy.from_settings(context.settings)
    if not policy.auto_answer:
        _hold(task, request, context, policy)
    secret = context.settings.secret()
    actor = f"hub:{task.requested_by or 'unknown'}"
    refusal = ""
    with transaction(context.sessions) as session:
        try:
            answer = service.answer(
                request, session=session, policy=policy, secret=secret, actor=actor
            )
        except QueryRefused as refused:
            refusal = refused.reason
            service.refuse(
                session,
                actor=actor,
                project=request.project,
                question_hash=canonical_hash(request),
                reason=refusal,
            )
    if refusal:
        raise TaskRefused(refusal)
    return answer.model_dump(mode="json")


def _hold(
    task: TaskRead, request: CohortCountRequest, context: HandlerContext, policy: Policy
) -> NoReturn:
    """Hold the query for hospital IT, or refuse at once what no approval could make the
    node answer (a breakdown it does not allow, a spent budget). Always raises."""
    actor = f"hub:{task.requested_by or 'unknown'}"
    refusal = ""
    with transaction(context.sessions) as session:
        try:
            disclosure.check_request(request, policy)
            disclosure.check_budget(request.project, policy, session=session)
        except QueryRefused as refused:
            refusal = refused.reason
            service.refuse(
                session,
                actor=actor,
                project=request.project,
                question_hash=canonical_hash(request),
                reason=refusal,
            )
        else:
            approvals.hold(request, task, session=session)
    if refusal:
        raise TaskRefused(refusal)
    raise TaskDeferred(approvals.AWAITING_REASON)
