"""DICOMweb over HTTP on a project's workspace, for DICOM viewers and research tools:
QIDO-RS searches and WADO-RS retrieve, metadata, bulk data, frames and rendered images under
``/dicom-web/projects/{project}/`` (PS3.18).

Users authenticate with their hub token (``Authorization: Bearer TOKEN``): members read
their project, curators and admins any project. Accepted studies not yet indexed are
indexed before the request is answered, one transaction per study.
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.web.render import FrameUnreadable
from hub import audit
from hub.db import transaction
from hub.deps import CurrentUser, Runtime, RuntimeDep, SessionDep
from hub.dicomweb import frames, index, multipart
from hub.dicomweb import service as dicomweb
from hub.dicomweb.exceptions import BadQuery, DicomwebError, MissingFromStorage, NotAcceptable
from hub.dicomweb.schemas import (
    Level,
    parse_qido,
    require_json,
    require_octet_stream,
    retrieve_syntax,
)
from hub.storage.deps import StorageDep
from hub.storage.service import Storage
from hub.users.models import Project, User

logger = logging.getLogger(__name__)

PREFIX = "/dicom-web/projects/{project}"
DICOM_JSON = "application/dicom+json"

router = APIRouter(prefix=PREFIX, tags=["dicomweb"])

Accept = Annotated[str | None, Header()]


def map_errors(app: FastAPI) -> None:
    """PS3.18 statuses for DICOMweb's own errors (400, 406); the rest map in hub.main."""
    app.add_exception_handler(DicomwebError, _dicomweb_error)


async def _dicomweb_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DicomwebError)
    return JSONResponse({"detail": str(exc)}, exc.status_code)


# -- QIDO-RS --------------------------------------------------------------------------------


