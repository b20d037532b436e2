"""Selection jobs: create, list, read and cancel them (seed 000's subject selection, seed
001's bulk get, clean-up and restore).

A job's ``spec`` column holds only what is not identifying: the PACS, the method, modality,
date range, description and protocol filters, and counts. Patient IDs and accession numbers
go into ``spec_ciphertext``, encrypted with the correspondence keyring, and come back out
only through :func:`selection`, for the runner. Subject keys and stage-1 UIDs (delete and
restore jobs) are pseudonyms and stay in the plain spec.

Functions take a keyword-only ``session`` and never commit (STYLE.md); the caller's unit of
work decides. Job creation and cancellation are audited in the same transaction.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.orm import Session

from common import audit
from node.jobs.exceptions import InvalidSelection, JobFinished, JobNotFound, SpecUnreadable
from node.store.correspondence import CorrespondenceError, Keyring
from node.store.models import (
    AuditRecord,
    Correspondence,
    Job,
    JobStatus,
    JobStudy,
    RejectedInstance,
)

logger = logging.getLogger(__name__)

SPEC_KIND = "job-spec"  # associated data of the encrypted spec: it cannot pass for anything else
FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)
WAITING = (JobStatus.QUEUED, JobStatus.RETRYING)

_MAX_PATIENT_ID = 64  # LO
_MAX_ACCESSION = 16  # SH
_MAX_UID = 64


class JobKind(str, Enum):
    """What a job does."""

    # Query a PACS and fetch what matched.
    RETRIEVE = "retrieve"
    # Fetch again from the PACS what a clean-up removed (same pseudonyms, same UIDs).
    RESTORE = "restore"
    # Remove patients' data from the node's store (the correspondence table stays).
    DELETE = "delete"


class Method(str, Enum):
    """How instances come from the PACS."""

    # C-MOVE to the node's own DICOM server: the PACS must know the node's AE title.
    MOVE = "move"
    # C-GET: the PACS sends on the same association; no PACS configuration needed.
    GET = "get"


class IdentifierKind(str, Enum):
    """Which hospital identifier a CSV column holds."""

    ACCESSION = "accession"
    PATIENT_ID = "patient_id"


# Header names accepted for each identifier column (compared without case, spaces, _ or -).
CSV_HEADERS: dict[IdentifierKind, tuple[str, ...]] = {
    IdentifierKind.ACCESSION: ("accession", "accessionnumber", "accessionno", "acc"),
    IdentifierKind.PATIENT_ID: ("patientid", "patient", "mrn", "pid"),
}


@dataclass(frozen=True)
class RetrieveCreate:
    """What to fetch from a PACS: identifiers, a query, or both (all criteria apply)."""

    pacs: str | None = None  # a name from settings; None: the first PACS configured
    method: Method = Method.MOVE
    patient_ids: tuple[str, ...] = field(default=(), repr=False)
    accession_numbers: tuple[str, ...] = field(default=(), repr=False)
    modality: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    study_description: str = ""
    protocol_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", Method(self.method))
        object.__setattr__(self, "patient_ids", _identifiers(self.patient_ids))
        object.__setattr__(self, "accession_numbers", _identifiers(self.accession_numbers))
        object.__setattr__(self, "modality", self.modality.strip().upper())
        _check_dicom_strings(self.patient_ids, "patient ID", _MAX_PATIENT_ID)
        _check_dicom_strings(self.accession_numbers, "accession number", _MAX_ACCESSION)
        if self.modality and (len(self.modality) > 16 or not self.modality.isalnum()):
            raise InvalidSelection("modality: a DICOM modality code such as MR or CT")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise InvalidSelection("date-from is after date-to")
        if not self.has_criteria:
            raise InvalidSelection(
                "a retrieval needs at least one criterion: patient IDs, accession numbers, "
                "modality, a date range, a study description or a protocol name"
            )

    @property
    def has_criteria(self) -> bool:
        return any(
            (
                self.patient_ids,
                self.accession_numbers,
                self.modality,
                self.date_from,
                self.date_to,
                self.study_description.strip(),
                self.protocol_name.strip(),
            )
        )

    def plain_spec(self) -> dict[str, object]:
        """The part of the spec that identifies nobody (counts instead of identifiers)."""
        return {
            "pacs": self.pacs,
            "method": self.method.value,
            "modality": self.modality,
            "date_from": self.date_from.isoformat() if self.date_from else None,
            "date_to": self.date_to.isoformat() if self.date_to else None,
            "study_description": self.study_description,
            "protocol_name": self.protocol_name,
            "patient_ids": len(self.patient_ids),
            "accession_numbers": len(self.accession_numbers),
        }


@dataclass(frozen=True)
class Selection:
    """The identifying part of a retrieval spec, once decrypted (never logged)."""

    patient_ids: tuple[str, ...] = field(default=(), repr=False)
    accession_numbers: tuple[str, ...] = field(default=(), repr=False)


def _check_dicom_strings(values: Sequence[str], what: str, limit: int) -> None:
    """Refuse values DICOM cannot carry, naming their position, never the value."""
    for index, value in enumerate(values, start=1):
        if len(value) > limit or "\\" in value:
            raise InvalidSelection(
                f"{what} number {index} is not valid DICOM: at most {limit} characters "
                "and no backslash"
            )


def _identifiers(values: Iterable[str]) -> tuple[str, ...]:
    """Stripped, non-empty, each once, in the order given."""
    seen: dict[str, None] = {}
    for value in values:
        cleaned = str(value).strip()
        if cleaned:
            seen.setdefault(cleaned, None)
    return tuple(seen)


# -- encryption of the identifying part ---------------------------------------------------


def encrypt_json(keyring: Keyring, value: object) -> tuple[bytes, str]:
    """``value`` as JSON under the keyring's current key; returns (ciphertext, key id)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return keyring.encrypt(SPEC_KIND, text), keyring.current_id


