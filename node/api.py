"""The node's HTTP API, for hospital IT: thin routes that validate, call a service, map.

Every route but ``/health`` needs ``Authorization: Bearer <api_token>``. Everything the API
shows is pseudonymized (subject keys, stage-1 UIDs, kept dates, codes, counts); the
correspondence table is not reachable from here, by design: no route reads or writes it,
and re-identification is a local command (``havenet node reidentify``) only.

Errors are domain exceptions (``node.exceptions``, ``node.jobs.exceptions``); ``node.main``
maps them to HTTP once.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from fastapi import APIRouter, Depends, Query, Request, Response, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement, Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from common import __version__
from node import qa
from node.dicom.scp import StorageServer
from node.exceptions import NotAuthenticated, NotFound
from node.ingest.service import Ingest
from node.jobs import service as jobs
from node.schemas import (
    DeleteJobCreate,
    DicomListenerRead,
    HealthRead,
    InstanceRead,
    JobCreate,
    JobDetailRead,
    JobRead,
    PreviewRead,
    RejectionRead,
    RestoreJobCreate,
    SeriesRead,
    StatusRead,
    StoreCountsRead,
    StudyRead,
)
from node.settings import NodeSettings
from node.store import service as store
from node.store.correspondence import Keyring
from node.store.db import transaction
from node.store.models import Instance, JobStatus, Patient, Series, Study


@dataclass
class Runtime:
    """What the routes need of the running node; built by ``node.main`` at start-up."""

    settings: NodeSettings
    engine: Engine
    sessions: sessionmaker[Session]
    ingest: Ingest
    scp: StorageServer
    scheduler: BackgroundScheduler
    keyring: Keyring = field(repr=False)
    api_token: bytes = field(repr=False)


# -- dependencies -----------------------------------------------------------------------------


def runtime(request: Request) -> Runtime:
    node: Runtime = request.app.state.node
    return node


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="node API token",
    description="The node's api_token setting (HAVENET_NODE_API_TOKEN).",
)


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """Let the request in only with the node's token (compared in constant time)."""
    expected = runtime(request).api_token
    offered = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(offered, expected):
        raise NotAuthenticated()


