"""The clinical rules: validated on load like the DICOM rules, applied with the DICOM
engine's own subject keys, UIDs and date offsets."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydicom import dcmread

from common.crypto import Pseudonymizer, SiteSecret
from common.deid.engine import Engine
from common.deid.exceptions import ProfileError
from common.deid.profile import FHIR_R4_ELEMENTS, ClinicalAction, load_profile, parse_profile
from node.clinical.rules import ClinicalPseudonymizer, PatientRef, shift_date
from tests.conftest import PATIENT_ID, SECRET, EngineFactory, ct_dataset
from tests.unit.node.clinical.conftest import IDENTIFIERS, STUDY_UID, hospital_bundle

BASE = "name: site\noptions: [retain_longitudinal_full_dates]\n"


def rules_for(profile_name: str, project: str) -> ClinicalPseudonymizer:
    profile = load_profile(profile_name)
    mapper = Pseudonymizer(
        SiteSecret(SECRET),
        project,
        subject_key_prefix=profile.subject_key_prefix,
        min_offset_days=profile.min_offset_days,
        max_offset_days=profile.max_offset_days,
    )
    return ClinicalPseudonymizer(profile, mapper)


def pseudonymize(
    rules: ClinicalPseudonymizer, resource: dict[str, Any], patient: PatientRef
) -> dict[str, Any]:
    def patients(reference: str) -> PatientRef | None:
        return patient if reference.startswith("urn:uuid:7f1d6a52") else None

    return rules.fhir_resource(resource, patient, patients, lambda _: None)


def resources() -> list[dict[str, Any]]:
    return [entry["resource"] for entry in hospital_bundle()["entry"]]


def test_the_profile_knows_the_elements_and_dates_the_r4b_models_define() -> None:
    date_marks = ("Date()", "DateTime()", "Instant()", "PeriodType")
    for resource_type, elements in FHIR_R4_ELEMENTS.items():
        fields = get_fhir_model_class(resource_type).model_fields
        expected = {
            info.alias or name: any(mark in str(info.annotation) for mark in date_marks)
            for name, info in fields.items()
            if not name.endswith("__ext") and name != "fhir_comments"
        }
        assert elements == expected, resource_type


def test_the_built_in_profiles_carry_clinical_rules_for_every_supported_type() -> None:
    for name in ("pseudonymize", "anonymize"):
        clinical = load_profile(name).clinical
        assert clinical is not None
        assert len(clinical.fhir) == 9 and len(clinical.omop) == 8
    assert load_profile("basic").clinical is None


def test_stage_1_keeps_dates_and_stage_2_shifts_them() -> None:
    stage1 = load_profile("pseudonymize").clinical
    stage2 = load_profile("anonymize").clinical
    assert stage1 is not None and stage2 is not None
    assert stage1.fhir["Condition"]["onsetDateTime"].action is ClinicalAction.KEEP
    assert stage2.fhir["Condition"]["onsetDateTime"].action is ClinicalAction.DATE_SHIFT
    assert stage2.omop["measurement"]["measurement_date"].action is ClinicalAction.DATE_SHIFT


@pytest.mark.parametrize(
    ("clinical", "line", "message"),
    [
        ("  fhir:\n    Patient:\n      nmae: keep\n", 6, "Patient has no element 'nmae'"),
        ("  fhir:\n    Patient:\n      name: kep\n", 6, "unknown action 'kep'"),
        ("  fhir:\n    Patient:\n      gender: date-shift\n", 6, "applies to dates only"),
        ("  fhir:\n    Claim: {id: keep}\n", 5, "unknown key 'Claim'"),
        ("  omop:\n    person:\n      shoe_size: keep\n", 6, "no column 'shoe_size'"),
        ("  omop:\n    person:\n      birth_datetime: {generalize: week}\n", 6, "year or month"),
        ("  patient_identifier: {type: MR, system: x}\n", 4, "give one of type"),
    ],
)
def test_a_bad_clinical_rule_is_reported_with_its_line(
    clinical: str, line: int, message: str
) -> None:
    with pytest.raises(ProfileError, match=message) as caught:
        parse_profile(f"{BASE}clinical:\n{clinical}", "site.yaml")
    assert caught.value.line == line


def test_names_contacts_identifiers_and_text_are_removed_and_birth_date_kept_to_the_year() -> None:
    rules = rules_for("pseudonymize", "site")
    patient = PatientRef(rules.mapper.subject_key(PATIENT_ID))
    result = pseudonymize(rules, resources()[0], patient)
    assert set(result) == {"resourceType", "id", "gender", "birthDate"}
    assert result["birthDate"] == "1947"
    assert result["id"] == patient.subject_key
    assert not any(identifier in str(result) for identifier in IDENTIFIERS)


def test_references_are_rewritten_to_the_subject_key_and_notes_dropped() -> None:
    rules = rules_for("pseudonymize", "site")
    patient = PatientRef(rules.mapper.subject_key(PATIENT_ID))
    condition = pseudonymize(rules, resources()[1], patient)
    assert condition["subject"] == {"reference": f"Patient/{patient.subject_key}"}
    assert "note" not in condition
    assert condition["onsetDateTime"] == "2023-03-02T10:00:00+01:00"  # stage 1 keeps dates


def test_the_subject_key_is_the_one_the_dicom_engine_gives_the_same_patient() -> None:
    rules = rules_for("pseudonymize", "site")
    dicom = Engine(rules.profile, rules.mapper).deidentify(ct_dataset(patient_id=PATIENT_ID))
    assert rules.subject_key(PATIENT_ID) == dicom.report.subject_key


def test_the_imaging_study_uid_is_mapped_as_the_dicom_engine_maps_it() -> None:
    rules = rules_for("pseudonymize", "site")
    patient = PatientRef(rules.mapper.subject_key(PATIENT_ID))
    study = pseudonymize(rules, resources()[3], patient)
    dicom = Engine(rules.profile, rules.mapper).deidentify(ct_dataset(study_uid=STUDY_UID))
    assert study["identifier"][0]["value"] == f"urn:oid:{dicom.report.study_instance_uid}"
    assert study["series"][0]["uid"] != f"{STUDY_UID}.1"
    assert study["series"][0]["modality"]["code"] == "MR"
    assert "description" not in study


def test_stage_2_shifts_every_date_by_the_offset_the_patients_images_get(
    make_engine: EngineFactory,
) -> None:
    rules = rules_for("anonymize", "project-a")
    patient = rules.patient(PATIENT_ID, rules.mapper.subject_key(PATIENT_ID))
    dicom = make_engine("anonymize", "project-a").deidentify(ct_dataset(study_date="20230415"))
    shifted_study = dt.datetime.strptime(dcmread(io.BytesIO(dicom.data)).StudyDate, "%Y%m%d")
    dicom_offset = (shifted_study.date() - dt.date(2023, 4, 15)).days
    condition = pseudonymize(rules, resources()[1], patient)
    assert patient.offset_days == dicom_offset
    assert condition["onsetDateTime"] == shift_date("2023-03-02T10:00:00+01:00", dicom_offset)
    assert condition["subject"]["reference"].startswith("Patient/SUBJ")


@pytest.mark.parametrize(
    ("text", "days", "expected"),
    [
        ("2023-03-02", -10, "2023-02-20"),
        ("2023-03-02T10:00:00+01:00", 30, "2023-04-01T10:00:00+01:00"),
        ("2023-03", -40, "2023-01"),
        ("2023", -400, "2021"),
    ],
)
def test_a_date_keeps_its_precision_and_time_of_day_when_shifted(
    text: str, days: int, expected: str
) -> None:
    assert shift_date(text, days) == expected


def test_an_omop_row_keeps_only_ruled_columns() -> None:
    rules = rules_for("pseudonymize", "site")
    patient = PatientRef(rules.mapper.subject_key(PATIENT_ID))
    row = {
        "person_id": "1",
        "gender_concept_id": "8532",
        "year_of_birth": "1947",
        "month_of_birth": "3",
        "day_of_birth": "12",
        "birth_datetime": "1947-03-12 00:00:00",
        "person_source_value": PATIENT_ID,
        "gender_source_value": "F",
    }
    result = rules.omop_row("person", row, patient)
    assert result["person_id"] == patient.subject_key
    assert result["birth_datetime"] == "1947"
    assert result["month_of_birth"] == result["day_of_birth"] == ""
    assert result["person_source_value"] == ""
    assert set(result) == set(row)
