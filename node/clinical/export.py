"""Stage 2: a cohort's clinical facts, anonymized for a project, as FHIR R4 and OMOP CSV.

Given stage-1 subject keys and a project's rules (its profile's ``clinical`` section, e.g.
``anonymize``, with the project's :class:`~common.crypto.Pseudonymizer`), writes

- ``bundle.json``: a FHIR R4 ``collection`` Bundle — per patient a Patient and one resource
  per fact (Condition, MedicationStatement, Observation, Procedure, Encounter, ImagingStudy),
  each validated against the R4B models before it is written;
- ``<table>.csv``: OMOP CDM 5.4 tables (person, death, visit_occurrence,
  condition_occurrence, drug_exposure, measurement, observation, procedure_occurrence) with
  every CDM column, for the facts coded as OMOP concepts. Facts coded in other systems are
  in the Bundle only: turning SNOMED or LOINC codes into OMOP concepts needs vocabulary
  cross-maps. Id columns hold the project's keyed pseudonyms (text), not integers.

The facts are first written as stage-1 records and then put through the project's rules,
exactly as an import is: whatever has no rule is dropped, dates move by ``date-shift``,
ids and references become the project's keyed pseudonyms. The project's subject key, date
offset and UIDs derive from the stage-1 subject key and UIDs, as the DICOM stage 2 derives
them from a stage-1 file (whose PatientID is the stage-1 subject key): a patient's released
images and records carry one project subject key, one date shift and matching study UIDs.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.deid.profile import OMOP_COLUMNS
from node.clinical import fhir, omop
from node.clinical.exceptions import ClinicalError
from node.clinical.facts import OMOP_CONCEPT_SYSTEM
from node.clinical.models import FACT_TABLES, Person
from node.clinical.rules import ClinicalPseudonymizer, PatientRef

logger = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
_FHIR_SEX = {"M": "male", "F": "female", "O": "other", "U": "unknown"}
_OMOP_SEX = {"M": "8507", "F": "8532", "O": "8521", "U": "8551"}
_NOT_AN_ID = re.compile(r"[^A-Za-z0-9.-]")
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_UNKNOWN_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"}
# Fact table → (OMOP table, its id, concept, start and end date columns).
_OMOP_TABLE = {
    table: (name, spec.id_column, spec.concept, spec.date, spec.end_date)
    for name, spec in omop.SPECS.items()
    for table in (spec.fact_table,)
    if table
}


class UnknownSubject(ClinicalError):
    """A subject key asked for is not in the fact store (the key itself is a pseudonym)."""


@dataclass
class ExportResult:
    """What was written: counts only."""

    patients: int = 0
    resources: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)


def export_cohort(
    *,
    session: Session,
    subject_keys: Sequence[str],
    rules: ClinicalPseudonymizer,
    out_dir: Path,
) -> ExportResult:
    """Write the cohort's anonymized Bundle and OMOP tables into ``out_dir``."""
    keys = sorted(set(subject_keys))
    persons = {
        p.subject_key: p
        for p in session.execute(select(Person).where(Person.subject_key.in_(keys))).scalars()
    }
    missing = [key for key in keys if key not in persons]
    if missing:
        raise UnknownSubject(f"{len(missing)} of the subject keys are not on this node")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult()
    tables = _OmopFiles(out_dir)
    try:
        with (out_dir / BUNDLE_FILE).open("w", encoding="utf-8") as bundle:
            bundle.write('{"resourceType":"Bundle","type":"collection","entry":[')
            first = True
            for key in keys:
                for resource in _patient_export(session, persons[key], rules, result, tables):
                    bundle.write(("" if first else ",") + json.dumps({"resource": resource}))
                    first = False
            bundle.write("]}\n")
    finally:
        tables.close()
    logger.info(
        "stage-2 export: %d patients, %d resources, %d OMOP rows",
        result.patients,
        sum(result.resources.values()),
        sum(result.rows.values()),
    )
    return result


def _patient_export(
    session: Session,
    person: Person,
    rules: ClinicalPseudonymizer,
    result: ExportResult,
    tables: _OmopFiles,
) -> Iterable[dict[str, Any]]:
    stage1_key = person.subject_key
    project_key = rules.subject_key(stage1_key)
    if project_key is None:
        raise UnknownSubject("a subject key is missing from the project's lookup table")
    patient = rules.patient(stage1_key, project_key)
    result.patients += 1
    records = [_patient_resource(person)]
    tables.write(rules, patient, "person", _person_row(person), result)
    if person.death_date is not None:
        death = {"person_id": stage1_key, "death_date": person.death_date.isoformat()}
        tables.write(rules, patient, "death", death, result)
    for table, model in FACT_TABLES.items():
        facts = session.execute(
            select(model).where(model.subject_key == stage1_key).order_by(model.source)
        ).scalars()
        for fact in facts:
            records.append(_fact_resource(table, fact, stage1_key))
            if table in _OMOP_TABLE and getattr(fact, "system", "") == OMOP_CONCEPT_SYSTEM:
                omop_table, row = _omop_row(table, fact, stage1_key)
                tables.write(rules, patient, omop_table, row, result)
    reference = f"Patient/{stage1_key}"

    def patients(text: str) -> PatientRef | None:
        return patient if text == reference else None

    for record in records:
        anonymized = rules.fhir_resource(record, patient, patients, lambda _: None)
        fhir.validate(fhir.Entry("export", anonymized))
        result.resources[anonymized["resourceType"]] += 1
        yield anonymized


