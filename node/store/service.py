"""The pseudonymized store: the one place that writes patients, studies, series, instances,
their de-identification reports, rejected arrivals and the instance-level correspondence.

Plain functions taking a keyword-only ``session``; none of them commits. The stage-1 ingest
(``node.ingest``) calls :func:`store_batch` from its single writer thread, once per batch of
de-identified arrivals, and commits; the file of each instance is already durable on disk
by then, so a row never points at a file that is not there.

Everything written here comes from the pseudonymized dataset (subject keys, stage-1 UIDs,
cleaned descriptions, codes, numbers). The hospital's identifiers (:class:`Originals`) are
only handed to :func:`node.store.correspondence.record`, which keeps them encrypted.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.orm import Session

from node.store import correspondence
from node.store.correspondence import Keyring
from node.store.models import (
    Correspondence,
    DeidReport,
    Instance,
    Job,
    JobStatus,
    Patient,
    RejectedInstance,
    Series,
    Study,
    utcnow,
)

logger = logging.getLogger(__name__)

# Correspondence kinds written on arrival (node/jobs reads them too).
PATIENT, STUDY, SERIES, INSTANCE = "patient", "study", "series", "instance"
_IN_CHUNK = 500  # bound parameters per IN (...) query: well below SQLite's limit


# -- what an arrival carries ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatientFields:
    """Patient characteristics kept at stage 1 (read from the pseudonymized header)."""

    sex: str = ""
    birth_year: int | None = None


@dataclass(frozen=True, slots=True)
class StudyFields:
    study_date: dt.date | None = None
    description: str = ""
    patient_age_years: int | None = None


@dataclass(frozen=True, slots=True)
class SeriesFields:
    modality: str = ""
    body_part: str = ""
    description: str = ""
    protocol_name: str = ""
    manufacturer: str = ""
    model: str = ""
    field_strength: float | None = None
    slice_thickness: float | None = None
    contrast_agent: str = ""
    scanning_sequence: str = ""
    sequence_variant: str = ""
    repetition_time: float | None = None
    echo_time: float | None = None
    inversion_time: float | None = None
    series_date: dt.date | None = None


@dataclass(frozen=True, slots=True)
class Originals:
    """The hospital's identifiers of one instance: only ever encrypted into the
    correspondence table. ``repr`` shows nothing, so they cannot reach a log by accident."""

    patient_id: str = field(repr=False)
    study_uid: str = field(repr=False)
    series_uid: str = field(repr=False)
    sop_uid: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One de-identified instance whose file is durable at ``path`` (relative to the node's
    data folder, with forward slashes)."""

    subject_key: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    path: str
    size: int
    sha256: str
    transfer_syntax_uid: str
    profile: str
    pixels: str
    actions: dict[str, list[str]]
    patient: PatientFields
    study: StudyFields
    series: SeriesFields
    originals: Originals


@dataclass(frozen=True, slots=True)
class Rejection:
    """An arrival that is not stored; ``code`` and ``reason`` are PHI-free."""

    code: str
    reason: str
    source: str = ""
    sop_class_uid: str = ""
    modality: str = ""
    job_id: int | None = None


class StoreStatus(str, Enum):
    """What storing an arrival did."""

    # A new instance: rows and correspondence written.
    STORED = "stored"
    # The same instance (same hospital SOP Instance UID, same bytes) was already stored.
    DUPLICATE = "duplicate"
    # The hospital re-sent the instance with other content: the row now describes the new file.
    REPLACED = "replaced"


@dataclass
class StoreResult:
    status: StoreStatus
    instance_id: int
    # Files (relative to the data folder) no row points at any more: remove after commit.
    obsolete: list[str] = field(default_factory=list)


# -- counts ----------------------------------------------------------------------------------


def status_counts(*, session: Session) -> dict[str, int]:
    """Patients, studies, series, instances, rejected arrivals and queued jobs."""

    def count(model: type[object]) -> int:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())

    queued = session.execute(
        select(func.count()).select_from(Job).where(Job.status == JobStatus.QUEUED)
    ).scalar_one()
    return {
        "patients": count(Patient),
        "studies": count(Study),
        "series": count(Series),
        "instances": count(Instance),
        "rejected": count(RejectedInstance),
        "queued_jobs": int(queued),
    }


