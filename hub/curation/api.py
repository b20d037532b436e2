"""Curation and exports over HTTP: the curators' queue, preview, accept and reject
(``/api/v1/curation``), and a project's export for its members (``/api/v1/exports``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse, Response

from hub.curation import service as curation
from hub.curation.exceptions import StudyNotFound
from hub.curation.models import StudyState
from hub.curation.schemas import ExportRead, Review, StudyDetailRead, StudySummaryRead
from hub.deps import CurrentUser, RuntimeDep, SessionDep
from hub.storage.deps import StorageDep
from hub.users.models import User

router = APIRouter(prefix="/api/v1/curation", tags=["curation"])


def _curator(user: CurrentUser) -> User:
    return curation.require_reviewer(user)


Curator = Annotated[User, Depends(_curator)]
exports = APIRouter(prefix="/api/v1/exports", tags=["exports"])


@router.get("", summary="Received studies; those awaiting review unless a state is given")
def list_studies(
    _user: Curator,
    session: SessionDep,
    state: Annotated[StudyState | None, Query()] = StudyState.AWAITING_REVIEW,
) -> list[StudySummaryRead]:
    found = curation.queue(session=session, state=state)
    return [curation.summary(session=session, study=study) for study in found]


@router.get("/{study_id}", summary="A study's header summary, report and scan findings")
def show_study(study_id: int, _user: Curator, session: SessionDep) -> StudyDetailRead:
    return curation.show(session=session, study_id=study_id)


@router.post("/{study_id}/accept", summary="Accept into the project's workspace")
def accept_study(
    study_id: int, user: Curator, session: SessionDep, storage: StorageDep
) -> StudyDetailRead:
    curation.accept(session=session, storage=storage, reviewer=_actor(user), study_id=study_id)
    return curation.show(session=session, study_id=study_id)


@router.post("/{study_id}/reject", summary="Reject; the node gets a task with the reason")
def reject_study(
    study_id: int,
    body: Review,
    user: Curator,
    hub: RuntimeDep,
    session: SessionDep,
    storage: StorageDep,
) -> StudyDetailRead:
    curation.reject(
        session=session,
        storage=storage,
        reviewer=_actor(user),
        study_id=study_id,
        reason=body.reason or "rejected by the curator",
        ttl_seconds=hub.settings.default_task_ttl_seconds,
    )
    read = curation.show(session=session, study_id=study_id)
    session.commit()  # before the node's poll is woken, so it finds the task
    hub.signal.notify()
    return read


@exports.get("/{project}", summary="The project's accepted studies, one zip each")
def export_manifest(project: str, user: CurrentUser, session: SessionDep) -> ExportRead:
    found = curation.require_reader(session=session, user=user, project=project)
    manifest = curation.export_manifest(session=session, project=found)
    return ExportRead(project=found.name, studies=manifest["studies"])


@exports.get("/{project}/README.md", summary="The de-identification applied")
def export_readme(project: str, user: CurrentUser, session: SessionDep) -> PlainTextResponse:
    found = curation.require_reader(session=session, user=user, project=project)
    return PlainTextResponse(curation.readme(session=session, project=found))


@exports.get("/{project}/studies/{study_id}.zip", summary="One study's zip")
def export_study(
    project: str, study_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> Response:
    found = curation.require_reader(session=session, user=user, project=project)
    study = curation.require(session=session, study_id=study_id)
    if study.project_id != found.id or StudyState(study.state) != StudyState.ACCEPTED:
        raise StudyNotFound(study_id)
    data = curation.study_zip(storage=storage, project=found, study=study)
    headers = {"Content-Disposition": f'attachment; filename="{curation.zip_name(study)}"'}
    return Response(data, media_type="application/zip", headers=headers)


def _actor(user: User) -> str:
    return f"user:{user.name}"
