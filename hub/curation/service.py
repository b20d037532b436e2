"""Curation: the queue of studies in quarantine, a study's preview, acceptance into the
project's workspace and rejection (sent back to the node as a ``release.rejected`` task),
and the project's export — one zip per study with its manifest, and a README of the
de-identification applied.

Plain functions taking a keyword-only ``session``; none commits; decisions are audited.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.deid.profile import load_profile
from common.schemas.release import RELEASE_REJECTED, ReleaseRejectedPayload
from hub import audit
from hub.curation.exceptions import AlreadyReviewed, StudyNotFound
from hub.curation.models import ReceivedStudy, StudyState
from hub.curation.quarantine import quarantine_prefix
from hub.curation.schemas import StudyDetailRead, StudySummaryRead
from hub.db import aware, utcnow
from hub.federation.models import TargetState, Task, TaskTarget
from hub.nodes.models import Node
from hub.storage.service import Storage
from hub.users import service as users
from hub.users.models import Project, Role, User

logger = logging.getLogger(__name__)

_REVIEWERS = (Role.CURATOR, Role.ADMIN)


def require_reviewer(user: User) -> User:
    users.require_role(user, *_REVIEWERS)
    return user


def queue(
    *, session: Session, state: StudyState | None = StudyState.AWAITING_REVIEW
) -> list[ReceivedStudy]:
    query = select(ReceivedStudy).order_by(ReceivedStudy.id)
    if state is not None:
        query = query.where(ReceivedStudy.state == state)
    return list(session.execute(query).scalars())


def require(*, session: Session, study_id: int) -> ReceivedStudy:
    study = session.get(ReceivedStudy, study_id)
    if study is None:
        raise StudyNotFound(study_id)
    return study


def show(*, session: Session, study_id: int) -> StudyDetailRead:
    study = require(session=session, study_id=study_id)
    return StudyDetailRead(
        **summary(session=session, study=study).model_dump(),
        summary=study.summary,
        report=study.manifest.get("report", {}),
        scan_findings=study.findings,
        reason=study.reason,
        reviewed_by=study.reviewed_by,
    )


def summary(*, session: Session, study: ReceivedStudy) -> StudySummaryRead:
    return StudySummaryRead(
        id=study.id,
        project=_project(session, study).name,
        node=_node(session, study).name,
        request_id=study.request_id,
        subject_key=study.subject_key,
        study_uid=study.study_uid,
        state=StudyState(study.state),
        files=len(study.manifest.get("files", [])),
        records=len(study.manifest.get("records", [])),
        findings=len(study.findings),
        received_at=aware(study.received_at),
    )


def workspace_prefix(project: str, subject_key: str, study_uid: str) -> str:
    return f"projects/{project}/{subject_key}/{study_uid}"


def accept(*, session: Session, storage: Storage, reviewer: str, study_id: int) -> ReceivedStudy:
    """Move the study's files from quarantine into the project's workspace, and index them
    for DICOMweb now, so that a project's first search does not read every study it holds."""
    from hub.dicomweb import index  # noqa: PLC0415 - the index reads curation's studies

    study = _pending_review(session, study_id)
    project = _project(session, study).name
    source = quarantine_prefix(project, study.study_uid)
    target = workspace_prefix(project, study.subject_key, study.study_uid)
    for key in storage.list(source):
        storage.move(key, f"{target}/{key[len(source) + 1 :]}")
    _decide(session, study, reviewer, StudyState.ACCEPTED, "")
    index.index_study(session=session, storage=storage, received_study_id=study.id)
    return study


def reject(
    *,
    session: Session,
    storage: Storage,
    reviewer: str,
    study_id: int,
    reason: str,
    ttl_seconds: int,
    now: dt.datetime | None = None,
) -> Task:
    """Discard the quarantined files and tell the node why, as a task."""
    study = _pending_review(session, study_id)
    project = _project(session, study)
    for key in storage.list(quarantine_prefix(project.name, study.study_uid)):
        storage.delete(key)
    _decide(session, study, reviewer, StudyState.REJECTED, reason)
    now = now or utcnow()
    payload = ReleaseRejectedPayload(
        request_id=study.request_id, study_uid=study.study_uid, reason=reason
    )
    # Not through federation.create: a curator is not a member of the projects they review.
    task = Task(
        kind=RELEASE_REJECTED,
        payload=payload.model_dump(mode="json"),
        project_id=project.id,
        created_by=reviewer,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ttl_seconds),
    )
    task.targets = [TaskTarget(node_pk=study.node_pk, state=TargetState.PENDING)]
    session.add(task)
    session.flush()
    audit.record(
        session=session,
        actor=reviewer,
        action="task.create",
        subject=f"task {task.id}",
        kind=RELEASE_REJECTED,
        project=project.name,
        nodes=[_node(session, study).name],
        ttl_seconds=ttl_seconds,
    )
    return task


def _pending_review(session: Session, study_id: int) -> ReceivedStudy:
    study = require(session=session, study_id=study_id)
    if StudyState(study.state) != StudyState.AWAITING_REVIEW:
        raise AlreadyReviewed(study_id, StudyState(study.state).value)
    return study


def _decide(
    session: Session, study: ReceivedStudy, reviewer: str, state: StudyState, reason: str
) -> None:
    study.state = state
    study.reason = reason
    study.reviewed_by = reviewer
    study.reviewed_at = utcnow()
    audit.record(
        session=session,
        actor=reviewer,
        action=f"curation.{state.value}",
        subject=f"study {study.id}",
        project=_project(session, study).name,
        reason=reason,
    )