# -- reads -----------------------------------------------------------------------------------


def get_instance(*, session: Session, sop_uid: str) -> Instance | None:
    """The instance with this stage-1 SOP Instance UID."""
    return session.execute(select(Instance).where(Instance.sop_uid == sop_uid)).scalar_one_or_none()


def stored_instance_for(*, session: Session, keyring: Keyring, original_sop_uid: str) -> str | None:
    """The stage-1 SOP Instance UID of the hospital's instance, if it is in the store now."""
    pseudonym = correspondence.pseudonym_for(
        session=session, keyring=keyring, kind=INSTANCE, original=original_sop_uid
    )
    if pseudonym is None:
        return None
    return pseudonym if get_instance(session=session, sop_uid=pseudonym) is not None else None


def subject_keys(*, session: Session) -> set[str]:
    return set(session.execute(select(Patient.subject_key)).scalars())


# -- writes ----------------------------------------------------------------------------------


class _BatchCache:
    """What one transaction has looked up or written already (never kept across one)."""

    def __init__(self) -> None:
        self.patients: dict[str, Patient] = {}
        self.studies: dict[str, Study] = {}
        self.series: dict[str, Series] = {}
        self.recorded: set[str] = set()  # correspondence lookups known to be in the table
        self.pseudonyms: dict[str, str] = {}  # instance lookup -> stage-1 SOP UID
        self.instances: dict[str, Instance] = {}  # stage-1 SOP UID -> row
        self.loaded = False  # patients, studies and series of the batch are all in the dicts


def store_instance(*, session: Session, keyring: Keyring, record: InstanceRecord) -> StoreResult:
    """Write the rows of one de-identified instance (see :func:`store_batch`)."""
    return store_batch(session=session, keyring=keyring, records=[record])[0]


def store_batch(
    *, session: Session, keyring: Keyring, records: Sequence[InstanceRecord]
) -> list[StoreResult]:
    """Write the rows of de-identified instances whose files are already durable.

    An instance is known by the hospital's SOP Instance UID (correspondence kind
    ``instance``): one already stored with the same bytes at the same place is a duplicate
    and writes nothing; one stored with other bytes or elsewhere (the PACS corrected it) is
    replaced, and the file it leaves behind is returned in ``obsolete``. Patient, study and
    series rows are created on first sight and completed by later instances (a modality, a
    description the first one lacked). Correspondence rows map the hospital's patient ID and
    study, series and instance UIDs to their pseudonyms.

    New instances — nearly all of a busy ingest — are inserted in bulk, a few queries per
    batch whatever its size; duplicates and replacements go one by one.
    """
    cache = _BatchCache()
    _preload(session, keyring, records, cache)
    results: list[StoreResult | None] = [None] * len(records)
    pending: dict[str, tuple[int, InstanceRecord, Series]] = {}  # new, by stage-1 SOP UID
    copies: list[tuple[int, str]] = []  # (index, SOP UID) of a second copy in this batch
    for index, record in enumerate(records):
        lookup = keyring.lookup(INSTANCE, record.originals.sop_uid)
        known = cache.pseudonyms.get(lookup, record.sop_uid)
        previous = cache.instances.get(known) or cache.instances.get(record.sop_uid)
        if previous is None and record.sop_uid in pending:
            first = pending[record.sop_uid][1]
            if (first.path, first.sha256) == (record.path, record.sha256):
                copies.append((index, record.sop_uid))
                continue
            _insert_new(session, keyring, pending, cache, results)  # then replace it
            pending = {}
        elif previous is None:
            pending[record.sop_uid] = (index, record, _upsert_hierarchy(session, record, cache))
            continue
        results[index] = _store_one(session, keyring, record, cache)
    _insert_new(session, keyring, pending, cache, results)
    for index, sop_uid in copies:
        stored = cache.instances[sop_uid]
        results[index] = StoreResult(StoreStatus.DUPLICATE, stored.id)
    session.flush()
    return [r for r in results if r is not None]


