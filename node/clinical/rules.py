"""Apply a profile's clinical rules to one FHIR resource or one OMOP row.

The rules come from the ``clinical`` section of a de-identification profile
(:class:`common.deid.profile.ClinicalRules`); the mappings from the same
:class:`~common.crypto.Pseudonymizer` the DICOM engine uses for that profile, so that a
patient gets one subject key, one date offset and one set of UIDs across images and records.

Anything without a rule is removed. The rules never see the hospital patient ID: a
:class:`PatientRef` carries the subject key and, when a rule needs it, the date offset.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.crypto import Pseudonymizer
from common.deid.profile import ClinicalAction, ClinicalRules, FieldRule, Profile
from common.errors import ConfigurationError

logger = logging.getLogger(__name__)

PATIENT_REFERENCE_PREFIX = "Patient/"
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(.*))?)?$")
_DICOM_UID = re.compile(r"^[0-9]+(?:\.[0-9]+)+$")
_DICOM_UID_SYSTEM = "urn:dicom:uid"
_OID_PREFIX = "urn:oid:"
_IDENTIFYING_KEYS = frozenset({"id", "uid"})
_HASH_LENGTH = 16
_SOURCE_KEY_LENGTH = 24  # hex: 96 bits


@dataclass(frozen=True, slots=True)
class PatientRef:
    """A patient as the rules see it: the subject key, and the offset if dates move."""

    subject_key: str
    offset_days: int | None = None


# A reference ("urn:uuid:…", "Patient/123", "Observation/9") → the patient it names, if any.
PatientResolver = Callable[[str], PatientRef | None]
# A reference → the resource type it points to, if known (from a bundle's fullUrls).
TypeResolver = Callable[[str], str | None]


class ClinicalPseudonymizer:
    """Stage-1 (or stage-2) rules of one profile, with one project's mappings."""

    def __init__(
        self,
        profile: Profile,
        mapper: Pseudonymizer,
        subject_keys: dict[str, str] | None = None,
    ) -> None:
        if profile.clinical is None:
            raise ConfigurationError(
                f"profile {profile.name} ({profile.source}) has no clinical section: "
                "it cannot de-identify FHIR or OMOP records"
            )
        self.profile = profile
        self.rules: ClinicalRules = profile.clinical
        self.mapper = mapper
        self.subject_keys = subject_keys
        self.shifts_dates = any(
            rule.action is ClinicalAction.DATE_SHIFT
            for table in (*self.rules.fhir.values(), *self.rules.omop.values())
            for rule in table.values()
        )

    # -- keys ------------------------------------------------------------------------------

    def subject_key(self, patient_id: str) -> str | None:
        """The patient's subject key, as the DICOM engine derives it (None: missing from the
        profile's lookup table)."""
        if self.subject_keys is not None:
            return self.subject_keys.get(patient_id)
        return self.mapper.subject_key(patient_id)

    def patient(self, patient_id: str, subject_key: str) -> PatientRef:
        offset = self.mapper.date_offset_days(patient_id) if self.shifts_dates else None
        return PatientRef(subject_key, offset)

    def hashed(self, kind: str, value: str) -> str:
        return self.mapper.hash_value(f"{kind}\x00{value}", _HASH_LENGTH)

    def source_key(self, kind: str, value: str) -> str:
        """A stable, non-identifying name for a source record (idempotent re-imports).

        Keyed like every pseudonym; hex rather than base32, which costs more than the HMAC
        itself at one call per imported row."""
        digest = self.mapper.secret.digest("source", self.mapper.project, f"{kind}\x00{value}")
        return digest.hex()[:_SOURCE_KEY_LENGTH]

    # -- FHIR ------------------------------------------------------------------------------

    def fhir_resource(
        self,
        resource: dict[str, Any],
        patient: PatientRef | None,
        patients: PatientResolver,
        types: TypeResolver,
        only: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """A new resource: each element with a rule transformed, every other one dropped.

        ``only``: the elements the caller will read (the fact store reads a few); the others
        are left out rather than transformed for nothing."""
        resource_type = str(resource.get("resourceType", ""))
        rules = self.rules.fhir.get(resource_type, {})
        out: dict[str, Any] = {"resourceType": resource_type}
        context = _Context(self, patient, patients, types)
        for name, value in resource.items():
            if only is not None and name not in only:
                continue
            rule = rules.get(name)
            if rule is None or rule.action is ClinicalAction.REDACT:
                continue
            if name == "id" and rule.action is ClinicalAction.KEYED_HASH:
                out[name] = context.resource_id(resource_type, str(value))
                continue
            new = context.apply(rule, value)
            if new is not None:
                out[name] = new
        return out

    # -- OMOP ------------------------------------------------------------------------------

    def omop_row(
        self,
        table: str,
        row: dict[str, str],
        patient: PatientRef,
        only: frozenset[str] | None = None,
    ) -> dict[str, str]:
        """A new row with every column of the table: ruled ones transformed, others empty.

        ``only``: the columns the caller will read; the row then holds those alone (a keyed
        hash nobody stores is time lost, at one per column and row)."""
        rules = self.rules.omop.get(table, {})
        columns = row if only is None else [c for c in only if c in row]
        out: dict[str, str] = {}
        for column in columns:
            value = row[column]
            rule = rules.get(column)
            if rule is None or rule.action is ClinicalAction.REDACT or value == "":
                out[column] = ""
            elif rule.action is ClinicalAction.KEEP:
                out[column] = value
            elif rule.action is ClinicalAction.KEYED_HASH:
                out[column] = (
                    patient.subject_key
                    if column == "person_id"
                    else self.hashed(f"omop:{column}", value)
                )
            elif rule.action is ClinicalAction.DATE_SHIFT:
                out[column] = shift_date(value, _required_offset(patient))
            else:
                out[column] = generalize_date(value, rule.to)
        return out


@dataclass(frozen=True, slots=True)
class _Context:
    rules: ClinicalPseudonymizer
    patient: PatientRef | None
    patients: PatientResolver
    types: TypeResolver

    def resource_id(self, resource_type: str, value: str) -> str:
        if resource_type == "Patient" and self.patient is not None:
            return self.patient.subject_key
        return self.rules.hashed(f"fhir:{resource_type}", value)

    def apply(self, rule: FieldRule, value: Any) -> Any:
        if rule.action is ClinicalAction.KEEP:
            return value
        if rule.action is ClinicalAction.DATE_SHIFT:
            offset = _required_offset(self.patient)
            return _map_strings(value, lambda text: shift_date(text, offset))
        if rule.action is ClinicalAction.GENERALIZE:
            return _map_strings(value, lambda text: generalize_date(text, rule.to))
        return self.keyed(value, "")

    def keyed(self, value: Any, key: str) -> Any:
        """Replace the identifying parts of ``value``; keep the rest (see ClinicalAction)."""
        if isinstance(value, list):
            return [self.keyed(item, key) for item in value]
        if isinstance(value, dict):
            if "reference" in value:
                # Display and identifier of a reference may name the patient: dropped.
                return {"reference": self.reference(str(value["reference"]))}
            if _is_identifier(value):
                return self.identifier(value)
            return {k: self.keyed(v, k) for k, v in value.items()}
        if isinstance(value, str) and key in _IDENTIFYING_KEYS:
            return self.uid(value) if key == "uid" else self.rules.hashed("fhir:id", value)
        return value

    def identifier(self, identifier: dict[str, Any]) -> dict[str, Any]:
        system = str(identifier.get("system", ""))
        value = str(identifier["value"])
        if system == _DICOM_UID_SYSTEM:
            new = self.uid(value)
        else:
            new = self.rules.hashed(f"identifier:{system}", value)
        return {"system": system, "value": new} if system else {"value": new}

    def uid(self, value: str) -> str:
        """A DICOM UID through the DICOM engine's mapping (``urn:oid:`` form kept)."""
        bare = value.removeprefix(_OID_PREFIX)
        if not _DICOM_UID.match(bare):
            return self.rules.hashed("fhir:uid", value)
        mapped = self.rules.mapper.uid(bare)
        return f"{_OID_PREFIX}{mapped}" if value.startswith(_OID_PREFIX) else mapped

    def reference(self, reference: str) -> str:
        patient = self.patients(reference)
        if patient is not None:
            return f"{PATIENT_REFERENCE_PREFIX}{patient.subject_key}"
        if reference.startswith("#"):
            return reference  # a contained resource: local, not an identifier
        resource_type = self.types(reference)
        logical = reference.rstrip("/").rsplit("/", 2)
        if resource_type is None and len(logical) >= 2 and logical[-2][:1].isupper():
            resource_type, reference_id = logical[-2], logical[-1]
        elif resource_type is not None:
            reference_id = reference.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        else:
            return f"urn:uuid:{self.rules.hashed('fhir:reference', reference)}"
        return f"{resource_type}/{self.rules.hashed(f'fhir:{resource_type}', reference_id)}"


def _is_identifier(element: dict[str, Any]) -> bool:
    """An Identifier (system/type + a string value), not a Quantity (value + code/unit)."""
    return (
        isinstance(element.get("value"), str)
        and ("system" in element or "type" in element)
        and "code" not in element
        and "unit" not in element
    )


def _required_offset(patient: PatientRef | None) -> int:
    if patient is None or patient.offset_days is None:
        raise ConfigurationError("date-shift needs the patient's offset, which is not known")
    return patient.offset_days


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(item, change) for item in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    return value


def shift_date(text: str, days: int) -> str:
    """Move a FHIR or OMOP date (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD[rest]``) by ``days``;
    the time of day and the precision stay as they were."""
    match = _DATE.match(text.strip())
    if match is None:
        return text
    year, month, day, rest = match.groups()
    start = dt.date(int(year), int(month or 1), int(day or 1))
    moved = start + dt.timedelta(days=days)
    if day is not None:
        return f"{moved.isoformat()}{rest or ''}"
    if month is not None:
        return f"{moved.year:04d}-{moved.month:02d}"
    return f"{moved.year:04d}"


def generalize_date(text: str, to: str) -> str:
    match = _DATE.match(text.strip())
    if match is None:
        return ""  # not a date: nothing to generalize, and not kept
    year, month = match.group(1), match.group(2)
    if to == "month" and month is not None:
        return f"{year}-{month}"
    return year


def parse_date(text: str | None) -> dt.date | None:
    """The date of a FHIR or OMOP date/dateTime (first day of a partial date)."""
    if not text:
        return None
    match = _DATE.match(text.strip())
    if match is None:
        return None
    year, month, day, _ = match.groups()
    try:
        return dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