def decrypt_json(keyring: Keyring, ciphertext: bytes, key_id: str, *, job_id: int) -> Any:
    row = Correspondence(kind=SPEC_KIND, ciphertext=ciphertext, key_id=key_id)
    try:
        return json.loads(keyring.decrypt(row))
    except (CorrespondenceError, ValueError):
        raise SpecUnreadable(
            f"job {job_id}: its selection does not decrypt with the configured correspondence "
            "keys (was the key rotated away?)"
        ) from None


def encode_blob(ciphertext: bytes) -> str:
    return base64.b64encode(ciphertext).decode("ascii")


def decode_blob(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def selection(*, job: Job, keyring: Keyring) -> Selection:
    """The patient IDs and accession numbers of a retrieval job (for the runner only)."""
    if job.spec_ciphertext is None:
        return Selection()
    key_id = str(job.spec.get("key_id", ""))
    data = decrypt_json(keyring, job.spec_ciphertext, key_id, job_id=job.id)
    return Selection(
        patient_ids=tuple(data.get("patient_ids", ())),
        accession_numbers=tuple(data.get("accession_numbers", ())),
    )


# -- creation -----------------------------------------------------------------------------


def create_retrieve(
    *, session: Session, keyring: Keyring, request: RetrieveCreate, actor: str
) -> Job:
    """Queue a retrieval; identifiers are stored only encrypted."""
    spec: dict[str, object] = {"kind": JobKind.RETRIEVE.value, **request.plain_spec()}
    ciphertext: bytes | None = None
    if request.patient_ids or request.accession_numbers:
        ciphertext, key_id = encrypt_json(
            keyring,
            {
                "patient_ids": list(request.patient_ids),
                "accession_numbers": list(request.accession_numbers),
            },
        )
        spec["key_id"] = key_id
    job = Job(
        kind=JobKind.RETRIEVE.value,
        status=JobStatus.QUEUED,
        spec=spec,
        spec_ciphertext=ciphertext,
        report={},
    )
    return _add(session, job, actor=actor, details=request.plain_spec())


def create_delete(
    *,
    session: Session,
    subject_keys: Sequence[str],
    actor: str,
    project: str | None = None,
) -> Job:
    """Queue the removal of these patients' data (for a project: its subjects' keys).

    The correspondence table keeps its rows, so a restore job can fetch the data again with
    the same pseudonyms and UIDs (seed 001: key tables are kept indefinitely).
    """
    keys = _subject_keys(subject_keys)
    if not keys:
        raise InvalidSelection("a clean-up needs at least one subject key")
    spec: dict[str, object] = {
        "kind": JobKind.DELETE.value,
        "subject_keys": list(keys),
        "project": project,
    }
    job = Job(kind=JobKind.DELETE.value, status=JobStatus.QUEUED, spec=spec, report={})
    return _add(session, job, actor=actor, details={"subjects": len(keys), "project": project})


def create_restore(
    *,
    session: Session,
    actor: str,
    subject_keys: Sequence[str] = (),
    study_uids: Sequence[str] = (),
    restore_of: int | None = None,
    pacs: str | None = None,
    method: Method = Method.MOVE,
) -> Job:
    """Queue fetching again what was removed: these subjects' studies, or only the stage-1
    ``study_uids`` given, or exactly what the delete job ``restore_of`` removed.

    The runner turns subject keys and stage-1 study UIDs back into the hospital's
    identifiers through the correspondence table, so stage 1 gives the same pseudonyms and
    UIDs as before.
    """
    keys = list(_subject_keys(subject_keys))
    uids = list(_identifiers(study_uids))
    for index, uid in enumerate(uids, start=1):
        if len(uid) > _MAX_UID or not all(c.isdigit() or c == "." for c in uid):
            raise InvalidSelection(f"study UID number {index} is not a DICOM UID")
    if restore_of is not None:
        source = get(session=session, job_id=restore_of)
        if source.kind != JobKind.DELETE.value:
            raise InvalidSelection(f"job {restore_of} is a {source.kind} job, not a clean-up")
        removed = dict(cast(dict[str, Any], source.report.get("subjects", {})))
        for key, entry in removed.items():
            if entry.get("state") != "deleted":
                continue
            if key not in keys:
                keys.append(key)
            uids.extend(u for u in entry.get("studies", []) if u not in uids)
    if not keys and not uids:
        raise InvalidSelection("a restore needs subject keys, stage-1 study UIDs or a clean-up job")
    spec: dict[str, object] = {
        "kind": JobKind.RESTORE.value,
        "pacs": pacs,
        "method": Method(method).value,
        "subject_keys": keys,
        "study_uids": uids,
        "restore_of": restore_of,
    }
    job = Job(kind=JobKind.RESTORE.value, status=JobStatus.QUEUED, spec=spec, report={})
    return _add(
        session,
        job,
        actor=actor,
        details={"subjects": len(keys), "studies": len(uids), "restore_of": restore_of},
    )


def _subject_keys(values: Sequence[str]) -> tuple[str, ...]:
    keys = _identifiers(values)
    for index, key in enumerate(keys, start=1):
        if len(key) > 64 or not key.replace("-", "").replace("_", "").isalnum():
            raise InvalidSelection(f"subject key number {index} is not a subject key")
    return keys


def _add(session: Session, job: Job, *, actor: str, details: dict[str, Any]) -> Job:
    session.add(job)
    session.flush()
    audit.append(
        session,
        AuditRecord,
        actor=actor,
        action=f"job.{job.kind}",
        subject=f"job {job.id}",
        details=details,
    )
    logger.info("job %d (%s) queued", job.id, job.kind)
    return job


# -- reading ------------------------------------------------------------------------------


def get(*, session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


def get_all(
    *,
    session: Session,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    limit: int = 100,
) -> list[Job]:
    """Newest first."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Job.status == JobStatus(status).value)
    if kind is not None:
        query = query.where(Job.kind == JobKind(kind).value)
    return list(session.execute(query).scalars())


def count_by_status(*, session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count(Job.id)).group_by(Job.status))
    return {str(status): int(n) for status, n in rows}


def describe(job: Job) -> dict[str, Any]:
    """A PHI-free view of a job for the API and the console (the encrypted parts left out);
    ``report["studies"]`` holds each planned study's progress, by its stage-1 UID."""
    report = {k: v for k, v in job.report.items() if k not in ("selection", "selection_key")}
    if job.studies:
        report["studies"] = {row.study_key: study_entry(row) for row in job.studies}
    return {
        "id": job.id,
        "kind": job.kind,
        "status": JobStatus(job.status).value,
        "spec": {k: v for k, v in job.spec.items() if k != "key_id"},
        "attempts": job.attempts,
        "found": job.found,
        "retrieved": job.retrieved,
        "stored": job.stored,
        "rejected": job.rejected,
        "total": job.total,
        "done_items": job.done_items,
        "report": report,
        "error": job.error,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "next_attempt_at": _iso(job.next_attempt_at),
    }


# -- the studies of a retrieval job ----------------------------------------------------------


@dataclass(frozen=True)
class PlannedEntry:
    """A study of the plan, before it is fetched (PHI-free: its stage-1 UID)."""

    study_key: str
    found: int
    series: int | None  # the plan narrowed it to this many series


@dataclass(frozen=True)
class StudyTotals:
    found: int
    retrieved: int
    stored: int
    studies: int
    done: int  # studies no longer to fetch
    studies_retrieved: int


def plan_studies(
    *, session: Session, job_id: int, entries: Sequence[PlannedEntry], state: str
) -> int:
    """Record the studies a job will fetch, in order (a study planned twice, once). Returns
    how many."""
    unique = {entry.study_key: entry for entry in entries}
    session.add_all(
        JobStudy(
            job_id=job_id,
            position=position,
            study_key=entry.study_key,
            state=state,
            found=entry.found,
            series=entry.series,
            retrieved=0,
            failed=0,
            stored=0,
            attempts=0,
            error="",
        )
        for position, entry in enumerate(unique.values())
    )
    session.flush()
    return len(unique)


def job_studies(*, session: Session, job_id: int) -> list[JobStudy]:
    """A job's studies, in the order of its plan."""
    query = select(JobStudy).where(JobStudy.job_id == job_id).order_by(JobStudy.position)
    return list(session.execute(query).scalars())


def job_study(*, session: Session, job_id: int, study_key: str) -> JobStudy:
    query = select(JobStudy).where(JobStudy.job_id == job_id, JobStudy.study_key == study_key)
    return session.execute(query).scalar_one()


def retrieved_elsewhere(*, session: Session, job_id: int, study_key: str) -> int:
    """Sub-operations already counted for the job's other studies."""
    query = select(func.coalesce(func.sum(JobStudy.retrieved), 0)).where(
        JobStudy.job_id == job_id, JobStudy.study_key != study_key
    )
    return int(session.execute(query).scalar_one())


def study_totals(
    *, session: Session, job_id: int, to_fetch: Sequence[str], retrieved_state: str
) -> StudyTotals:
    """Sums over a job's studies, in one query."""
    to_fetch_list = list(to_fetch)
    query = select(
        func.coalesce(func.sum(JobStudy.found), 0),
        func.coalesce(func.sum(JobStudy.retrieved), 0),
        func.coalesce(func.sum(JobStudy.stored), 0),
        func.count(JobStudy.id),
        func.count(JobStudy.id).filter(JobStudy.state.not_in(to_fetch_list)),
        func.count(JobStudy.id).filter(JobStudy.state == retrieved_state),
    ).where(JobStudy.job_id == job_id)
    found, retrieved, stored, studies, done, studies_retrieved = session.execute(query).one()
    return StudyTotals(
        int(found), int(retrieved), int(stored), int(studies), int(done), int(studies_retrieved)
    )


def set_pending_studies(*, session: Session, job_id: int, pending: str, state: str) -> None:
    """Give up the studies still pending (the job ends)."""
    session.execute(
        update(JobStudy)
        .where(JobStudy.job_id == job_id, JobStudy.state == pending)
        .values(state=state)
    )


def study_entry(row: JobStudy) -> dict[str, Any]:
    """A study's progress as the job's report shows it."""
    return {
        "state": row.state,
        "found": row.found,
        "series": row.series,
        "retrieved": row.retrieved,
        "failed": row.failed,
        "stored": row.stored,
        "attempts": row.attempts,
        "error": row.error,
    }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def rejected_reasons(*, session: Session, job_id: int) -> list[dict[str, Any]]:
    """Why instances of this job were refused by stage 1, most frequent first."""
    rows = session.execute(
        select(RejectedInstance.code, RejectedInstance.reason, func.count(RejectedInstance.id))
        .where(RejectedInstance.job_id == job_id)
        .group_by(RejectedInstance.code, RejectedInstance.reason)
        .order_by(func.count(RejectedInstance.id).desc())
    )
    return [{"code": code, "reason": reason, "count": int(n)} for code, reason, n in rows]


# -- state changes ------------------------------------------------------------------------


def cancel(*, session: Session, job_id: int, actor: str) -> Job:
    """Stop a job: a waiting one at once, a running one at its runner's next check."""
    job = get(session=session, job_id=job_id)
    if job.status in FINISHED:
        raise JobFinished(f"job {job_id} has already ended ({JobStatus(job.status).value})")
    job.status = JobStatus.CANCELLED
    job.next_attempt_at = None
    session.flush()
    audit.append(session, AuditRecord, actor=actor, action="job.cancel", subject=f"job {job_id}")
    logger.info("job %d cancelled", job_id)
    return job


def requeue_interrupted(*, session: Session) -> int:
    """At start-up: jobs left RUNNING by a node that died go back to the queue; their
    per-study progress in ``report`` makes them continue where they stopped."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Job)
            .where(Job.status == JobStatus.RUNNING.value)
            .values(status=JobStatus.QUEUED.value, next_attempt_at=None)
        ),
    )
    if result.rowcount:
        logger.info("%d interrupted jobs queued again", result.rowcount)
    return int(result.rowcount)


def next_due(*, session: Session, now: dt.datetime) -> int | None:
    """The oldest job waiting whose back-off has passed."""
    return session.execute(
        select(Job.id)
        .where(
            Job.status.in_([s.value for s in WAITING]),
            or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= now),
        )
        .order_by(Job.id)
        .limit(1)
    ).scalar_one_or_none()


def claim(*, session: Session, job_id: int, now: dt.datetime) -> bool:
    """Mark a waiting job RUNNING and count the attempt; False if someone else got it first."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_([s.value for s in WAITING]))
            .values(
                status=JobStatus.RUNNING.value,
                attempts=Job.attempts + 1,
                next_attempt_at=None,
                updated_at=now,
            )
        ),
    )
    return int(result.rowcount) == 1