def _insert_new(
    session: Session,
    keyring: Keyring,
    pending: dict[str, tuple[int, InstanceRecord, Series]],
    cache: _BatchCache,
    results: list[StoreResult | None],
) -> None:
    """Insert new instances, their reports and correspondence in a few statements."""
    if not pending:
        return
    session.flush()  # new patients, studies and series get their ids
    items = sorted(pending.values(), key=lambda item: item[0])
    now = utcnow()
    inserted = session.execute(
        insert(Instance).returning(Instance.id, sort_by_parameter_order=True),
        [
            {
                "sop_uid": record.sop_uid,
                "series_id": series.id,
                "sop_class_uid": record.sop_class_uid[:64],
                "instance_number": record.instance_number,
                "path": record.path,
                "size": record.size,
                "sha256": record.sha256,
                "transfer_syntax_uid": record.transfer_syntax_uid[:64],
                "received_at": now,
            }
            for _, record, series in items
        ],
    ).scalars()
    ids = list(inserted)
    session.execute(
        insert(DeidReport),
        [
            {
                "instance_id": instance_id,
                "profile": record.profile[:64],
                "pixels": record.pixels[:128],
                "actions": record.actions,
            }
            for instance_id, (_, record, _) in zip(ids, items, strict=True)
        ],
    )
    correspondence_rows: list[dict[str, Any]] = []
    for _, record, _ in items:
        _record_correspondence(session, keyring, record, cache, bulk=correspondence_rows)
    if correspondence_rows:
        session.execute(insert(Correspondence), correspondence_rows)
    for instance_id, (index, record, _) in zip(ids, items, strict=True):
        results[index] = StoreResult(StoreStatus.STORED, instance_id)
        cache.pseudonyms[keyring.lookup(INSTANCE, record.originals.sop_uid)] = record.sop_uid
    for row in session.execute(select(Instance).where(Instance.id.in_(ids))).scalars():
        cache.instances[row.sop_uid] = row


def _preload(
    session: Session, keyring: Keyring, records: Sequence[InstanceRecord], cache: _BatchCache
) -> None:
    """Look up what the batch needs in a few queries per chunk rather than a few per
    instance: the correspondence of its identifiers, its instances, patients, studies and
    series."""
    kinds: dict[str, str] = {}
    for record in records:
        originals = record.originals
        for kind, original in (
            (PATIENT, originals.patient_id),
            (STUDY, originals.study_uid),
            (SERIES, originals.series_uid),
            (INSTANCE, originals.sop_uid),
        ):
            if original:
                kinds[keyring.lookup(kind, original)] = kind
    for chunk in _chunks(sorted(kinds)):
        rows = session.execute(
            select(Correspondence.kind, Correspondence.lookup, Correspondence.pseudonym).where(
                Correspondence.lookup.in_(chunk)
            )
        )
        for kind, lookup, pseudonym in rows:
            if kinds.get(lookup) != kind:
                continue
            cache.recorded.add(lookup)
            if kind == INSTANCE:
                cache.pseudonyms[lookup] = pseudonym
    wanted = sorted({*cache.pseudonyms.values(), *(r.sop_uid for r in records)})
    for chunk in _chunks(wanted):
        for row in session.execute(select(Instance).where(Instance.sop_uid.in_(chunk))).scalars():
            cache.instances[row.sop_uid] = row
    _preload_hierarchy(session, records, cache)


def _preload_hierarchy(
    session: Session, records: Sequence[InstanceRecord], cache: _BatchCache
) -> None:
    for chunk in _chunks(sorted({r.subject_key for r in records})):
        for patient in session.execute(
            select(Patient).where(Patient.subject_key.in_(chunk))
        ).scalars():
            cache.patients[patient.subject_key] = patient
    for chunk in _chunks(sorted({r.study_uid for r in records})):
        for study in session.execute(select(Study).where(Study.study_uid.in_(chunk))).scalars():
            cache.studies[study.study_uid] = study
    for chunk in _chunks(sorted({r.series_uid for r in records})):
        for series in session.execute(select(Series).where(Series.series_uid.in_(chunk))).scalars():
            cache.series[series.series_uid] = series
    cache.loaded = True


