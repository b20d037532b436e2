"""The hub validates released clinical records (a FHIR R4 Bundle, OMOP CDM 5.4 tables) and
scans them itself: a finding names the file and the field or line, never the value."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest

from common.deid.profile import OMOP_COLUMNS
from common.schemas.release import RecordFile, RecordFormat
from hub.curation import records
from hub.release.exceptions import ManifestInvalid

SUBJECT = "SUBJQ4ZP7WLD2M5K"
LATEST = dt.date(2026, 11, 27)
PHONE = "+31 20 555 0199"


def bundle(*resources: dict[str, Any]) -> bytes:
    patient = {"resourceType": "Patient", "id": SUBJECT, "gender": "female", "birthDate": "1950"}
    entries = [{"resource": r} for r in (patient, *resources)]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).encode()


def condition(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": "C1",
        "subject": {"reference": f"Patient/{SUBJECT}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "52448006"}]},
        "onsetDateTime": "2019-05-02",
        **fields,
    }


def entry(name: str, data: bytes) -> RecordFile:
    kind = RecordFormat.FHIR_BUNDLE if name.endswith(".json") else RecordFormat.OMOP_CSV
    sha = hashlib.sha256(data).hexdigest()
    return RecordFile(
        path=f"{SUBJECT}/clinical/{name}", format=kind, size=len(data), sha256=sha, chunks=[sha]
    )


def check(name: str, data: bytes) -> list[str]:
    _, findings = records.check(entry(name, data), data, subject_key=SUBJECT, latest_date=LATEST)
    return findings


def table(name: str, *rows: dict[str, str]) -> bytes:
    columns = OMOP_COLUMNS[name]
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def test_a_clean_bundle_passes_with_its_resources_counted() -> None:
    data = bundle(condition())
    counts, findings = records.check(
        entry("bundle.json", data), data, subject_key=SUBJECT, latest_date=LATEST
    )
    assert (dict(counts), findings) == ({"Patient": 1, "Condition": 1}, [])


def test_a_bundle_fhir_refuses_is_refused_naming_the_file_and_where() -> None:
    data = bundle(condition(mood="sad"))
    with pytest.raises(ManifestInvalid, match=r"bundle.json: not a valid FHIR R4 Bundle \(at en"):
        check("bundle.json", data)


def test_a_telephone_number_in_a_note_is_found_without_quoting_it() -> None:
    [finding] = check("bundle.json", bundle(condition(note=[{"text": f"call {PHONE}"}])))
    assert "entry[1] (Condition): note[0].text holds what looks like a telephone number" in finding
    assert PHONE not in finding


def test_a_date_after_the_shifted_range_is_found() -> None:
    [finding] = check("bundle.json", bundle(condition(onsetDateTime="2026-12-01")))
    assert finding.endswith("onsetDateTime is a date outside the shifted range")


def test_a_named_patient_with_a_full_birth_date_is_found() -> None:
    data = json.loads(bundle())
    data["entry"][0]["resource"].update(name=[{"family": "Doe"}], birthDate="1950-03-04")
    found = check("bundle.json", json.dumps(data).encode())
    assert [f.split(": ")[-1] for f in found] == [
        "name is not empty",
        "birthDate is finer than the year",
    ]


def test_a_reference_to_another_patient_is_found() -> None:
    subject = {"reference": "Patient/SUBJOTHERPATIENT"}
    [finding] = check("bundle.json", bundle(condition(subject=subject)))
    assert "subject.reference names another patient" in finding


def test_an_omop_table_with_other_columns_is_refused_naming_the_line() -> None:
    with pytest.raises(ManifestInvalid, match=r"person.csv: line 1: not the person table"):
        check("person.csv", b"person_id,name\nSUBJ,Doe\n")


def test_an_omop_row_of_another_person_or_out_of_range_is_found_by_line_and_column() -> None:
    rows = (
        {"condition_occurrence_id": "A", "person_id": SUBJECT, "condition_concept_id": "1"},
        {"condition_occurrence_id": "B", "person_id": "SUBJOTHER", "condition_concept_id": "1"},
        {
            "condition_occurrence_id": "C",
            "person_id": SUBJECT,
            "condition_start_date": "2027-01-01",
        },
    )
    found = check("condition_occurrence.csv", table("condition_occurrence", *rows))
    assert [f.split(": ", 1)[1] for f in found] == [
        "line 3: person_id is not the project's subject key",
        "line 4: condition_start_date is a date outside the shifted range",
    ]


def test_a_birth_day_in_the_person_table_is_found() -> None:
    row = {"person_id": SUBJECT, "year_of_birth": "1950", "day_of_birth": "4"}
    [finding] = check("person.csv", table("person", row))
    assert finding.endswith("line 2: day_of_birth is not empty")


def test_records_outside_their_subjects_folder_are_refused() -> None:
    data = bundle()
    misplaced = entry("bundle.json", data).model_copy(update={"path": "SUBJOTHER/clinical/b.json"})
    with pytest.raises(ManifestInvalid, match="records belong under <subject key>/clinical/"):
        records.check(misplaced, data, subject_key=SUBJECT, latest_date=LATEST)