def db_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: committed when the route returns, else rolled back."""
    with transaction(runtime(request).sessions) as session:
        yield session


SessionDep = Annotated[Session, Depends(db_session, scope="function")]
RuntimeDep = Annotated[Runtime, Depends(runtime)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")]
Offset = Annotated[int, Query(ge=0, description="Skip this many.")]


def _actor(request: Request) -> str:
    host = request.client.host if request.client is not None else "unknown"
    return f"api@{host}"


public = APIRouter()
router = APIRouter(
    dependencies=[Depends(require_token)],
    responses={401: {"description": "No bearer token, or not the node's token."}},
)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "Nothing on this node has that UID or number."}
}


# -- health and status ------------------------------------------------------------------------


@public.get("/health", summary="Is the node up?", tags=["node"])
async def health() -> HealthRead:
    """Answers without a token, for load balancers and container health checks."""
    return HealthRead(version=__version__)


@router.get("/status", summary="Counts, ingest progress and the DICOM listener", tags=["node"])
def get_status(node: RuntimeDep, session: SessionDep) -> StatusRead:
    """How much the node holds, what stage 1 has done since start-up, and where to send."""
    counts = store.status_counts(session=session)
    return StatusRead(
        counts=StoreCountsRead.model_validate(counts),
        ingest=node.ingest.counts(),
        dicom=DicomListenerRead(
            ae_title=node.settings.ae_title,
            host=node.settings.dicom_host,
            port=node.scp.port,
        ),
    )


# -- jobs ---------------------------------------------------------------------------------


@router.post(
    "/jobs",
    summary="Queue a job: retrieve from the PACS, clean up, or restore",
    status_code=status.HTTP_201_CREATED,
    responses={422: {"description": "The selection is not valid; the message says why."}},
    tags=["jobs"],
)
def create_job(body: JobCreate, request: Request, node: RuntimeDep, session: SessionDep) -> JobRead:
    """Patient IDs and accession numbers are stored encrypted and never shown again."""
    actor = _actor(request)
    if isinstance(body, DeleteJobCreate):
        job = jobs.create_delete(
            session=session, subject_keys=body.subject_keys, project=body.project, actor=actor
        )
    elif isinstance(body, RestoreJobCreate):
        job = jobs.create_restore(
            session=session,
            actor=actor,
            subject_keys=body.subject_keys,
            study_uids=body.study_uids,
            restore_of=body.restore_of,
            pacs=body.pacs,
            method=jobs.Method(body.method.value),
        )
    else:
        request_ = jobs.RetrieveCreate(
            pacs=body.pacs,
            method=jobs.Method(body.method.value),
            patient_ids=tuple(body.patient_ids),
            accession_numbers=tuple(body.accession_numbers),
            modality=body.modality,
            date_from=body.date_from,
            date_to=body.date_to,
            study_description=body.study_description,
            protocol_name=body.protocol_name,
        )
        job = jobs.create_retrieve(
            session=session, keyring=node.keyring, request=request_, actor=actor
        )
    return JobRead.model_validate(jobs.describe(job))


@router.get("/jobs", summary="List jobs, newest first", tags=["jobs"])
def list_jobs(
    session: SessionDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Limit = 100,
) -> list[JobRead]:
    found = jobs.get_all(session=session, status=status_, limit=limit)
    return [JobRead.model_validate(jobs.describe(job)) for job in found]


@router.get(
    "/jobs/{job_id}", summary="A job's progress and report", responses=_NOT_FOUND, tags=["jobs"]
)
def get_job(job_id: int, session: SessionDep) -> JobDetailRead:
    job = jobs.get(session=session, job_id=job_id)
    reasons = jobs.rejected_reasons(session=session, job_id=job_id)
    return JobDetailRead.model_validate(
        {**jobs.describe(job), "rejections": [RejectionRead.model_validate(r) for r in reasons]}
    )


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job",
    responses={**_NOT_FOUND, 409: {"description": "The job has already ended."}},
    tags=["jobs"],
)
def cancel_job(job_id: int, request: Request, session: SessionDep) -> JobRead:
    """A waiting job stops at once, a running one at its next step."""
    job = jobs.cancel(session=session, job_id=job_id, actor=_actor(request))
    return JobRead.model_validate(jobs.describe(job))


# -- the pseudonymized store --------------------------------------------------------------


@router.get("/studies", summary="Studies held, pseudonymized", tags=["store"])
def list_studies(
    session: SessionDep,
    subject_key: str | None = None,
    modality: Annotated[str | None, Query(max_length=16)] = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[StudyRead]:
    """Filter by subject key, a modality of any of the study's series, or a date range."""
    criteria: list[ColumnElement[bool]] = []
    if subject_key:
        criteria.append(Patient.subject_key == subject_key)
    if modality:
        criteria.append(
            select(Series.id)
            .where(Series.study_id == Study.id, Series.modality == modality.upper())
            .exists()
        )
    if date_from:
        criteria.append(Study.study_date >= date_from)
    if date_to:
        criteria.append(Study.study_date <= date_to)
    return _studies(session, *criteria, limit=limit, offset=offset)


@router.get("/studies/{study_uid}", summary="One study", responses=_NOT_FOUND, tags=["store"])
def get_study(study_uid: str, session: SessionDep) -> StudyRead:
    found = _studies(session, Study.study_uid == study_uid, limit=1, offset=0)
    if not found:
        raise NotFound("study", study_uid)
    return found[0]


@router.get(
    "/studies/{study_uid}/series",
    summary="The series of a study",
    responses=_NOT_FOUND,
    tags=["store"],
)
def list_series(study_uid: str, session: SessionDep) -> list[SeriesRead]:
    if session.execute(select(Study.id).where(Study.study_uid == study_uid)).first() is None:
        raise NotFound("study", study_uid)
    return _series(session, Study.study_uid == study_uid)


@router.get("/series/{series_uid}", summary="One series", responses=_NOT_FOUND, tags=["store"])
def get_series(series_uid: str, session: SessionDep) -> SeriesRead:
    found = _series(session, Series.series_uid == series_uid)
    if not found:
        raise NotFound("series", series_uid)
    return found[0]


