"""What a data request selects on this node: the stage-1 studies to release and the stage-1
patients whose clinical records go with them.

A researcher at the hub names a cohort (the federated query's definition); the node
resolves it with its own query engine (:class:`node.query.compile.Compiler`), exactly as it
counts it. When the cohort has imaging criteria (not under a ``not``), only the studies
holding a matching series are released — "an MR within 90 days of the diagnosis" releases
that MR's study — otherwise every study of the cohort's patients. Hospital IT and tests may
name stage-1 study UIDs and subject keys instead, or as well: the release is the union.

Clinical records go with every selected patient the fact store knows: the cohort's
patients, the named subjects and the patients of the named studies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.schemas.cohort import Cohort
from common.schemas.release import Selection
from node.clinical.models import Person
from node.query.compile import Compiler
from node.query.concepts import ontology_expander
from node.query.labels import label_new_series
from node.release.schemas import SelectionCount
from node.store.models import Instance, Patient, Series, Study

logger = logging.getLogger(__name__)

_IN_BATCH = 500  # values per IN (...) — well under every dialect's limit on parameters


@dataclass(frozen=True)
class Resolved:
    """The stage-1 study ids to release and the stage-1 subject keys whose records go too."""

    study_ids: frozenset[int]
    record_subjects: frozenset[str]
    patients: int  # distinct patients of the studies and the records


def resolve(*, session: Session, selection: Selection) -> Resolved:
    study_ids: set[int] = set()
    subjects: set[str] = set(selection.subject_keys)
    if selection.cohort is not None:
        cohort_subjects, cohort_studies = _cohort(session, selection.cohort)
        subjects |= cohort_subjects
        study_ids |= cohort_studies
    for batch in _batches(selection.study_uids):
        study_ids.update(session.scalars(select(Study.id).where(Study.study_uid.in_(batch))))
    for batch in _batches(sorted(selection.subject_keys)):
        study_ids.update(
            session.scalars(
                select(Study.id)
                .join(Patient, Study.patient_id == Patient.id)
                .where(Patient.subject_key.in_(batch))
            )
        )
    owners = _owners(session, study_ids)
    known = _with_records(session, subjects | owners)
    return Resolved(frozenset(study_ids), frozenset(known), len(owners | known))


@dataclass(frozen=True)
class Source:
    """One stage-1 file to release: where it is, its SOP Instance UID and its study."""

    path: str  # relative to the node's data folder
    sop_uid: str
    study_id: int


def sources(*, session: Session, resolved: Resolved) -> list[Source]:
    """The selected studies' files, study by study, in a stable order (stage-1 UIDs)."""
    found: list[Source] = []
    for batch in _batches(sorted(resolved.study_ids)):
        rows = session.execute(
            select(Instance.path, Instance.sop_uid, Series.study_id)
            .join(Series, Instance.series_id == Series.id)
            .where(Series.study_id.in_(batch))
        )
        found.extend(Source(path, sop_uid, study_id) for path, sop_uid, study_id in rows)
    return sorted(found, key=lambda source: (source.study_id, source.sop_uid))


def count(*, session: Session, selection: Selection) -> SelectionCount:
    """What the selection selects on this node today, in counts (for hospital IT's decision)."""
    resolved = resolve(session=session, selection=selection)
    files = 0
    size = 0
    for batch in _batches(sorted(resolved.study_ids)):
        found, total = session.execute(
            select(func.count(Instance.id), func.coalesce(func.sum(Instance.size), 0))
            .join(Series, Instance.series_id == Series.id)
            .where(Series.study_id.in_(batch))
        ).one()
        files += int(found)
        size += int(total)
    return SelectionCount(
        patients=resolved.patients,
        studies=len(resolved.study_ids),
        instances=files,
        megabytes=round(size / 1e6, 1),
        patients_with_records=len(resolved.record_subjects),
    )


def _cohort(session: Session, cohort: Cohort) -> tuple[set[str], set[int]]:
    label_new_series(session=session)  # imaging criteria read the series' labels
    compiler = Compiler(
        cohort=cohort,
        dialect=session.get_bind().dialect.name,
        expander=ontology_expander(session),
    )
    statement = compiler.patients()
    subjects = set(session.scalars(statement))
    matched = compiler.matched_series(statement.subquery("cohort"))
    studies = set(session.scalars(select(matched.c.study_id).distinct()))
    logger.info("cohort resolved: %d patients, %d studies", len(subjects), len(studies))
    return subjects, studies


def _owners(session: Session, study_ids: set[int]) -> set[str]:
    owners: set[str] = set()
    for batch in _batches(sorted(study_ids)):
        owners.update(
            session.scalars(
                select(Patient.subject_key)
                .join(Study, Study.patient_id == Patient.id)
                .where(Study.id.in_(batch))
            )
        )
    return owners


def _with_records(session: Session, subjects: set[str]) -> set[str]:
    """The subject keys the fact store holds records of."""
    known: set[str] = set()
    for batch in _batches(sorted(subjects)):
        known.update(
            session.scalars(select(Person.subject_key).where(Person.subject_key.in_(batch)))
        )
    return known


def _batches(values: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_BATCH):
        yield list(values[start : start + _IN_BATCH])
