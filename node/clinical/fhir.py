"""FHIR R4: read Bundles and NDJSON, validate resources, turn pseudonymized ones into facts.

Resources are validated with the ``fhir.resources`` **R4B** models (its default models are
R5, which reject R4 data such as Synthea's). Bundles of type collection, transaction and
batch are read whole (a Bundle is one JSON document); NDJSON files line by line, so memory
stays flat whatever their size. Only the supported resource types are validated and
imported; others (Claim, Organization, …) are counted as skipped.

Errors name the file, the entry index or line and the element path — never a value:
pydantic's own messages may quote the input, so only its error type is reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from common.deid.profile import FHIR_RESOURCE_TYPES
from node.clinical.exceptions import InvalidClinicalInput
from node.clinical.facts import Coding, Extracted, Fact, PersonFacts
from node.clinical.rules import parse_date

logger = logging.getLogger(__name__)

BUNDLE_TYPES = frozenset({"collection", "transaction", "batch"})
SUPPORTED = frozenset(FHIR_RESOURCE_TYPES)
NDJSON_SUFFIXES = (".ndjson", ".jsonl")
_SEX = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_DICOM_UID_SYSTEM = "urn:dicom:uid"


@dataclass(frozen=True, slots=True)
class Entry:
    """One resource of a file; ``where`` names the file and the entry or line."""

    where: str
    resource: dict[str, Any]
    full_url: str = ""

    @property
    def resource_type(self) -> str:
        return str(self.resource.get("resourceType", ""))


class FileDigest:
    """The SHA-256 of what was read (the audit log names files by content, not by name)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# -- reading ----------------------------------------------------------------------------------


def is_ndjson(path: Path) -> bool:
    return path.suffix.lower() in NDJSON_SUFFIXES


def read_bundle(path: Path, name: str, digest: FileDigest) -> list[Entry]:
    """The resources of a Bundle file (read whole: a Bundle is one JSON document)."""
    data = path.read_bytes()
    digest.update(data)
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        where = f"{name}: line {line}" if line else name
        raise InvalidClinicalInput(where, "not valid JSON") from None
    return bundle_entries(document, name)