@router.get("/studies", summary="QIDO-RS: search for studies")
def search_studies(
    project: str,
    request: Request,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    return _search(request, user, hub, session, storage, project, Level.STUDY, accept)


@router.get("/series", summary="QIDO-RS: search for series in every study")
def search_all_series(
    project: str,
    request: Request,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    return _search(request, user, hub, session, storage, project, Level.SERIES, accept)


@router.get("/instances", summary="QIDO-RS: search for instances in every study")
def search_all_instances(
    project: str,
    request: Request,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    return _search(request, user, hub, session, storage, project, Level.INSTANCE, accept)


@router.get("/studies/{study}/series", summary="QIDO-RS: search for a study's series")
def search_series(
    project: str,
    study: str,
    request: Request,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    scope = dicomweb.Scope(study_uid=study)
    return _search(request, user, hub, session, storage, project, Level.SERIES, accept, scope)


@router.get("/studies/{study}/instances", summary="QIDO-RS: search for a study's instances")
def search_study_instances(
    project: str,
    study: str,
    request: Request,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    scope = dicomweb.Scope(study_uid=study)
    return _search(request, user, hub, session, storage, project, Level.INSTANCE, accept, scope)


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="QIDO-RS: search for a series' instances",
)
def search_instances(
    project: str,
    study: str,
    series: str,
    request: Request,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    scope = dicomweb.Scope(study_uid=study, series_uid=series)
    return _search(request, user, hub, session, storage, project, Level.INSTANCE, accept, scope)


def _search(
    request: Request,
    user: User,
    hub: Runtime,
    session: Session,
    storage: Storage,
    project: str,
    level: Level,
    accept: str | None,
    scope: dicomweb.Scope | None = None,
) -> Response:
    require_json(accept)
    query = parse_qido(level, list(request.query_params.multi_items()))
    found = _workspace(user, hub, session, storage, project)
    result = dicomweb.search(
        session=session,
        project=found,
        query=query,
        scope=scope or dicomweb.Scope(),
        base_url=_base_url(request, found),
    )
    warnings = list(query.warnings)
    if result.more:
        warnings.append("There are additional results that can be requested.")
    # An empty result is 200 with [] (DICOM CP-2473; RFC 9110 gives 204 no body at all).
    return JSONResponse(
        result.datasets,
        media_type=DICOM_JSON,
        headers=_warning_header(warnings),
    )


def _warning_header(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"Warning": ", ".join(f'299 havenet "{text}"' for text in warnings)}


# -- WADO-RS --------------------------------------------------------------------------------


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study's instances")
def retrieve_study(
    project: str,
    study: str,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    return _retrieve(user, hub, session, storage, project, accept, study)


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(
    project: str,
    study: str,
    series: str,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    return _retrieve(user, hub, session, storage, project, accept, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    summary="WADO-RS: retrieve an instance",
)
def retrieve_instance(
    project: str,
    study: str,
    series: str,
    instance: str,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    return _retrieve(user, hub, session, storage, project, accept, study, series, instance)


def _retrieve(
    user: User,
    hub: Runtime,
    session: Session,
    storage: Storage,
    project: str,
    accept: str | None,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    syntax = retrieve_syntax(accept)
    found = _workspace(user, hub, session, storage, project)
    files = dicomweb.retrieve(
        session=session,
        project=found,
        study_uid=study,
        series_uid=series,
        sop_uid=instance,
        transfer_syntax=syntax,
    )
    if instance is None:  # a viewer reads instance by instance: studies and series are audited
        audit.record(
            session=session,
            actor=f"user:{user.name}",
            action="dicomweb.retrieve",
            subject=f"project {found.name}",
            level="series" if series else "study",
            instances=len(files),
        )
    missing = sum(1 for stored in files if not storage.exists(stored.storage_key))
    if missing:  # found before the 200 is sent, rather than as a stream cut short
        logger.error("a DICOMweb retrieve found %d indexed file(s) missing from storage", missing)
        raise MissingFromStorage(missing)
    boundary = multipart.new_boundary()
    return StreamingResponse(
        multipart.dicom_parts(storage, files, syntax, boundary),
        media_type=multipart.content_type(multipart.DICOM, boundary),
    )


@router.get("/studies/{study}/metadata", summary="WADO-RS: a study's metadata")
def study_metadata(
    project: str,
    study: str,
    request: Request,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    return _metadata(request, user, hub, session, storage, project, accept, study)


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: a series' metadata")
def series_metadata(
    project: str,
    study: str,
    series: str,
    request: Request,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    return _metadata(request, user, hub, session, storage, project, accept, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="WADO-RS: an instance's metadata",
)
def instance_metadata(
    project: str,
    study: str,
    series: str,
    instance: str,
    request: Request,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    return _metadata(request, user, hub, session, storage, project, accept, study, series, instance)


def _metadata(
    request: Request,
    user: User,
    hub: Runtime,
    session: Session,
    storage: Storage,
    project: str,
    accept: str | None,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    require_json(accept)
    found = _workspace(user, hub, session, storage, project)
    headers = dicomweb.metadata(
        session=session,
        project=found,
        base_url=_base_url(request, found),
        study_uid=study,
        series_uid=series,
        sop_uid=instance,
    )
    return JSONResponse(headers, media_type=DICOM_JSON)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
    summary="WADO-RS: an attribute's bulk data (as referenced by the metadata)",
)
def bulk_data(
    project: str,
    study: str,
    series: str,
    instance: str,
    tag: str,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    require_octet_stream(accept)
    found = _workspace(user, hub, session, storage, project)
    value = dicomweb.bulk_data(
        session=session,
        storage=storage,
        project=found,
        study_uid=study,
        series_uid=series,
        sop_uid=instance,
        tag=tag.upper(),
    )
    boundary = multipart.new_boundary()
    return Response(
        b"".join(multipart.octet_parts([value], boundary)),
        media_type=multipart.content_type(multipart.OCTET_STREAM, boundary),
    )


# -- frames and rendered images (what web viewers draw with) ------------------------------

INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"


@router.get(INSTANCE + "/frames/{frame_list}", summary="WADO-RS: frames of an instance")
def retrieve_frames(
    project: str,
    study: str,
    series: str,
    instance: str,
    frame_list: str,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
) -> Response:
    """Native little endian (cut or decoded), or the stored bitstream when asked for."""
    numbers = frames.frame_numbers(frame_list)
    found, stored, data = _instance(user, hub, session, storage, project, study, series, instance)
    form = frames.frame_form(accept, stored.transfer_syntax_uid)
    try:
        values = frames.frames(data, numbers, form)
    except FrameUnreadable as exc:  # this hub cannot decode it: as stored is what it can send
        raise NotAcceptable(f"{exc}; ask transfer-syntax=* for the frames as stored") from None
    _audit_pixels(session, user, found, "dicomweb.frames", len(numbers))
    boundary = multipart.new_boundary()
    return Response(
        b"".join(multipart.frame_parts(values, form.media_type, form.transfer_syntax, boundary)),
        media_type=multipart.content_type(form.media_type, boundary),
    )


Window = Annotated[
    str | None, Query(description="center,width[,function]: linear, linear-exact or sigmoid")
]
Quality = Annotated[str | None, Query(description="JPEG quality, 1 to 100")]


@router.get(INSTANCE + "/rendered", summary="WADO-RS: an instance's first frame, rendered")
def rendered_instance(
    project: str,
    study: str,
    series: str,
    instance: str,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
    window: Window = None,
    quality: Quality = None,
) -> Response:
    rendering = _rendering(accept, window, quality)
    return _rendered(user, hub, session, storage, project, study, series, instance, 1, rendering)


@router.get(INSTANCE + "/frames/{frame}/rendered", summary="WADO-RS: one frame, rendered")
def rendered_frame(
    project: str,
    study: str,
    series: str,
    instance: str,
    frame: str,
    user: CurrentUser,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
    accept: Accept = None,
    window: Window = None,
    quality: Quality = None,
) -> Response:
    numbers = frames.frame_numbers(frame)
    if len(numbers) != 1:
        raise BadQuery("frames", "one frame is rendered at a time")
    rendering = _rendering(accept, window, quality)
    return _rendered(
        user, hub, session, storage, project, study, series, instance, numbers[0], rendering
    )


def _rendering(accept: str | None, window: str | None, quality: str | None) -> frames.Rendering:
    return frames.Rendering(
        media_type=frames.rendered_type(accept),
        voi=frames.window_parameter(window),
        quality=frames.quality_parameter(quality),
    )


def _rendered(
    user: User,
    hub: Runtime,
    session: Session,
    storage: Storage,
    project: str,
    study: str,
    series: str,
    instance: str,
    number: int,
    rendering: frames.Rendering,
) -> Response:
    found, _, data = _instance(user, hub, session, storage, project, study, series, instance)
    try:
        picture = frames.rendered(data, number, rendering)
    except FrameUnreadable as exc:
        raise NotAcceptable(str(exc)) from None
    _audit_pixels(session, user, found, "dicomweb.rendered", 1)
    return Response(picture, media_type=rendering.media_type)


def _instance(
    user: User,
    hub: Runtime,
    session: Session,
    storage: Storage,
    project: str,
    study: str,
    series: str,
    instance: str,
) -> tuple[Project, dicomweb.StoredInstance, bytes]:
    """The project, the instance's index entry and its file, once the user may read them."""
    found = _workspace(user, hub, session, storage, project)
    (stored,) = dicomweb.retrieve(
        session=session, project=found, study_uid=study, series_uid=series, sop_uid=instance
    )
    if not storage.exists(stored.storage_key):
        logger.error("a DICOMweb frame request found its indexed file missing from storage")
        raise MissingFromStorage(1)
    return found, stored, storage.get(stored.storage_key)


def _audit_pixels(session: Session, user: User, project: Project, action: str, count: int) -> None:
    # Pixels leave the hub a frame at a time here, so each request is one record: who,
    # which project and how many frames, never which instance.
    audit.record(
        session=session,
        actor=f"user:{user.name}",
        action=action,
        subject=f"project {project.name}",
        level="instance",
        frames=count,
    )


# -- the workspace ------------------------------------------------------------------------


def _workspace(
    user: User, hub: Runtime, session: Session, storage: Storage, project: str
) -> Project:
    """The project, once the user may read it and its accepted studies are all indexed."""
    found = dicomweb.require_reader(session=session, user=user, project=project)
    for received_study_id in index.pending(session=session, project=found):
        _index_one(hub, storage, received_study_id)
    return found


def _index_one(hub: Runtime, storage: Storage, received_study_id: int) -> None:
    # Its own transaction: the index outlives a request that fails later, and a study
    # indexed by another worker at the same moment is not an error.
    try:
        with transaction(hub.sessions) as session:
            index.index_study(session=session, storage=storage, received_study_id=received_study_id)
    except IntegrityError:
        logger.info("received study %d was indexed by another request", received_study_id)


def _base_url(request: Request, project: Project) -> str:
    return f"{str(request.base_url).rstrip('/')}/dicom-web/projects/{quote(project.name)}/"