@router.get(
    "/series/{series_uid}/instances",
    summary="The instances of a series (to pick one for the QA preview)",
    responses=_NOT_FOUND,
    tags=["store"],
)
def list_instances(
    series_uid: str, session: SessionDep, limit: Limit = 100, offset: Offset = 0
) -> list[InstanceRead]:
    series_id = session.execute(
        select(Series.id).where(Series.series_uid == series_uid)
    ).scalar_one_or_none()
    if series_id is None:
        raise NotFound("series", series_uid)
    rows = session.execute(
        select(Instance)
        .where(Instance.series_id == series_id)
        .order_by(Instance.instance_number, Instance.id)
        .limit(limit)
        .offset(offset)
    ).scalars()
    return [InstanceRead.model_validate(row) for row in rows]


# -- the QA preview -------------------------------------------------------------------------


@router.get(
    "/instances/{sop_uid}/preview",
    summary="QA preview: what stage 1 did to each attribute",
    responses={**_NOT_FOUND, 422: {"description": "The stored file cannot be read."}},
    tags=["qa"],
)
def preview(sop_uid: str, node: RuntimeDep, session: SessionDep) -> PreviewRead:
    """Attribute by attribute: the action taken, and the stored value where it may be shown.

    Identifiers show their action only, never a value. Kept attributes show the value of
    the pseudonymized file.
    """
    found = qa.preview(session=session, data_dir=node.settings.data_dir, sop_uid=sop_uid)
    return PreviewRead.model_validate(found, from_attributes=True)


@router.get(
    "/instances/{sop_uid}/preview.png",
    summary="QA preview: the pseudonymized pixels, to check for burned-in text",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The first frame, ≤ 512 px."},
        **_NOT_FOUND,
        422: {"description": "No pixel data, or pixels that do not decode."},
    },
    tags=["qa"],
)
def preview_png(sop_uid: str, node: RuntimeDep, session: SessionDep) -> Response:
    """The first frame, windowed by the file's window (or its range), at most 512 px a side."""
    png = qa.render_png(session=session, data_dir=node.settings.data_dir, sop_uid=sop_uid)
    return Response(content=png, media_type="image/png", headers={"Cache-Control": "no-store"})


# -- queries for the pseudonymized view -------------------------------------------------------


def _studies(
    session: Session, *criteria: ColumnElement[bool], limit: int, offset: int
) -> list[StudyRead]:
    series_count = (
        select(func.count(Series.id)).where(Series.study_id == Study.id).scalar_subquery()
    )
    instance_count = (
        select(func.count(Instance.id))
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == Study.id)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Study, Patient.subject_key, series_count, instance_count)
        .join(Patient, Study.patient_id == Patient.id)
        .where(*criteria)
        .order_by(Study.study_date.desc(), Study.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [
        StudyRead(
            study_uid=study.study_uid,
            subject_key=subject_key,
            study_date=study.study_date,
            description=study.description,
            modalities=[m for m in study.modalities.split("\\") if m],
            patient_age_years=study.patient_age_years,
            series_count=int(n_series or 0),
            instance_count=int(n_instances or 0),
        )
        for study, subject_key, n_series, n_instances in rows
    ]


def _series(session: Session, *criteria: ColumnElement[bool]) -> list[SeriesRead]:
    instance_count = (
        select(func.count(Instance.id)).where(Instance.series_id == Series.id).scalar_subquery()
    )
    rows = session.execute(
        select(Series, Study.study_uid, instance_count)
        .join(Study, Series.study_id == Study.id)
        .where(*criteria)
        .order_by(Series.id)
    ).all()
    return [
        SeriesRead(
            series_uid=series.series_uid,
            study_uid=study_uid,
            modality=series.modality,
            body_part=series.body_part,
            description=series.description,
            protocol_name=series.protocol_name,
            manufacturer=series.manufacturer,
            model=series.model,
            field_strength=series.field_strength,
            slice_thickness=series.slice_thickness,
            series_date=series.series_date,
            instance_count=int(n or 0),
        )
        for series, study_uid, n in rows
    ]
