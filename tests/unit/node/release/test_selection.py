"""A request names a cohort: the node resolves it with its own query engine and releases the
cohort's studies (only the matching ones when the cohort has imaging criteria) and the
cohort's clinical records, under the project's keys and date shift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.release import RecordFormat, Selection, StudyManifest
from node.clinical import service as clinical
from node.clinical.service import ImportContext
from node.release import selection as selections
from node.release import service as releases
from node.settings import NodeSettings
from node.store.correspondence import Keyring, new_key, parse_key
from node.store.db import transaction
from node.store.models import Study
from tests.conftest import PATIENT_ID, SECRET, ct_dataset
from tests.unit.node.clinical.conftest import IDENTIFIERS, hospital_bundle
from tests.unit.node.release.conftest import request_task
from tests.unit.node.test_qa import store_instance

DEMENTIA_WITH_CT = {
    "inclusion": {
        "all": [
            {"kind": "condition", "concept": "ICD10CM:F03.90"},
            {"kind": "imaging", "modality": ["CT"]},
        ]
    }
}


def store(
    sessions: sessionmaker[Session], data_dir: Path, patient: str, study: int, modality: str
) -> str:
    """One stage-1 instance of ``patient``'s study; the stage-1 study UID."""
    ds = ct_dataset(
        patient_id=patient,
        study_uid=f"1.2.826.0.1.3680043.10.4.{study}",
        series_uid=f"1.2.826.0.1.3680043.10.4.{study}.1",
        sop_uid=f"1.2.826.0.1.3680043.10.4.{study}.1.1",
    )
    ds.Modality = modality
    with transaction(sessions) as session, session.no_autoflush:  # a patient's second study
        uid: str = store_instance(session, data_dir, ds).series.study.study_uid
    return uid


@pytest.fixture
def hospital(sessions: sessionmaker[Session], settings: NodeSettings) -> dict[str, str]:
    """The dementia patient (PATIENT_ID) with a CT and an MR study and clinical records, and
    another patient with a CT only; stage-1 study UIDs by name."""
    uids = {
        "ct": store(sessions, settings.data_dir, PATIENT_ID, 1, "CT"),
        "mr": store(sessions, settings.data_dir, PATIENT_ID, 2, "MR"),
        "other": store(sessions, settings.data_dir, "MRN0000002", 3, "CT"),
    }
    context = ImportContext(
        rules=clinical.build_rules("pseudonymize", "site", SECRET),
        keyring=Keyring(current=parse_key(new_key())),
        actor="test",
    )
    with transaction(sessions) as session:
        clinical.import_fhir_bundle(session=session, context=context, bundle=hospital_bundle())
    return uids


def study_uids(sessions: sessionmaker[Session], cohort: dict[str, Any]) -> set[str]:
    with transaction(sessions) as session:
        resolved = selections.resolve(
            session=session, selection=Selection.model_validate({"cohort": cohort})
        )
        found = session.scalars(select(Study.study_uid).where(Study.id.in_(resolved.study_ids)))
        return set(found)


def release_cohort(
    sessions: sessionmaker[Session], settings: NodeSettings, request_id: int, project: str
) -> list[StudyManifest]:
    task = request_task(request_id, project, [])
    task.payload["selection"] = {"cohort": DEMENTIA_WITH_CT}
    with transaction(sessions) as session:
        releases.record_request(session=session, task=task)
        releases.approve(session=session, hub_request_id=request_id, actor="it")
        result = releases.release(session=session, settings=settings, hub_request_id=request_id)
    assert result.held == []
    return result.manifests


def test_a_selection_must_name_a_cohort_studies_or_subjects() -> None:
    with pytest.raises(ValidationError, match="give a cohort, study_uids or subject_keys"):
        Selection()


def test_an_imaging_criterion_releases_only_the_matching_studies_of_the_cohort(
    sessions: sessionmaker[Session], hospital: dict[str, str]
) -> None:
    assert study_uids(sessions, DEMENTIA_WITH_CT) == {hospital["ct"]}


def test_a_cohort_without_imaging_criteria_releases_all_its_patients_studies(
    sessions: sessionmaker[Session], hospital: dict[str, str]
) -> None:
    cohort = {"inclusion": {"kind": "condition", "concept": "ICD10CM:F03.90"}}
    assert study_uids(sessions, cohort) == {hospital["ct"], hospital["mr"]}


def test_hospital_it_sees_what_a_cohort_selects_before_approving(
    sessions: sessionmaker[Session], hospital: dict[str, str]
) -> None:
    with transaction(sessions) as session:
        selection = Selection.model_validate({"cohort": DEMENTIA_WITH_CT})
        counted = selections.count(session=session, selection=selection)
    assert (counted.patients, counted.studies, counted.instances) == (1, 1, 1)
    assert counted.patients_with_records == 1


def test_the_cohort_is_released_as_its_study_and_its_patients_records(
    sessions: sessionmaker[Session], settings: NodeSettings, hospital: dict[str, str]
) -> None:
    study, records = release_cohort(sessions, settings, 1, "dementia")
    assert len(study.files) == 1 and study.records == []
    assert records.files == [] and records.subject_key == study.subject_key
    formats = {Path(r.path).name: r.format for r in records.records}
    assert formats == {"bundle.json": RecordFormat.FHIR_BUNDLE, "person.csv": RecordFormat.OMOP_CSV}
    assert all(r.path.startswith(f"{study.subject_key}/clinical/") for r in records.records)


def test_released_records_hold_the_project_key_a_shifted_date_and_no_identifier(
    sessions: sessionmaker[Session], settings: NodeSettings, hospital: dict[str, str]
) -> None:
    _, records = release_cohort(sessions, settings, 1, "dementia")
    root = settings.data_dir / "release" / "dementia"
    bundle = json.loads((root / records.subject_key / "clinical" / "bundle.json").read_text())
    conditions = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"
    ]
    assert conditions
    for condition in conditions:
        assert condition["subject"]["reference"] == f"Patient/{records.subject_key}"
        assert not condition["onsetDateTime"].startswith("2023-03-02")  # the hospital's date
    for record in records.records:
        text = (root / record.path).read_text()
        assert not [value for value in IDENTIFIERS if value in text], record.path


def test_records_released_again_to_the_project_are_identical_and_another_project_differs(
    sessions: sessionmaker[Session], settings: NodeSettings, hospital: dict[str, str]
) -> None:
    first = release_cohort(sessions, settings, 1, "dementia")
    again = release_cohort(sessions, settings, 2, "dementia")
    other = release_cohort(sessions, settings, 3, "stroke")
    digests = [[(r.path, r.sha256) for m in run for r in m.records] for run in (first, again)]
    assert digests[0] == digests[1]
    assert [m.study_uid for m in first] == [m.study_uid for m in again]
    assert {m.subject_key for m in first}.isdisjoint({m.subject_key for m in other})
    assert {m.study_uid for m in first}.isdisjoint({m.study_uid for m in other})
