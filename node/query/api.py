"""Queries waiting for local approval, in the node's API (under the node's token): list,
read, approve, decline. A decision is posted to the hub at once; when the hub cannot be
reached the running node sends it later (``sent_at`` stays empty until then)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, Request

from node.api import Runtime, RuntimeDep, SessionDep, _actor
from node.query import approval as approvals
from node.query import delivery
from node.query.disclosure import Policy
from node.query.schemas import Decline, QueryApprovalRead
from node.store.db import transaction

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/queries", tags=["queries"])


def _read(node: Runtime, task_id: int) -> QueryApprovalRead:
    with transaction(node.sessions) as session:
        return approvals.read(
            approvals.require(session=session, task_id=task_id),
            session=session,
            policy=Policy.from_settings(node.settings),
            secret=node.settings.secret(),
        )


@router.get("", summary="Queries awaiting approval, oldest first, with the answer they'd get")
def list_queries(
    node: RuntimeDep,
    session: SessionDep,
    decided: Annotated[
        bool, Query(description="Also the decided and expired ones, newest first.")
    ] = False,
) -> list[QueryApprovalRead]:
    """Each awaiting query is evaluated to show the answer the node would give (as long as
    answering it takes)."""
    found = approvals.listing(session=session) if decided else approvals.pending(session=session)
    policy = Policy.from_settings(node.settings)
    secret = node.settings.secret()
    return [approvals.read(a, session=session, policy=policy, secret=secret) for a in found]


@router.get("/{task_id}", summary="One query, by the hub's task number")
def get_query(task_id: int, node: RuntimeDep) -> QueryApprovalRead:
    return _read(node, task_id)


@router.post("/{task_id}/approve", summary="Approve: answer under disclosure control, send")
async def approve(task_id: int, request: Request, node: RuntimeDep) -> QueryApprovalRead:
    """The budget and the differencing guard apply now: they may still refuse the query,
    and that refusal is what the hub receives."""

    def decide() -> None:
        with transaction(node.sessions) as session:
            approvals.approve(
                task_id,
                session=session,
                policy=Policy.from_settings(node.settings),
                secret=node.settings.secret(),
                actor=_actor(request),
            )

    await anyio.to_thread.run_sync(decide)
    await anyio.to_thread.run_sync(delivery.try_sending, node.settings, node.sessions)
    return await anyio.to_thread.run_sync(partial(_read, node, task_id))


@router.post("/{task_id}/decline", summary="Decline, with a reason the researcher will see")
async def decline(
    task_id: int, body: Decline, request: Request, node: RuntimeDep
) -> QueryApprovalRead:
    def decide() -> None:
        with transaction(node.sessions) as session:
            approvals.decline(task_id, session=session, reason=body.reason, actor=_actor(request))

    await anyio.to_thread.run_sync(decide)
    await anyio.to_thread.run_sync(delivery.try_sending, node.settings, node.sessions)
    return await anyio.to_thread.run_sync(partial(_read, node, task_id))
