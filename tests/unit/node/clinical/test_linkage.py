"""A patient's images and records meet under one subject key, and an ImagingStudy joins
the stored DICOM study: what the query engine relies on."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from node.clinical import service
from node.clinical.models import Condition, ImagingStudy, Person
from node.clinical.service import ImportContext
from node.store import correspondence
from node.store.db import transaction
from node.store.models import Patient, Series, Study
from tests.conftest import PATIENT_ID, ct_dataset
from tests.unit.node.clinical.conftest import STUDY_UID, hospital_bundle
from tests.unit.node.test_qa import store_instance

DEMENTIA = ("http://snomed.info/sct", "52448006")


def store_images(sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path) -> str:
    """Store a stage-1 CT of the patient as the ingest does; its subject key."""
    with transaction(sessions) as session:
        instance = store_instance(session, tmp_path, ct_dataset(study_uid=STUDY_UID))
        subject_key = instance.series.study.patient.subject_key
        correspondence.record(
            session=session,
            keyring=context.keyring,
            kind="patient",
            original=PATIENT_ID,
            pseudonym=subject_key,
        )
    return subject_key


def import_records(sessions: sessionmaker[Session], context: ImportContext) -> None:
    with transaction(sessions) as session:
        service.import_fhir_bundle(session=session, context=context, bundle=hospital_bundle())


def test_records_imported_after_the_images_join_the_images_patient(
    sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path
) -> None:
    subject_key = store_images(sessions, context, tmp_path)
    import_records(sessions, context)
    with transaction(sessions) as session:
        joined = session.execute(
            select(Person.subject_key).join(Patient, Patient.subject_key == Person.subject_key)
        ).scalar_one()
        originals = correspondence.originals_for(
            session=session, keyring=context.keyring, kind="patient", pseudonym=subject_key
        )
    assert joined == subject_key
    assert originals == [PATIENT_ID]  # one correspondence row, shared


def test_images_arriving_after_the_records_join_them_too(
    sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path
) -> None:
    import_records(sessions, context)
    subject_key = store_images(sessions, context, tmp_path)
    with transaction(sessions) as session:
        assert session.execute(select(Person.subject_key)).scalar_one() == subject_key


def test_an_imaging_study_joins_the_stored_dicom_study(
    sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path
) -> None:
    store_images(sessions, context, tmp_path)
    import_records(sessions, context)
    with transaction(sessions) as session:
        study = session.execute(
            select(Study).join(ImagingStudy, ImagingStudy.study_uid == Study.study_uid)
        ).scalar_one()
        record = session.execute(select(ImagingStudy)).scalar_one()
    assert study.study_uid != STUDY_UID
    assert record.modalities == "MR"
    assert record.date is not None and record.date.isoformat() == "2023-04-15"


def test_dementia_with_a_study_within_90_days_is_answered_in_sql(
    sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path
) -> None:
    store_images(sessions, context, tmp_path)
    import_records(sessions, context)
    days_between = func.abs(func.julianday(Study.study_date) - func.julianday(Condition.date))
    query = (
        select(func.count(func.distinct(Condition.subject_key)))
        .join(Patient, Patient.subject_key == Condition.subject_key)
        .join(Study, Study.patient_id == Patient.id)
        .join(Series, and_(Series.study_id == Study.id, Series.modality == "CT"))
        .where(Condition.system == DEMENTIA[0], Condition.code == DEMENTIA[1])
    )
    with transaction(sessions) as session:
        assert session.execute(query.where(days_between <= 90)).scalar_one() == 1
        assert session.execute(query.where(days_between <= 30)).scalar_one() == 0
