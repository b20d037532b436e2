"""Import clinical records: read, validate, pseudonymize (stage 1), store facts, audit.

Plain functions taking a keyword-only ``session``; none of them commits. The caller runs
one transaction per file (``node.clinical.cli``) or per request (``node.clinical.api``),
so a file is imported whole or not at all: the first invalid resource or row raises
:class:`~node.clinical.exceptions.InvalidClinicalInput` and the caller rolls back.

Linkage with the images: the hospital patient ID (FHIR ``Patient.identifier`` of the
profile's type, OMOP ``person.person_source_value``) goes through the same keyed mapping
as the DICOM PatientID, and is recorded under the same correspondence kind (``patient``)
— a patient's images and records meet under one subject key, in whichever order they
arrive. The source's own patient ids (FHIR ``Patient.id``, OMOP ``person_id``) are
recorded too (kinds ``fhir-patient``, ``omop-person``), so that later files can refer to
a patient imported before. All of these rows are encrypted, like every correspondence.

Re-importing the same data changes nothing: each fact has a ``source`` named by a keyed
hash of its record's id, and rows are upserted on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from common import audit
from common.crypto import Pseudonymizer, SiteSecret
from common.deid.profile import load_profile, read_lookup_table
from node.clinical import fhir, omop
from node.clinical.exceptions import InvalidClinicalInput, UnknownPatient
from node.clinical.facts import Extracted, Fact, PersonFacts
from node.clinical.models import FACT_TABLES, Person
from node.clinical.rules import ClinicalPseudonymizer, PatientRef
from node.store import correspondence
from node.store.correspondence import CorrespondenceError, Keyring
from node.store.models import AuditRecord
from node.store.service import PATIENT

logger = logging.getLogger(__name__)

FHIR_PATIENT, OMOP_PERSON = "fhir-patient", "omop-person"  # correspondence kinds
BATCH = 2000  # facts written per statement
AUDIT_ACTION = "clinical.import"


@dataclass(frozen=True)
class ImportContext:
    """What every import needs: the profile's clinical rules with the node's mappings, the
    correspondence key and who runs it (for the audit log)."""

    rules: ClinicalPseudonymizer
    keyring: Keyring = field(repr=False)
    actor: str


@lru_cache(maxsize=4)
def build_rules(profile: str, project: str, secret: bytes) -> ClinicalPseudonymizer:
    """Stage 1's rules with exactly the mappings the DICOM ingest uses
    (``node.ingest.worker.build_engine``): the same profile, project, prefix and offsets.
    Built once per process (the API calls it for every request)."""
    loaded = load_profile(profile)
    mapper = Pseudonymizer(
        secret=SiteSecret(secret),
        project=project,
        subject_key_prefix=loaded.subject_key_prefix,
        min_offset_days=loaded.min_offset_days,
        max_offset_days=loaded.max_offset_days,
    )
    keys = read_lookup_table(loaded.subject_key_lookup) if loaded.subject_key_lookup else None
    return ClinicalPseudonymizer(loaded, mapper, keys)


@dataclass
class ImportResult:
    """What one file gave: counts only (PHI-free, printed and audited as is)."""

    format: str
    sha256: str = ""
    records: int = 0  # resources or rows read
    patients: int = 0
    facts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # unsupported resource types

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["facts"] = dict(sorted(self.facts.items()))
        data["skipped"] = dict(sorted(self.skipped.items()))
        return data


# -- FHIR ---------------------------------------------------------------------------------------


def import_fhir_file(*, session: Session, context: ImportContext, path: Path) -> ImportResult:
    """Import a Bundle (.json) or an NDJSON file (.ndjson, .jsonl: read line by line)."""
    digest = fhir.FileDigest()
    run = _FhirImport(session, context, ImportResult(format="fhir"))
    if fhir.is_ndjson(path):
        run.result.format = "fhir-ndjson"
        for entry in fhir.read_ndjson(path, path.name, digest):
            run.add(entry)
    else:
        run.result.format = "fhir-bundle"
        run.add_bundle(fhir.read_bundle(path, path.name, digest))
    run.writer.flush()
    run.result.sha256 = digest.hexdigest()
    _audit(session, context, run.result)
    return run.result


def import_fhir_bundle(
    *, session: Session, context: ImportContext, bundle: Any, name: str = "bundle"
) -> ImportResult:
    """Import a Bundle already parsed from JSON (the API's request body)."""
    entries = fhir.bundle_entries(bundle, name)
    result = ImportResult(format="fhir-bundle", sha256=_content_hash(bundle))
    run = _FhirImport(session, context, result)
    run.add_bundle(entries)
    run.writer.flush()
    _audit(session, context, result)
    return result


class _FhirImport:
    def __init__(self, session: Session, context: ImportContext, result: ImportResult) -> None:
        self.session = session
        self.context = context
        self.rules = context.rules
        self.result = result
        self.patients = _Patients(session, context)
        self.types: dict[str, str] = {}  # fullUrl → resource type
        self.writer = _Writer(session, result)

    def add_bundle(self, entries: list[fhir.Entry]) -> None:
        """A bundle's entries, patients first: a bundle may list them in any order, and
        references by ``fullUrl`` resolve to their types."""
        for entry in entries:
            if entry.full_url:
                self.types[entry.full_url] = entry.resource_type
        for entry in sorted(entries, key=lambda e: e.resource_type != "Patient"):
            self.add(entry)

    def add(self, entry: fhir.Entry) -> None:
        self.result.records += 1
        resource_type = entry.resource_type
        if resource_type not in fhir.SUPPORTED:
            self.result.skipped[resource_type] += 1
            return
        fhir.validate(entry)
        resource = entry.resource
        if resource_type == "Patient":
            patient = self._patient(entry)
        else:
            reference = fhir.subject_reference(resource)
            where = f"{entry.where} ({resource_type})"
            if reference is None:
                raise InvalidClinicalInput(where, "names no patient", f"{resource_type}.subject")
            found = self.patients.fhir(reference)
            if found is None:
                raise UnknownPatient(where, f"{resource_type}.subject")
            patient = found
        pseudonymized = self.rules.fhir_resource(
            resource,
            patient,
            self.patients.fhir,
            self.types.get,
            only=fhir.ELEMENTS_READ[resource_type],
        )
        original = str(resource.get("id") or entry.full_url or _content_hash(resource))
        source = f"fhir:{resource_type}/{self.rules.source_key(f'fhir:{resource_type}', original)}"
        self.writer.add(fhir.extract(pseudonymized, patient.subject_key, source))

    def _patient(self, entry: fhir.Entry) -> PatientRef:
        clinical = self.rules.rules
        hospital_id = fhir.hospital_patient_id(
            entry, clinical.patient_identifier_type, clinical.patient_identifier_system
        )
        where = f"{entry.where} (Patient)"
        patient = self.patients.register(hospital_id, where, "Patient.identifier")
        logical_id = str(entry.resource.get("id") or "")
        if logical_id:
            self.patients.remember(FHIR_PATIENT, logical_id, patient, where, "Patient.id")
            self.patients.fhir_refs[f"Patient/{logical_id}"] = patient
        if entry.full_url:
            self.patients.fhir_refs[entry.full_url] = patient
        return patient


def _content_hash(resource: dict[str, Any]) -> str:
    canonical = json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


# -- OMOP ---------------------------------------------------------------------------------------


def import_omop_table(
    *, session: Session, context: ImportContext, path: Path, table: str
) -> ImportResult:
    """Import one OMOP CDM table (one of ``omop.TABLE_ORDER``) from its CSV file."""
    digest = fhir.FileDigest()
    result = ImportResult(format=f"omop-{table}")
    patients = _Patients(session, context)
    writer = _Writer(session, result)
    rules = context.rules
    spec = omop.SPECS[table]
    read = omop.columns_read(table)
    column = rules.rules.omop_patient_column
    for row in omop.read_table(path, table, path.name, digest):
        result.records += 1
        omop.check_row(table, row)
        person_id = row.values["person_id"].strip()
        if table == "person":
            hospital_id = row.values.get(column, "").strip()
            if not hospital_id:
                raise InvalidClinicalInput(row.where, "is empty", column)
            patient = patients.register(hospital_id, row.where, column)
            patients.remember(OMOP_PERSON, person_id, patient, row.where, "person_id")
        else:
            found = patients.omop(person_id)
            if found is None:
                raise UnknownPatient(row.where, "person_id")
            patient = found
        pseudonymized = rules.omop_row(table, row.values, patient, only=read)
        original = row.values[spec.id_column].strip()
        source = f"omop:{table}/{rules.source_key(f'omop:{table}', original)}"
        writer.add(omop.extract(table, pseudonymized, patient.subject_key, source))
    writer.flush()
    result.sha256 = digest.hexdigest()
    _audit(session, context, result)
    return result


# -- patients -----------------------------------------------------------------------------------


class _Patients:
    """Patients of one import: those met in the file, and those imported before."""

    def __init__(self, session: Session, context: ImportContext) -> None:
        self.session = session
        self.keyring = context.keyring
        self.rules = context.rules
        self.fhir_refs: dict[str, PatientRef] = {}
        self._known: dict[tuple[str, str], PatientRef | None] = {}

    def register(self, hospital_id: str, where: str, field_name: str) -> PatientRef:
        """The patient's subject key, recorded against the hospital ID as the images do."""
        subject_key = self.rules.subject_key(hospital_id)
        if subject_key is None:
            raise InvalidClinicalInput(
                where, "the patient is missing from the profile's lookup table", field_name
            )
        patient = self.rules.patient(hospital_id, subject_key)
        self.remember(PATIENT, hospital_id, patient, where, field_name)
        return patient

    def remember(
        self, kind: str, original: str, patient: PatientRef, where: str, field_name: str
    ) -> None:
        if self._known.get((kind, original)) == patient:
            return
        try:
            correspondence.record(
                session=self.session,
                keyring=self.keyring,
                kind=kind,
                original=original,
                pseudonym=patient.subject_key,
            )
        except CorrespondenceError:
            raise InvalidClinicalInput(
                where,
                "this patient already has another subject key on this node "
                "(was the profile or its lookup table changed?)",
                field_name,
            ) from None
        self._known[(kind, original)] = patient

    def fhir(self, reference: str) -> PatientRef | None:
        """The patient a FHIR reference names: in this file, or imported before."""
        found = self.fhir_refs.get(reference)
        if found is not None:
            return found
        if reference.startswith("urn:uuid:"):
            logical_id = reference.removeprefix("urn:uuid:")
        else:
            parts = reference.rstrip("/").rsplit("/", 2)
            if len(parts) < 2 or parts[-2] != "Patient":
                return None
            logical_id = parts[-1]
        return self._stored(FHIR_PATIENT, logical_id)

    def omop(self, person_id: str) -> PatientRef | None:
        return self._stored(OMOP_PERSON, person_id)

    def _stored(self, kind: str, original: str) -> PatientRef | None:
        key = (kind, original)
        if key in self._known:
            return self._known[key]
        subject_key = correspondence.pseudonym_for(
            session=self.session, keyring=self.keyring, kind=kind, original=original
        )
        patient = None if subject_key is None else self._with_offset(subject_key)
        self._known[key] = patient
        return patient

    def _with_offset(self, subject_key: str) -> PatientRef:
        if not self.rules.shifts_dates:
            return PatientRef(subject_key)
        # Date shifts need the hospital ID, kept only in the encrypted table.
        originals = correspondence.originals_for(
            session=self.session, keyring=self.keyring, kind=PATIENT, pseudonym=subject_key
        )
        if not originals:
            return PatientRef(subject_key)
        return self.rules.patient(originals[0], subject_key)


# -- writing ------------------------------------------------------------------------------------


class _Writer:
    """Upserts facts in batches (on ``source``) and persons (on ``subject_key``)."""

    def __init__(self, session: Session, result: ImportResult) -> None:
        self.session = session
        self.result = result
        self.pending: dict[str, dict[str, dict[str, Any]]] = {}  # table → source → values
        self.size = 0
        self.persons: dict[str, PersonFacts] = {}

    def add(self, extracted: Extracted) -> None:
        if extracted.person is not None:
            self._person(extracted.person)
        for fact in extracted.facts:
            self._fact(fact)
        if self.size >= BATCH:
            self._flush_facts()

    def _fact(self, fact: Fact) -> None:
        rows = self.pending.setdefault(fact.table, {})
        if fact.values["source"] not in rows:
            self.size += 1
            self.result.facts[fact.table] += 1
        rows[fact.values["source"]] = fact.values  # the same record twice: the last wins

    def _person(self, person: PersonFacts) -> None:
        before = self.persons.get(person.subject_key)
        if before is None:
            self.result.patients += 1
            self.persons[person.subject_key] = person
            return
        self.persons[person.subject_key] = PersonFacts(
            subject_key=person.subject_key,
            sex=person.sex or before.sex,
            birth_year=person.birth_year if person.birth_year is not None else before.birth_year,
            death_date=person.death_date or before.death_date,
        )

    def flush(self) -> None:
        self._flush_facts()
        for person in self.persons.values():
            _upsert_person(self.session, person)
        self.persons.clear()
        self.session.flush()

    def _flush_facts(self) -> None:
        for table, rows in self.pending.items():
            if rows:
                _upsert_facts(self.session, table, list(rows.values()))
        self.pending.clear()
        self.size = 0


def _insert(session: Session, model: type[Any]) -> Any:
    """An INSERT … ON CONFLICT of the dialect, on the table itself: the ORM's bulk path
    costs more per row than the database does."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model.__table__)
    if dialect == "sqlite":
        return sqlite.insert(model.__table__)
    raise NotImplementedError(f"the fact store supports SQLite and PostgreSQL, not {dialect}")


def _upsert_facts(session: Session, table: str, rows: list[dict[str, Any]]) -> None:
    model = FACT_TABLES[table]
    defaults = _defaults(table)
    columns = [name for name in defaults if name != "source"]
    complete = [defaults | row for row in rows]
    statement = _insert(session, model)
    statement = statement.on_conflict_do_update(
        index_elements=["source"], set_={name: statement.excluded[name] for name in columns}
    )
    session.execute(statement, complete)


@lru_cache(maxsize=16)
def _defaults(table: str) -> dict[str, Any]:
    """Every column but the id, with what a fact that does not name it gets."""
    columns = FACT_TABLES[table].__table__.columns
    return {c.name: (None if c.nullable else "") for c in columns if c.name != "id"}


def _upsert_person(session: Session, person: PersonFacts) -> None:
    """Create the person, or complete it: a value a record leaves out keeps the stored one."""
    statement = _insert(session, Person).values(
        subject_key=person.subject_key,
        sex=person.sex,
        birth_year=person.birth_year,
        death_date=person.death_date,
    )
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["subject_key"],
        set_={
            "sex": func.coalesce(func.nullif(excluded.sex, ""), Person.__table__.c.sex),
            "birth_year": func.coalesce(excluded.birth_year, Person.__table__.c.birth_year),
            "death_date": func.coalesce(excluded.death_date, Person.__table__.c.death_date),
        },
    )
    session.execute(statement)


# -- audit --------------------------------------------------------------------------------------


def _audit(session: Session, context: ImportContext, result: ImportResult) -> None:
    """One record per file: its content hash and counts; never its name (hospital exports
    are often named after the patient)."""
    audit.append(
        session,
        AuditRecord,
        actor=context.actor,
        action=AUDIT_ACTION,
        subject=result.format,
        details=result.as_dict(),
    )
    logger.info(
        "clinical import (%s, sha256 %s…): %d records, %d patients, %d facts",
        result.format,
        result.sha256[:12],
        result.records,
        result.patients,
        sum(result.facts.values()),
    )


def delete_subject(*, session: Session, subject_key: str) -> int:
    """Remove a patient's clinical record (a clean-up job deletes images and record
    together); the correspondence rows stay, so a re-import gives the same pseudonyms."""
    removed = 0
    models: list[Any] = [*FACT_TABLES.values(), Person]
    for model in models:
        result = session.execute(delete(model).where(model.subject_key == subject_key))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed
