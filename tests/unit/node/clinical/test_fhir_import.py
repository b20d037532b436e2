"""Importing FHIR R4: Synthea bundles and a hospital's bundle become pseudonymized facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from common import audit
from node.clinical import service
from node.clinical.exceptions import InvalidClinicalInput, UnknownPatient
from node.clinical.models import (
    FACT_TABLES,
    Condition,
    Drug,
    Measurement,
    Observation,
    Person,
    Visit,
)
from node.clinical.service import ImportContext
from node.store.db import transaction
from node.store.models import AuditRecord
from tests.unit.node.clinical.conftest import IDENTIFIERS, SYNTHEA_BUNDLES, hospital_bundle


def count(session: Session, model: type[object]) -> int:
    return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def import_file(
    sessions: sessionmaker[Session], context: ImportContext, path: Path
) -> service.ImportResult:
    with transaction(sessions) as session:
        return service.import_fhir_file(session=session, context=context, path=path)


def import_bundle(
    sessions: sessionmaker[Session], context: ImportContext, bundle: object
) -> service.ImportResult:
    with transaction(sessions) as session:
        return service.import_fhir_bundle(session=session, context=context, bundle=bundle)


def test_a_synthea_bundle_becomes_a_person_and_coded_facts(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    result = import_file(sessions, context, SYNTHEA_BUNDLES[0])
    assert result.patients == 1
    assert result.skipped["Claim"] > 0  # types the node does not import are counted
    with transaction(sessions) as session:
        person = session.execute(select(Person)).scalar_one()
        assert (person.sex, person.birth_year) == ("M", 1993)
        epilepsy = session.execute(
            select(Condition).where(
                Condition.system == "http://snomed.info/sct", Condition.code == "84757009"
            )
        ).scalar_one()
        assert epilepsy.subject_key == person.subject_key
        assert epilepsy.date is not None and epilepsy.date.isoformat() == "2007-06-04"
        height = session.execute(
            select(Measurement).where(Measurement.code == "8302-2").limit(1)
        ).scalar_one()
        assert height.system == "http://loinc.org"
        assert height.unit == "cm" and height.value_as_number is not None
        assert count(session, Drug) == 2
        assert count(session, Visit) == 6


def test_blood_pressure_components_become_one_measurement_each(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_file(sessions, context, SYNTHEA_BUNDLES[0])
    with transaction(sessions) as session:
        codes = set(session.execute(select(Measurement.code)).scalars())
    assert {"8462-4", "8480-6"} <= codes  # diastolic and systolic
    assert "55284-4" not in codes  # the panel itself carries no value


def test_importing_the_same_bundle_twice_adds_no_facts(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_file(sessions, context, SYNTHEA_BUNDLES[0])
    with transaction(sessions) as session:
        before = {name: count(session, model) for name, model in FACT_TABLES.items()}
    import_file(sessions, context, SYNTHEA_BUNDLES[0])
    with transaction(sessions) as session:
        after = {name: count(session, model) for name, model in FACT_TABLES.items()}
        assert count(session, Person) == 1
    assert after == before


def test_no_identifier_reaches_the_fact_store(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_bundle(sessions, context, hospital_bundle())
    with transaction(sessions) as session:
        dumped = []
        for table in (*FACT_TABLES, "person", "audit_record"):
            for row in session.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                dumped.append(" ".join(str(value) for value in row))
    stored = "\n".join(dumped)
    assert "52448006" in stored  # the dementia code is there ...
    for identifier in IDENTIFIERS:
        assert identifier not in stored  # ... and none of the identifiers
    assert "1947-03-12" not in stored  # the birth date only as a year
    assert "7f1d6a52" not in stored  # nor the source's resource ids


def test_a_coding_in_each_system_makes_the_diagnosis_findable_in_either(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_bundle(sessions, context, hospital_bundle())
    with transaction(sessions) as session:
        systems = set(session.execute(select(Condition.system)).scalars())
    assert systems == {"http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"}


def test_collection_and_batch_bundles_are_imported_too(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    assert import_bundle(sessions, context, hospital_bundle("collection")).patients == 1
    assert import_bundle(sessions, context, hospital_bundle("batch")).patients == 1


def test_a_searchset_bundle_is_refused_naming_the_field(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    with pytest.raises(InvalidClinicalInput, match=r"Bundle\.type"):
        import_bundle(sessions, context, hospital_bundle("searchset"))


def test_an_invalid_resource_is_named_by_entry_and_field_never_by_value(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    bundle = hospital_bundle()
    bundle["entry"][2]["resource"]["valueQuantity"]["value"] = "MRN99817263"
    with pytest.raises(InvalidClinicalInput) as caught:
        import_bundle(sessions, context, bundle)
    message = str(caught.value)
    assert "entry 2" in message and "Observation.valueQuantity.value" in message
    assert "MRN99817263" not in message


def test_a_file_with_one_bad_entry_imports_nothing(
    sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path
) -> None:
    bundle = hospital_bundle()
    bundle["entry"][3]["resource"]["started"] = "the fifteenth of April"
    path = tmp_path / "export.json"
    path.write_text(json.dumps(bundle))
    with pytest.raises(InvalidClinicalInput, match=r"export\.json: entry 3"):
        import_file(sessions, context, path)
    with transaction(sessions) as session:
        assert count(session, Person) == 0
        assert count(session, Condition) == 0
        assert audit.verify(session, AuditRecord).records == 0


def test_ndjson_is_read_line_by_line_and_errors_name_the_line(
    sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path
) -> None:
    resources = [entry["resource"] for entry in hospital_bundle()["entry"]]
    patients, others = tmp_path / "Patient.ndjson", tmp_path / "Other.ndjson"
    patients.write_text(json.dumps(resources[0]) + "\n")
    # Bulk-export files refer to patients as Patient/<id>, imported from another file.
    for resource in resources[1:]:
        resource["subject"] = {"reference": f"Patient/{resources[0]['id']}"}
    others.write_text("\n".join(json.dumps(r) for r in resources[1:]) + "\n{not json\n")
    assert import_file(sessions, context, patients).patients == 1
    with pytest.raises(InvalidClinicalInput, match=r"Other.ndjson: line 4: not valid JSON"):
        import_file(sessions, context, others)
    others.write_text("\n".join(json.dumps(r) for r in resources[1:]) + "\n")
    result = import_file(sessions, context, others)
    assert result.facts["condition"] == 2 and result.facts["measurement"] == 1


def test_a_record_of_a_patient_never_imported_is_refused(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    bundle = hospital_bundle()
    del bundle["entry"][0]
    with pytest.raises(UnknownPatient, match=r"entry 0 \(Condition\): Condition.subject"):
        import_bundle(sessions, context, bundle)


def test_each_import_is_audited_with_counts_and_a_content_hash(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_file(sessions, context, SYNTHEA_BUNDLES[1])
    with transaction(sessions) as session:
        record = session.execute(select(AuditRecord)).scalar_one()
        assert audit.verify(session, AuditRecord).ok
    details = json.loads(record.details)
    assert record.action == "clinical.import"
    assert len(details["sha256"]) == 64
    assert details["patients"] == 1 and details["facts"]["measurement"] > 0
    assert SYNTHEA_BUNDLES[1].name not in record.details


def test_free_text_observation_values_are_not_stored(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    bundle = hospital_bundle()
    observation = bundle["entry"][2]["resource"]
    del observation["valueQuantity"]
    observation["valueString"] = "lives with daughter Anne at 22 Acacia Avenue"
    import_bundle(sessions, context, bundle)
    with transaction(sessions) as session:
        row = session.execute(select(Observation)).scalar_one()
    assert row.code == "2160-0"
    assert row.value_as_string == ""