def _store_one(
    session: Session, keyring: Keyring, record: InstanceRecord, cache: _BatchCache
) -> StoreResult:
    lookup = keyring.lookup(INSTANCE, record.originals.sop_uid)
    known = cache.pseudonyms.get(lookup, record.sop_uid)
    previous = cache.instances.get(known) or cache.instances.get(record.sop_uid)
    if previous is not None and previous.path == record.path and previous.sha256 == record.sha256:
        _record_correspondence(session, keyring, record, cache)
        return StoreResult(StoreStatus.DUPLICATE, previous.id)

    series = _upsert_hierarchy(session, record, cache)
    obsolete: list[str] = []
    if previous is None:
        instance = Instance(sop_uid=record.sop_uid)
        _fill_instance(instance, record, series)
        instance.report = DeidReport(profile=record.profile)
        _fill_report(instance.report, record)
        session.add(instance)
        status = StoreStatus.STORED
    else:
        # Re-sent with other content: the row follows the new file. A file at another place
        # (the patient or study changed) leaves the old one behind, and perhaps an empty series.
        instance = previous
        old_series = previous.series
        if previous.path != record.path:
            obsolete.append(previous.path)
        cache.instances.pop(previous.sop_uid, None)
        instance.sop_uid = record.sop_uid
        _fill_instance(instance, record, series)
        if instance.report is None:
            instance.report = DeidReport(profile=record.profile)
        _fill_report(instance.report, record)
        session.flush()
        if old_series is not series:
            _prune(session, old_series, cache)
        status = StoreStatus.REPLACED
    _record_correspondence(session, keyring, record, cache)
    session.flush()
    cache.instances[instance.sop_uid] = instance
    cache.pseudonyms[lookup] = instance.sop_uid
    return StoreResult(status, instance.id, obsolete)


def _record_correspondence(
    session: Session,
    keyring: Keyring,
    record: InstanceRecord,
    cache: _BatchCache,
    bulk: list[dict[str, Any]] | None = None,
) -> None:
    """Remember the hospital's identifiers of ``record`` (patient ID, study, series and
    instance UIDs) through :func:`node.store.correspondence.record`; a new instance's row,
    the one row nearly every arrival adds, is encrypted the same way and collected in
    ``bulk`` for one insert per batch."""
    originals = record.originals
    for kind, original, pseudonym in (
        (PATIENT, originals.patient_id, record.subject_key),
        (STUDY, originals.study_uid, record.study_uid),
        (SERIES, originals.series_uid, record.series_uid),
        (INSTANCE, originals.sop_uid, record.sop_uid),
    ):
        if not original:
            continue
        lookup = keyring.lookup(kind, original)
        if lookup in cache.recorded:
            continue
        cache.recorded.add(lookup)
        if bulk is not None and kind == INSTANCE:
            bulk.append(
                {
                    "kind": kind,
                    "lookup": lookup,
                    "pseudonym": pseudonym,
                    "ciphertext": keyring.encrypt(kind, original),
                    "key_id": keyring.current_id,
                    "created_at": utcnow(),
                }
            )
            continue
        correspondence.record(
            session=session, keyring=keyring, kind=kind, original=original, pseudonym=pseudonym
        )


