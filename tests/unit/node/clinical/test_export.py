"""Stage 2: a cohort released to a project, in step with the project's DICOM release."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.crypto import Pseudonymizer, SiteSecret
from common.deid.engine import Deidentified
from common.deid.profile import load_profile
from node.clinical import export, omop, service
from node.clinical.models import Person
from node.clinical.rules import ClinicalPseudonymizer
from node.clinical.service import ImportContext
from node.store.db import transaction
from tests.conftest import PATIENT_ID, SECRET, EngineFactory, ct_dataset
from tests.unit.node.clinical.conftest import OMOP_DIR, STUDY_UID, hospital_bundle


def project_rules(project: str) -> ClinicalPseudonymizer:
    profile = load_profile("anonymize")
    mapper = Pseudonymizer(
        SiteSecret(SECRET),
        project,
        subject_key_prefix=profile.subject_key_prefix,
        min_offset_days=profile.min_offset_days,
        max_offset_days=profile.max_offset_days,
    )
    return ClinicalPseudonymizer(profile, mapper)


@pytest.fixture
def stored(sessions: sessionmaker[Session], context: ImportContext) -> list[str]:
    """The hospital bundle and the OMOP persons, imported at stage 1; their subject keys."""
    with transaction(sessions) as session:
        service.import_fhir_bundle(session=session, context=context, bundle=hospital_bundle())
    for table, path in omop.table_files(OMOP_DIR):
        with transaction(sessions) as session:
            service.import_omop_table(session=session, context=context, path=path, table=table)
    with transaction(sessions) as session:
        return sorted(session.execute(select(Person.subject_key)).scalars())


def run_export(
    sessions: sessionmaker[Session], keys: list[str], out: Path, project: str = "project-a"
) -> export.ExportResult:
    with transaction(sessions) as session:
        return export.export_cohort(
            session=session, subject_keys=keys, rules=project_rules(project), out_dir=out
        )


def dicom_release(make_engine: EngineFactory) -> tuple[Deidentified, dt.date]:
    """The patient's CT through stage 1 (the node) and stage 2 (project-a)."""
    stage1 = make_engine("pseudonymize", "site").deidentify(ct_dataset(study_uid=STUDY_UID))
    stage2 = make_engine("anonymize", "project-a").deidentify(dcmread(io.BytesIO(stage1.data)))
    released = dcmread(io.BytesIO(stage2.data)).StudyDate
    return stage2, dt.datetime.strptime(released, "%Y%m%d").date()


def resources(out: Path, resource_type: str) -> list[dict[str, object]]:
    bundle = json.loads((out / export.BUNDLE_FILE).read_text())
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
    ]


def test_the_release_is_a_valid_r4_bundle_plus_omop_tables(
    sessions: sessionmaker[Session], stored: list[str], tmp_path: Path
) -> None:
    result = run_export(sessions, stored, tmp_path)
    Bundle.model_validate_json((tmp_path / export.BUNDLE_FILE).read_text())
    assert result.patients == 4
    assert result.rows["measurement"] == 1265
    assert {p.name for p in tmp_path.glob("*.csv")} >= {"person.csv", "measurement.csv"}


def test_records_get_the_project_key_uids_and_date_shift_the_images_get(
    sessions: sessionmaker[Session],
    context: ImportContext,
    stored: list[str],
    tmp_path: Path,
    make_engine: EngineFactory,
) -> None:
    key = context.rules.subject_key(PATIENT_ID)
    assert key is not None
    run_export(sessions, [key], tmp_path)
    images, released_study_date = dicom_release(make_engine)
    shift = released_study_date - dt.date(2023, 4, 15)
    (patient,) = resources(tmp_path, "Patient")
    (study,) = resources(tmp_path, "ImagingStudy")
    conditions = resources(tmp_path, "Condition")
    assert patient["id"] == images.report.subject_key
    assert study["identifier"] == [
        {"system": "urn:dicom:uid", "value": f"urn:oid:{images.report.study_instance_uid}"}
    ]
    assert study["started"] == released_study_date.isoformat()
    assert {c["onsetDateTime"] for c in conditions} == {(dt.date(2023, 3, 2) + shift).isoformat()}
    assert conditions[0]["subject"] == {"reference": f"Patient/{patient['id']}"}


def test_nothing_of_stage_1_is_left_in_the_release(
    sessions: sessionmaker[Session], stored: list[str], tmp_path: Path
) -> None:
    run_export(sessions, stored, tmp_path / "release")
    released = "\n".join(p.read_text() for p in (tmp_path / "release").iterdir())
    for key in stored:
        assert key not in released
    assert STUDY_UID not in released
    assert "2023-03-02" not in released  # the real diagnosis date
    assert "2013-05-17" not in released  # a real OMOP measurement date


def test_omop_rows_carry_the_project_key_and_shifted_dates(
    sessions: sessionmaker[Session], stored: list[str], tmp_path: Path
) -> None:
    run_export(sessions, stored, tmp_path)
    with (tmp_path / "person.csv").open() as f:
        persons = list(csv.DictReader(f))
    with (tmp_path / "measurement.csv").open() as f:
        measurements = list(csv.DictReader(f))
    keys = {row["person_id"] for row in persons}
    assert all(key.startswith("SUBJ") for key in keys)
    assert {row["person_id"] for row in measurements} <= keys
    assert all(row["measurement_source_value"] == "" for row in measurements)
    assert all(len(row["measurement_date"]) == 10 for row in measurements)


def test_two_projects_get_different_keys(
    sessions: sessionmaker[Session], stored: list[str], tmp_path: Path
) -> None:
    run_export(sessions, stored, tmp_path / "a", "project-a")
    run_export(sessions, stored, tmp_path / "b", "project-b")
    ids_a = {p["id"] for p in resources(tmp_path / "a", "Patient")}
    ids_b = {p["id"] for p in resources(tmp_path / "b", "Patient")}
    assert len(ids_a) == len(ids_b) == 4
    assert not ids_a & ids_b


def test_a_subject_key_not_on_the_node_is_refused(
    sessions: sessionmaker[Session], stored: list[str], tmp_path: Path
) -> None:
    with pytest.raises(export.UnknownSubject, match="1 of the subject keys"):
        run_export(sessions, [*stored, "PSNOTAKEY"], tmp_path)
    assert not (tmp_path / export.BUNDLE_FILE).exists()