def _project(session: Session, study: ReceivedStudy) -> Project:
    project = session.get(Project, study.project_id)
    assert project is not None  # the foreign key cascades
    return project


def _node(session: Session, study: ReceivedStudy) -> Node:
    node = session.get(Node, study.node_pk)
    assert node is not None
    return node


# -- export -------------------------------------------------------------------------------------


def require_reader(*, session: Session, user: User, project: str) -> Project:
    """Members read their project's export; curators and admins any project's."""
    found = users.require_project(session=session, name=project)
    if Role(user.role) == Role.RESEARCHER:
        users.require_member(session=session, project=found, user=user)
    return found


def accepted(*, session: Session, project: Project) -> list[ReceivedStudy]:
    return list(
        session.execute(
            select(ReceivedStudy)
            .where(
                ReceivedStudy.project_id == project.id,
                ReceivedStudy.state == StudyState.ACCEPTED,
            )
            .order_by(ReceivedStudy.subject_key, ReceivedStudy.study_uid)
        ).scalars()
    )


def zip_name(study: ReceivedStudy) -> str:
    return f"{study.subject_key}_{study.study_uid}.zip"


def study_zip(*, storage: Storage, project: Project, study: ReceivedStudy) -> bytes:
    """One study's files under subject/study/…, or one subject's clinical records under
    subject/clinical/…, with its manifest; byte-identical each time."""
    prefix = workspace_prefix(project.name, study.subject_key, study.study_uid)
    entries = [*study.manifest["files"], *study.manifest.get("records", [])]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for entry in sorted(entries, key=lambda f: f["path"]):
            _add(archive, entry["path"], storage.get(f"{prefix}/{entry['path']}"))
        _add(archive, "manifest.json", _json(study.manifest))
    return buffer.getvalue()


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible archives
    archive.writestr(info, data)


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


def export_manifest(*, session: Session, project: Project) -> dict[str, Any]:
    return {
        "project": project.name,
        "studies": [
            {
                "zip": zip_name(study),
                "subject_key": study.subject_key,
                "study_uid": study.study_uid,
                "profile": study.manifest["profile"],
                "files": len(study.manifest["files"]),
                "records": len(study.manifest.get("records", [])),
                "bytes": sum(
                    entry["size"]
                    for entry in [*study.manifest["files"], *study.manifest.get("records", [])]
                ),
            }
            for study in accepted(session=session, project=project)
        ],
    }


def readme(*, session: Session, project: Project) -> str:
    """What was done to the data, from the profiles and the nodes' reports (no values)."""
    studies = accepted(session=session, project=project)
    records = sum(1 for study in studies if study.manifest.get("records"))
    lines = [
        f"# {project.name}: released data",
        "",
        f"{len(studies) - records} imaging studies and {records} patients' clinical records,",
        "one zip each (subject key _ study UID, or for records subject key _ a UID of their",
        "own), each with its manifest (files, sizes, SHA-256). Images are DICOM; clinical",
        "records are a FHIR R4 Bundle (clinical/bundle.json) and OMOP CDM 5.4 tables",
        "(clinical/<table>.csv) carrying the same subject key and date shift as the images.",
        "Everything was de-identified at its hospital's node (stage 2), leak-checked there,",
        "verified and PHI-scanned again at the hub, and accepted by a curator.",
        "",
    ]
    for name in sorted({study.manifest["profile"] for study in studies}):
        lines += _profile_section(name, [s for s in studies if s.manifest["profile"] == name])
    return "\n".join(lines) + "\n"


def _profile_section(name: str, studies: list[ReceivedStudy]) -> list[str]:
    lines = [f"## Profile `{name}`", ""]
    try:
        profile = load_profile(name)
    except Exception:  # a node-local profile file: the reports still say what was done
        lines.append("A profile file of the releasing node.")
    else:
        lines += [
            profile.description,
            "",
            "Options (DICOM PS3.15 Annex E): "
            + ", ".join(sorted(option.value for option in profile.options)),
            f"Subject keys: project-specific keyed hashes, prefix `{profile.subject_key_prefix}`.",
            "UIDs: project-specific keyed hashes (2.25 UUID form).",
            f"Dates: shifted per patient by {-profile.max_offset_days} to "
            f"{-profile.min_offset_days} days back (intervals kept).",
        ]
    actions: dict[str, set[str]] = {}
    for study in studies:
        for action, paths in study.manifest.get("report", {}).get("actions", {}).items():
            actions.setdefault(action, set()).update(paths)
    lines += ["", "Attributes by action (from the nodes' reports):", ""]
    lines += [
        f"- {action}: {', '.join(sorted(paths))}" for action, paths in sorted(actions.items())
    ]
    return [*lines, ""]


def export(*, session: Session, storage: Storage, project: Project, folder: Path) -> list[Path]:
    """Write the project's zips, ``manifest.json`` and ``README.md`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for study in accepted(session=session, project=project):
        path = folder / zip_name(study)
        path.write_bytes(study_zip(storage=storage, project=project, study=study))
        written.append(path)
    (folder / "manifest.json").write_bytes(_json(export_manifest(session=session, project=project)))
    (folder / "README.md").write_text(readme(session=session, project=project), encoding="utf-8")
    return written