def _upsert_hierarchy(session: Session, record: InstanceRecord, cache: _BatchCache) -> Series:
    patient = cache.patients.get(record.subject_key)
    if patient is None:
        patient = (
            None
            if cache.loaded
            else session.execute(
                select(Patient).where(Patient.subject_key == record.subject_key)
            ).scalar_one_or_none()
        )
        if patient is None:
            patient = Patient(subject_key=record.subject_key, sex="", birth_year=None)
            session.add(patient)
        cache.patients[record.subject_key] = patient
    _complete_patient(patient, record.patient)

    study = cache.studies.get(record.study_uid)
    if study is None:
        study = (
            None
            if cache.loaded
            else session.execute(
                select(Study).where(Study.study_uid == record.study_uid)
            ).scalar_one_or_none()
        )
        if study is None:
            study = Study(study_uid=record.study_uid, description="", modalities="")
            study.patient = patient
            session.add(study)
        cache.studies[record.study_uid] = study
    if study.patient is not patient:  # the PACS moved the study to another patient
        previous_patient = study.patient
        study.patient = patient
        session.flush()
        _prune_patient(session, previous_patient, cache)
    _complete_study(study, record.study, record.series.modality)

    series = cache.series.get(record.series_uid)
    if series is None:
        series = (
            None
            if cache.loaded
            else session.execute(
                select(Series).where(Series.series_uid == record.series_uid)
            ).scalar_one_or_none()
        )
        if series is None:
            series = Series(series_uid=record.series_uid)
            series.study = study
            session.add(series)
        cache.series[record.series_uid] = series
    if series.study is not study:
        previous_study = series.study
        series.study = study
        session.flush()
        _prune_study(session, previous_study, cache)
    _complete_series(series, record.series)
    return series


def _complete_patient(patient: Patient, fields: PatientFields) -> None:
    if fields.sex and not patient.sex:
        patient.sex = _text(fields.sex, 16)
    if fields.birth_year is not None and patient.birth_year is None:
        patient.birth_year = fields.birth_year


def _complete_study(study: Study, fields: StudyFields, modality: str) -> None:
    if fields.study_date is not None and study.study_date is None:
        study.study_date = fields.study_date
    if fields.description and not study.description:
        study.description = _text(fields.description, 128)
    if fields.patient_age_years is not None and study.patient_age_years is None:
        study.patient_age_years = fields.patient_age_years
    if modality:
        present = [m for m in (study.modalities or "").split("\\") if m]
        if modality not in present:
            joined = "\\".join(sorted({*present, modality}))
            if len(joined) <= 64:
                study.modalities = joined


_SERIES_TEXT = {
    "modality": 16,
    "body_part": 64,
    "description": 128,
    "protocol_name": 128,
    "manufacturer": 64,
    "model": 64,
    "contrast_agent": 64,
    "scanning_sequence": 64,
    "sequence_variant": 64,
}
_SERIES_VALUES = (
    "field_strength",
    "slice_thickness",
    "repetition_time",
    "echo_time",
    "inversion_time",
    "series_date",
)


def _complete_series(series: Series, fields: SeriesFields) -> None:
    """Fill what the series row lacks; the first instance that carries a value sets it."""
    for name, limit in _SERIES_TEXT.items():
        value = getattr(fields, name)
        if value and not getattr(series, name, None):
            setattr(series, name, _text(value, limit))
    for name in _SERIES_VALUES:
        value = getattr(fields, name)
        if value is not None and getattr(series, name, None) is None:
            setattr(series, name, value)


def _fill_instance(instance: Instance, record: InstanceRecord, series: Series) -> None:
    instance.series = series
    instance.sop_class_uid = record.sop_class_uid[:64]
    instance.instance_number = record.instance_number
    instance.path = record.path
    instance.size = record.size
    instance.sha256 = record.sha256
    instance.transfer_syntax_uid = record.transfer_syntax_uid[:64]


def _fill_report(report: DeidReport, record: InstanceRecord) -> None:
    report.profile = record.profile[:64]
    report.pixels = record.pixels[:128]
    report.actions = record.actions


def _prune(session: Session, series: Series, cache: _BatchCache) -> None:
    """Remove a series, study and patient that a replacement left without instances."""
    if _count(session, select(Instance.id).where(Instance.series_id == series.id)):
        return
    study = series.study
    cache.series.pop(series.series_uid, None)
    session.delete(series)
    session.flush()
    _prune_study(session, study, cache)


def _prune_study(session: Session, study: Study, cache: _BatchCache) -> None:
    if _count(session, select(Series.id).where(Series.study_id == study.id)):
        return
    patient = study.patient
    cache.studies.pop(study.study_uid, None)
    session.delete(study)
    session.flush()
    _prune_patient(session, patient, cache)