# -- stage-1 records from facts ---------------------------------------------------------------


def _patient_resource(person: Person) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": person.subject_key}
    if person.sex in _FHIR_SEX:
        resource["gender"] = _FHIR_SEX[person.sex]
    if person.birth_year is not None:
        resource["birthDate"] = f"{person.birth_year:04d}"
    if person.death_date is not None:
        resource["deceasedDateTime"] = person.death_date.isoformat()
    return resource


def _fact_resource(table: str, fact: Any, subject_key: str) -> dict[str, Any]:
    common: dict[str, Any] = {
        "id": _NOT_AN_ID.sub("-", fact.source)[-64:],
        "subject": {"reference": f"Patient/{subject_key}"},
    }
    if table == "imaging_study":
        return {
            "resourceType": "ImagingStudy",
            **common,
            "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{fact.study_uid}"}],
            "modality": [{"system": _DCM, "code": m} for m in fact.modalities.split("\\") if m],
            **_when("started", fact.date),
        }
    concept = {"coding": [_coding(fact.system, fact.code, fact.display)]}
    end = getattr(fact, "end_date", None)
    if table == "condition":
        return {
            "resourceType": "Condition",
            **common,
            "code": concept,
            **_when("onsetDateTime", fact.date),
            **_when("abatementDateTime", end),
        }
    if table == "drug":
        return {
            "resourceType": "MedicationStatement",
            **common,
            "status": "unknown",
            "medicationCodeableConcept": concept,
            **_period("effective", fact.date, end),
        }
    if table == "procedure":
        return {
            "resourceType": "Procedure",
            **common,
            "status": "completed",
            "code": concept,
            **_period("performed", fact.date, end),
        }
    if table == "visit":
        return {
            "resourceType": "Encounter",
            **common,
            "status": "finished",
            "class": _UNKNOWN_CLASS,
            "type": [concept],
            **({"period": _dates(fact.date, end)} if fact.date or end else {}),
        }
    return {
        "resourceType": "Observation",
        **common,
        "status": "final",
        "code": concept,
        **_when("effectiveDateTime", fact.date),
        **_observation_value(fact),
    }


def _observation_value(fact: Any) -> dict[str, Any]:
    if fact.value_as_number is not None:
        quantity: dict[str, Any] = {"value": fact.value_as_number}
        if fact.unit:
            quantity["unit"] = fact.unit
        return {"valueQuantity": quantity}
    if getattr(fact, "value_code", ""):
        coding = _coding(fact.value_system, fact.value_code, fact.value_as_string)
        return {"valueCodeableConcept": {"coding": [coding]}}
    return {}


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {k: v for k, v in coding.items() if v}


def _when(name: str, date: dt.date | None) -> dict[str, str]:
    return {name: date.isoformat()} if date is not None else {}


def _dates(start: dt.date | None, end: dt.date | None) -> dict[str, str]:
    return {**_when("start", start), **_when("end", end)}


def _period(prefix: str, start: dt.date | None, end: dt.date | None) -> dict[str, Any]:
    if end is not None:
        return {f"{prefix}Period": _dates(start, end)}
    return _when(f"{prefix}DateTime", start)


# -- OMOP -----------------------------------------------------------------------------------


def _person_row(person: Person) -> dict[str, str]:
    return {
        "person_id": person.subject_key,
        "gender_concept_id": _OMOP_SEX.get(person.sex, "0"),
        "year_of_birth": str(person.birth_year or ""),
        "race_concept_id": "0",
        "ethnicity_concept_id": "0",
    }


def _omop_row(table: str, fact: Any, subject_key: str) -> tuple[str, dict[str, str]]:
    name, id_column, concept, start, end = _OMOP_TABLE[table]
    row = {
        id_column: fact.source,
        "person_id": subject_key,
        concept: fact.code,
        start: fact.date.isoformat() if fact.date else "",
    }
    if end and getattr(fact, "end_date", None) is not None:
        row[end] = fact.end_date.isoformat()
    if table in ("measurement", "observation") and fact.value_as_number is not None:
        row["value_as_number"] = repr(fact.value_as_number)
        row["unit_source_value"] = fact.unit
    if table == "observation" and fact.value_system == OMOP_CONCEPT_SYSTEM:
        row["value_as_concept_id"] = fact.value_code
    return name, row


class _OmopFiles:
    """One CSV per OMOP table, opened on first use, every CDM 5.4 column in the header."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, tuple[IO[str], Any]] = {}

    def write(
        self,
        rules: ClinicalPseudonymizer,
        patient: PatientRef,
        table: str,
        row: dict[str, str],
        result: ExportResult,
    ) -> None:
        if table not in self.files:
            handle = (self.folder / f"{table}.csv").open("w", newline="", encoding="utf-8")
            writer = csv.DictWriter(handle, fieldnames=OMOP_COLUMNS[table], lineterminator="\n")
            writer.writeheader()
            self.files[table] = (handle, writer)
        complete = {column: row.get(column, "") for column in OMOP_COLUMNS[table]}
        self.files[table][1].writerow(rules.omop_row(table, complete, patient))
        result.rows[table] += 1

    def close(self) -> None:
        for handle, _ in self.files.values():
            handle.close()