def read_ndjson(path: Path, name: str, digest: FileDigest) -> Iterator[Entry]:
    """The resources of an NDJSON file, one line at a time."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            digest.update(raw)
            if not raw.strip():
                continue
            where = f"{name}: line {number}"
            try:
                resource = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise InvalidClinicalInput(where, "not valid JSON") from None
            if not isinstance(resource, dict) or "resourceType" not in resource:
                raise InvalidClinicalInput(where, "is not a FHIR resource", "resourceType")
            yield Entry(where, resource)


def bundle_entries(document: Any, name: str) -> list[Entry]:
    """The entries of a Bundle (collection, transaction or batch), checked on the way."""
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        raise InvalidClinicalInput(name, "is not a FHIR Bundle", "resourceType")
    if document.get("type") not in BUNDLE_TYPES:
        raise InvalidClinicalInput(
            name, "must be a collection, transaction or batch Bundle", "Bundle.type"
        )
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidClinicalInput(name, "must be a list", "Bundle.entry")
    found: list[Entry] = []
    for index, entry in enumerate(entries):
        where = f"{name}: entry {index}"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or "resourceType" not in resource:
            raise InvalidClinicalInput(where, "has no resource", "Bundle.entry.resource")
        found.append(Entry(where, resource, str(entry.get("fullUrl", ""))))
    return found


def validate(entry: Entry) -> None:
    """Check the resource against the R4 (R4B) model of its type."""
    resource_type = entry.resource_type
    try:
        model = get_fhir_model_class(resource_type)
    except KeyError:
        raise InvalidClinicalInput(entry.where, "unknown resource type", "resourceType") from None
    try:
        model.model_validate(entry.resource)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        path = ".".join(str(part) for part in first["loc"] if not str(part).startswith("__"))
        raise InvalidClinicalInput(
            f"{entry.where} ({resource_type})",
            f"is not valid R4 ({first['type']})",
            f"{resource_type}.{path}" if path else resource_type,
        ) from None


def hospital_patient_id(entry: Entry, id_type: str, id_system: str) -> str:
    """The Patient identifier the images carry as PatientID (by type code or system)."""
    for identifier in entry.resource.get("identifier", []) or []:
        if not isinstance(identifier, dict) or not identifier.get("value"):
            continue
        if id_system and identifier.get("system") == id_system:
            return str(identifier["value"])
        codings = (identifier.get("type") or {}).get("coding", []) or []
        if id_type and any(c.get("code") == id_type for c in codings if isinstance(c, dict)):
            return str(identifier["value"])
    wanted = f"system {id_system}" if id_system else f"type {id_type}"
    raise InvalidClinicalInput(
        f"{entry.where} (Patient)",
        f"has no identifier of {wanted} (the hospital patient ID that links it to images)",
        "Patient.identifier",
    )


def subject_reference(resource: dict[str, Any]) -> str | None:
    for name in ("subject", "patient"):
        value = resource.get(name)
        if isinstance(value, dict) and value.get("reference"):
            return str(value["reference"])
    return None


# -- facts ------------------------------------------------------------------------------------


# The elements :func:`extract` reads, per resource type.
ELEMENTS_READ: dict[str, frozenset[str]] = {
    "Patient": frozenset({"gender", "birthDate", "deceasedDateTime"}),
    "Condition": frozenset(
        {"code", "onsetDateTime", "onsetPeriod", "recordedDate", "abatementDateTime"}
    ),
    "MedicationRequest": frozenset({"medicationCodeableConcept", "authoredOn"}),
    "MedicationStatement": frozenset(
        {"medicationCodeableConcept", "effectiveDateTime", "effectivePeriod", "dateAsserted"}
    ),
    "Procedure": frozenset({"code", "performedDateTime", "performedPeriod"}),
    "Encounter": frozenset({"type", "class", "period"}),
    "Observation": frozenset(
        {
            "code",
            "effectiveDateTime",
            "effectivePeriod",
            "effectiveInstant",
            "issued",
            "valueQuantity",
            "component",
            "valueCodeableConcept",
            "valueBoolean",
            "valueInteger",
        }
    ),
    "DiagnosticReport": frozenset({"code", "effectiveDateTime", "effectivePeriod", "issued"}),
    "ImagingStudy": frozenset({"identifier", "modality", "started"}),
}


def extract(resource: dict[str, Any], subject_key: str, source: str) -> Extracted:
    """The facts of one pseudonymized resource; ``source`` names it without identifying it."""
    extractor = _EXTRACTORS.get(str(resource.get("resourceType", "")))
    if extractor is None:
        return Extracted()
    return extractor(resource, subject_key, source)


def _codings(concept: Any) -> list[Coding]:
    if not isinstance(concept, dict):
        return []
    return [
        Coding(str(c.get("system", "")), str(c["code"]), str(c.get("display", "")))
        for c in concept.get("coding", []) or []
        if isinstance(c, dict) and c.get("code")
    ]


def _first(resource: dict[str, Any], *names: str) -> str | None:
    """The first date among ``names`` ("effectivePeriod.start" reads a Period's start)."""
    for name in names:
        element, _, part = name.partition(".")
        value = resource.get(element)
        if part and isinstance(value, dict):
            value = value.get(part)
        if isinstance(value, str) and value:
            return value
    return None


def _coded_facts(
    table: str,
    concept: Any,
    subject_key: str,
    source: str,
    extra: dict[str, Any],
) -> list[Fact]:
    return [
        Fact(
            table,
            {
                "subject_key": subject_key,
                "source": f"{source}#{index}",
                **coding.columns(),
                **extra,
            },
        )
        for index, coding in enumerate(_codings(concept))
    ]


def _patient(resource: dict[str, Any], subject_key: str, source: str) -> Extracted:
    birth = parse_date(resource.get("birthDate"))
    return Extracted(
        person=PersonFacts(
            subject_key=subject_key,
            sex=_SEX.get(str(resource.get("gender", "")), ""),
            birth_year=birth.year if birth else None,
            death_date=parse_date(resource.get("deceasedDateTime")),
        )
    )


def _condition(resource: dict[str, Any], subject_key: str, source: str) -> Extracted:
    extra = {
        "date": parse_date(_first(resource, "onsetDateTime", "onsetPeriod.start", "recordedDate")),
        "end_date": parse_date(_first(resource, "abatementDateTime", "onsetPeriod.end")),
    }
    return Extracted(_coded_facts("condition", resource.get("code"), subject_key, source, extra))


def _drug(resource: dict[str, Any], subject_key: str, source: str) -> Extracted:
    extra = {
        "date": parse_date(
            _first(resource, "authoredOn", "effectiveDateTime", "effectivePeriod.start")
            or _first(resource, "dateAsserted")
        ),
        "end_date": parse_date(_first(resource, "effectivePeriod.end")),
    }
    concept = resource.get("medicationCodeableConcept")
    return Extracted(_coded_facts("drug", concept, subject_key, source, extra))


def _procedure(resource: dict[str, Any], subject_key: str, source: str) -> Extracted:
    extra = {
        "date": parse_date(_first(resource, "performedDateTime", "performedPeriod.start")),
        "end_date": parse_date(_first(resource, "performedPeriod.end")),
    }
    return Extracted(_coded_facts("procedure", resource.get("code"), subject_key, source, extra))


def _encounter(resource: dict[str, Any], subject_key: str, source: str) -> Extracted:
    extra = {
        "date": parse_date(_first(resource, "period.start")),
        "end_date": parse_date(_first(resource, "period.end")),
    }
    types = resource.get("type") or []
    concept: Any = types[0] if types else None
    if not _codings(concept) and isinstance(resource.get("class"), dict):
        concept = {"coding": [resource["class"]]}
    return Extracted(_coded_facts("visit", concept, subject_key, source, extra))


def _quantity(value: Any) -> tuple[float, str] | None:
    if not isinstance(value, dict) or not isinstance(value.get("value"), int | float):
        return None
    return float(value["value"]), str(value.get("code") or value.get("unit") or "")


def _observation(resource: dict[str, Any], subject_key: str, source: str) -> Extracted:
    date = parse_date(
        _first(resource, "effectiveDateTime", "effectivePeriod.start", "effectiveInstant")
        or _first(resource, "issued")
    )
    facts: list[Fact] = []
    quantity = _quantity(resource.get("valueQuantity"))
    if quantity is not None:
        extra = {"date": date, "value_as_number": quantity[0], "unit": quantity[1]}
        facts += _coded_facts("measurement", resource.get("code"), subject_key, source, extra)
    for index, component in enumerate(resource.get("component", []) or []):
        part = _quantity(component.get("valueQuantity")) if isinstance(component, dict) else None
        if part is None:
            continue
        extra = {"date": date, "value_as_number": part[0], "unit": part[1]}
        facts += _coded_facts(
            "measurement", component.get("code"), subject_key, f"{source}#c{index}", extra
        )
    if facts:
        return Extracted(facts)
    extra = {"date": date, **_observation_value(resource)}
    return Extracted(_coded_facts("observation", resource.get("code"), subject_key, source, extra))


def _observation_value(resource: dict[str, Any]) -> dict[str, Any]:
    """A coded, boolean or integer value (free-text values are never stored)."""
    codings = _codings(resource.get("valueCodeableConcept"))
    if codings:
        return {
            "value_system": codings[0].columns()["system"],
            "value_code": codings[0].columns()["code"],
            "value_as_string": codings[0].columns()["display"],
        }
    if isinstance(resource.get("valueBoolean"), bool):
        return {"value_as_string": "true" if resource["valueBoolean"] else "false"}
    if isinstance(resource.get("valueInteger"), int):
        return {"value_as_number": float(resource["valueInteger"])}
    return {}


def _report(resource: dict[str, Any], subject_key: str, source: str) -> Extracted:
    extra = {
        "date": parse_date(_first(resource, "effectiveDateTime", "effectivePeriod.start", "issued"))
    }
    return Extracted(_coded_facts("observation", resource.get("code"), subject_key, source, extra))


def _imaging_study(resource: dict[str, Any], subject_key: str, source: str) -> Extracted:
    study_uid = ""
    for identifier in resource.get("identifier", []) or []:
        if isinstance(identifier, dict) and identifier.get("system") == _DICOM_UID_SYSTEM:
            study_uid = str(identifier.get("value", "")).removeprefix("urn:oid:")
            break
    modalities = sorted(
        {
            str(m["code"])
            for m in resource.get("modality", []) or []
            if isinstance(m, dict) and m.get("code")
        }
    )
    values = {
        "subject_key": subject_key,
        "source": f"{source}#0",
        "study_uid": study_uid[:64],
        "date": parse_date(resource.get("started")),
        "modalities": "\\".join(modalities)[:64],
    }
    return Extracted([Fact("imaging_study", values)])


_EXTRACTORS = {
    "Patient": _patient,
    "Condition": _condition,
    "MedicationRequest": _drug,
    "MedicationStatement": _drug,
    "Procedure": _procedure,
    "Encounter": _encounter,
    "Observation": _observation,
    "DiagnosticReport": _report,
    "ImagingStudy": _imaging_study,
}