def _prune_patient(session: Session, patient: Patient, cache: _BatchCache) -> None:
    if _count(session, select(Study.id).where(Study.patient_id == patient.id)):
        return
    cache.patients.pop(patient.subject_key, None)
    session.delete(patient)
    session.flush()


def _count(session: Session, query: Select[Any]) -> int:
    return int(session.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def record_rejection(*, session: Session, rejection: Rejection) -> RejectedInstance:
    """Remember an arrival that was not stored, and why (PHI-free)."""
    row = RejectedInstance(
        source=rejection.source[:64],
        sop_class_uid=rejection.sop_class_uid[:64],
        modality=rejection.modality[:16],
        code=rejection.code[:64],
        reason=rejection.reason,
        job_id=rejection.job_id,
    )
    session.add(row)
    return row


def record_rejections(*, session: Session, rejections: Iterable[Rejection]) -> int:
    """Many rejections at once; a job id that no longer exists is dropped (the job was
    deleted while its instances were on their way)."""
    items = list(rejections)
    wanted = {r.job_id for r in items if r.job_id is not None}
    known: set[int] = set()
    if wanted:
        known = set(session.execute(select(Job.id).where(Job.id.in_(wanted))).scalars())
    for item in items:
        job_id = item.job_id if item.job_id in known else None
        record_rejection(
            session=session,
            rejection=Rejection(
                item.code, item.reason, item.source, item.sop_class_uid, item.modality, job_id
            ),
        )
    return len(items)


def delete_patient(*, session: Session, subject_key: str) -> list[Path]:
    """Delete a patient's rows (studies, series, instances, reports); the files they named.

    Returns the paths relative to the node's data folder: remove them with
    :func:`remove_files` after the transaction commits, so that a row never outlives its
    file. A crash in between leaves a patient folder without a patient row, which the ingest
    clears at its next start (:func:`orphan_subject_folders`). The correspondence rows stay:
    restoring the patient from the PACS gives the same pseudonyms again.
    """
    patient = session.execute(
        select(Patient).where(Patient.subject_key == subject_key)
    ).scalar_one_or_none()
    if patient is None:
        return []
    paths = [
        Path(p)
        for p in session.execute(
            select(Instance.path)
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.patient_id == patient.id)
        ).scalars()
    ]
    session.delete(patient)
    session.flush()
    return paths


def path_in_use(*, session: Session, path: str) -> bool:
    """Whether an instance row points at this stored file."""
    return session.scalar(select(Instance.id).where(Instance.path == path).limit(1)) is not None


def remove_files(data_dir: Path, paths: Iterable[Path | str]) -> int:
    """Remove stored files (relative to ``data_dir``) and the folders they leave empty."""
    removed = 0
    root = data_dir.resolve()
    for relative in paths:
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            continue  # a path row pointing outside the data folder is never followed
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        _remove_empty_parents(path.parent, root / "store")
    return removed


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def orphan_subject_folders(*, session: Session, store_dir: Path) -> list[Path]:
    """Folders of the store named for a subject key that has no patient row.

    They are what a crash leaves behind between deleting a patient's rows and its files, or
    between writing a new patient's first file and its rows (the spool holds that instance
    still, and stores it again). Call it while nothing is being stored.
    """
    if not store_dir.is_dir():
        return []
    known = subject_keys(session=session)
    return [
        Path(entry.path)
        for entry in os.scandir(store_dir)
        if entry.is_dir(follow_symlinks=False)
        and not entry.name.startswith(".")
        and entry.name not in known
    ]


def remove_folders(folders: Iterable[Path]) -> int:
    count = 0
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        count += 1
    return count


def relative_store_path(store_relative: str) -> str:
    """The ``Instance.path`` of a file at ``store/<store_relative>`` (forward slashes)."""
    return str(PurePosixPath("store") / store_relative)


def _text(value: str, limit: int) -> str:
    return value[:limit]


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