def finish(
    *,
    session: Session,
    job_id: int,
    status: JobStatus,
    error: str = "",
    next_attempt_at: dt.datetime | None = None,
    uncount_attempt: bool = False,
) -> bool:
    """Move a RUNNING job on; a job cancelled meanwhile stays cancelled (returns False)."""
    values: dict[str, Any] = {
        "status": JobStatus(status).value,
        "error": error,
        "next_attempt_at": next_attempt_at,
    }
    if uncount_attempt:
        values["attempts"] = Job.attempts - 1
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
            .values(**values)
        ),
    )
    return int(result.rowcount) == 1


# -- CSV input ----------------------------------------------------------------------------


def identifiers_from_csv(path: Path, column: IdentifierKind | str) -> list[str]:
    """The identifiers in one column of a CSV file (header required), each once.

    Errors name the file and line and never echo a cell's value.
    """
    kind = IdentifierKind(column)
    accepted = CSV_HEADERS[kind]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidSelection(f"{path}: cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InvalidSelection(f"{path}: not a UTF-8 text file") from None
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text[:4096], delimiters=",;\t"
        )
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(text.splitlines(), dialect)
    header = next(rows, None)
    if header is None:
        raise InvalidSelection(f"{path}: the file is empty")
    names = [_normalise(h) for h in header]
    index = next((i for i, name in enumerate(names) if name in accepted), None)
    if index is None:
        raise InvalidSelection(
            f"{path}: line 1: no {kind.value} column; name it one of {', '.join(accepted)} "
            f"(the header has {len(header)} columns)"
        )
    limit = _MAX_ACCESSION if kind is IdentifierKind.ACCESSION else _MAX_PATIENT_ID
    values: list[str] = []
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if index >= len(row):
            raise InvalidSelection(f"{path}: line {line}: has no {kind.value} column")
        value = row[index].strip()
        if not value:
            continue
        if len(value) > limit or "\\" in value:
            raise InvalidSelection(
                f"{path}: line {line}: the {kind.value} is not valid DICOM "
                f"(at most {limit} characters, no backslash)"
            )
        values.append(value)
    result = list(_identifiers(values))
    if not result:
        raise InvalidSelection(f"{path}: no {kind.value} values below the header")
    return result


def _normalise(header: str) -> str:
    return "".join(c for c in header.strip().lower() if c.isalnum())
