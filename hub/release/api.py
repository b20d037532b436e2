"""Data requests over HTTP: researchers file and read them (``/api/v1/requests``); nodes
report decisions and progress and upload studies over the signed channel
(``/api/v1/channel/releases``, ``/api/v1/channel/chunks``)."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, Request, status
from fastapi import Path as PathParam

from common.schemas.channel import API_PREFIX
from common.schemas.release import (
    MAX_BATCH_CHUNKS,
    SHA256_PATTERN,
    ChunkQuery,
    ChunksHeld,
    ManifestReceipt,
    SignedManifest,
    StateReport,
)
from hub.curation import quarantine
from hub.curation.models import StudyState
from hub.curation.ocr import OcrPolicy
from hub.deps import CurrentUser, RuntimeDep, SessionDep, SignedNode
from hub.nodes import service as nodes
from hub.release import service as releases
from hub.release.schemas import RequestCreate, RequestRead
from hub.storage.deps import StorageDep

channel = APIRouter(prefix=API_PREFIX, tags=["channel"])
router = APIRouter(prefix="/api/v1/requests", tags=["data requests"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Request data for a project")
def create_request(
    body: RequestCreate, user: CurrentUser, hub: RuntimeDep, session: SessionDep
) -> RequestRead:
    data_request = releases.create(
        session=session,
        user=user,
        request=body,
        default_ttl_seconds=hub.settings.default_task_ttl_seconds,
    )
    read = releases.read(session=session, data_request=data_request)
    session.commit()  # before the nodes' polls are woken, so they find the task
    hub.signal.notify()
    return read


@router.get("", summary="Data requests you may see, newest first")
def list_requests(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RequestRead]:
    found = releases.visible(session=session, user=user, limit=limit)
    return [releases.read(session=session, data_request=item) for item in found]


@router.get("/{request_id}", summary="One data request and its state at each node")
def get_request(request_id: int, user: CurrentUser, session: SessionDep) -> RequestRead:
    data_request = releases.get_visible(session=session, user=user, request_id=request_id)
    return releases.read(session=session, data_request=data_request)


@channel.post("/releases/{request_id}/state", summary="The node's decision or progress")
def report_state(
    request_id: int, body: StateReport, node: SignedNode, session: SessionDep
) -> StateReport:
    target = releases.record_state(
        session=session,
        node=nodes.attached(session=session, node=node),
        request_id=request_id,
        report=body,
    )
    return StateReport(
        state=target.state, reason=target.reason, studies=target.studies, held=target.held
    )


@channel.post("/chunks/held", summary="Which of these chunks the hub holds already")
def chunks_held(body: ChunkQuery, _node: SignedNode, storage: StorageDep) -> ChunksHeld:
    return ChunksHeld(held=quarantine.held_chunks(storage, body.hashes))


@channel.put(
    "/chunks/{sha256}",
    summary="One content-addressed chunk (the body's SHA-256 must be its name)",
)
async def put_chunk(
    sha256: Annotated[str, PathParam(pattern=SHA256_PATTERN)],
    request: Request,
    _node: SignedNode,
    storage: StorageDep,
) -> dict[str, bool]:
    body = await request.body()
    stored = await anyio.to_thread.run_sync(quarantine.put_chunk, storage, sha256, body)
    return {"stored": stored}


@channel.post(
    "/chunks",
    summary="Several content-addressed chunks: their bytes back to back, in the order of the "
    "query's `part=SHA-256:size`",
)
async def put_chunks(
    part: Annotated[list[str], Query(description=f"1 to {MAX_BATCH_CHUNKS} of them")],
    request: Request,
    _node: SignedNode,
    storage: StorageDep,
) -> dict[str, int]:
    body = await request.body()  # read once already, to check the node's signature
    parts = quarantine.batch_parts(part, len(body))
    stored = await anyio.to_thread.run_sync(quarantine.put_chunks, storage, parts, body)
    return {"stored": stored}


@channel.post("/releases/manifests", summary="A study's signed manifest, once its chunks are in")
def post_manifest(
    body: SignedManifest,
    node: SignedNode,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
) -> ManifestReceipt:
    study = quarantine.receive(
        session=session,
        storage=storage,
        node=nodes.attached(session=session, node=node),
        signed=body,
        ocr=OcrPolicy(hub.settings.curation_ocr),
    )
    return ManifestReceipt(study=study.id, state=StudyState(study.state).value)
