"""Data requests in the node's API (under the node's token): list, read, approve, decline,
and retry a failed release."""

from __future__ import annotations

from functools import partial

import anyio.to_thread
from fastapi import APIRouter, Request

from node.api import RuntimeDep, SessionDep, _actor
from node.release import service as releases
from node.release import workflow
from node.release.schemas import Decline, RejectionRead, ReleaseRequestRead
from node.store.db import transaction

router = APIRouter(prefix="/api/v1/requests", tags=["data requests"])


@router.get("", summary="The hub's data requests, oldest first")
def list_requests(session: SessionDep) -> list[ReleaseRequestRead]:
    return [releases.read(r) for r in releases.listing(session=session)]


@router.get("/rejections", summary="Studies a curator rejected, and why")
def list_rejections(session: SessionDep) -> list[RejectionRead]:
    return [releases.read_rejection(r) for r in releases.rejections(session=session)]


@router.get(
    "/{request_id}",
    summary="One request: what it selects here (counts), the files held back and why",
)
def get_request(request_id: int, session: SessionDep) -> ReleaseRequestRead:
    found = releases.require(session=session, hub_request_id=request_id)
    return releases.read(found, releases.selects(session=session, request=found))


@router.post("/{request_id}/approve", summary="Approve: stage 2 now, then upload")
async def approve(request_id: int, request: Request, node: RuntimeDep) -> ReleaseRequestRead:
    run = partial(
        workflow.approve_and_release, node.sessions, node.settings, request_id, _actor(request)
    )
    await anyio.to_thread.run_sync(run)
    with transaction(node.sessions) as session:
        return releases.read(releases.require(session=session, hub_request_id=request_id))


@router.post(
    "/{request_id}/retry",
    summary="Retry a failed release: stage 2 again, then upload what the hub lacks",
)
async def retry(request_id: int, request: Request, node: RuntimeDep) -> ReleaseRequestRead:
    run = partial(
        workflow.retry_and_release, node.sessions, node.settings, request_id, _actor(request)
    )
    await anyio.to_thread.run_sync(run)
    with transaction(node.sessions) as session:
        return releases.read(releases.require(session=session, hub_request_id=request_id))


@router.post("/{request_id}/decline", summary="Decline, with a reason the hub will see")
def decline(
    request_id: int, body: Decline, request: Request, session: SessionDep
) -> ReleaseRequestRead:
    found = releases.decline(
        session=session, hub_request_id=request_id, reason=body.reason, actor=_actor(request)
    )
    return releases.read(found)
