"""Received clinical records: validated (a FHIR R4 Bundle that ``fhir.resources`` accepts, an
OMOP CDM 5.4 table with exactly its columns) and PHI-scanned by the hub itself — the patient
is the project's subject key and nobody else, no name, contact or identifier on the Patient,
a birth date no finer than the year, no text that looks like an e-mail address or telephone
number, and no date after the latest a shifted date can be.

A validation failure refuses the upload (naming the file and the field or line); a scan
result is a finding for the curator (naming the file and the field or line, never a value).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from common.deid.profile import OMOP_COLUMNS
from common.schemas.release import RecordFile, RecordFormat
from hub.curation.scan import PATTERNS
from hub.release.exceptions import ManifestInvalid

BUNDLE_NAME = "bundle.json"
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?([T ][\d:.]+([+-]\d{2}:?\d{2}|Z)?)?$")
_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_NOT_TEXT_KEYS = frozenset({"resourceType", "id", "system", "code", "reference", "url"})
_PATIENT_MUST_BE_EMPTY = ("identifier", "name", "telecom", "address", "photo", "contact")
_PERSON_MUST_BE_EMPTY = ("month_of_birth", "day_of_birth", "birth_datetime")
_OMOP_TEXT = frozenset({"stop_reason", "sig", "value_as_string", "lot_number"})


def check(
    entry: RecordFile, data: bytes, *, subject_key: str, latest_date: dt.date
) -> tuple[Counter[str], list[str]]:
    """Validate one records file; its counts (resources by type or rows by table) and the
    scan's findings. Raises :class:`ManifestInvalid` for a file that is not what it says."""
    name = _expected_name(entry, subject_key)
    if entry.format is RecordFormat.FHIR_BUNDLE:
        return _check_bundle(entry.path, data, subject_key, latest_date)
    return _check_table(entry.path, name.removesuffix(".csv"), data, subject_key, latest_date)


def _expected_name(entry: RecordFile, subject_key: str) -> str:
    path = PurePosixPath(entry.path)
    if path.parts[:2] != (subject_key, "clinical") or len(path.parts) != 3:
        raise ManifestInvalid(f"{entry.path}: records belong under <subject key>/clinical/")
    if entry.format is RecordFormat.FHIR_BUNDLE and path.name != BUNDLE_NAME:
        raise ManifestInvalid(f"{entry.path}: a FHIR Bundle is named {BUNDLE_NAME}")
    if entry.format is RecordFormat.OMOP_CSV and path.name.removesuffix(".csv") not in OMOP_COLUMNS:
        raise ManifestInvalid(f"{entry.path}: not an OMOP CDM 5.4 table name (<table>.csv)")
    return path.name


# -- FHIR -------------------------------------------------------------------------------------


def _check_bundle(
    path: str, data: bytes, subject_key: str, latest: dt.date
) -> tuple[Counter[str], list[str]]:
    try:
        raw = json.loads(data)
        Bundle.model_validate(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ManifestInvalid(f"{path}: not JSON") from None
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"])
        raise ManifestInvalid(f"{path}: not a valid FHIR R4 Bundle (at {where})") from None
    if raw.get("type") != "collection":
        raise ManifestInvalid(f"{path}: a released Bundle is of type collection")
    counts: Counter[str] = Counter()
    findings: list[str] = []
    for index, item in enumerate(raw.get("entry") or []):
        resource = item.get("resource") or {}
        kind = str(resource.get("resourceType", ""))
        counts[kind] += 1
        where = f"{path}: entry[{index}] ({kind})"
        findings += _patient_findings(where, resource, subject_key) if kind == "Patient" else []
        for field, value in _strings(resource):
            findings += _value_findings(where, field, value, subject_key, latest)
    return counts, findings


def _patient_findings(where: str, patient: dict[str, Any], subject_key: str) -> list[str]:
    found = []
    if patient.get("id") != subject_key:
        found.append(f"{where}: id is not the project's subject key")
    for field in _PATIENT_MUST_BE_EMPTY:
        if patient.get(field):
            found.append(f"{where}: {field} is not empty")
    if _FULL_DATE.match(str(patient.get("birthDate", ""))):
        found.append(f"{where}: birthDate is finer than the year")
    return found


def _strings(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(field path, string) for every string under ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{prefix}[{index}]")
    elif isinstance(value, str):
        yield prefix, value


def _value_findings(
    where: str, field: str, value: str, subject_key: str, latest: dt.date
) -> list[str]:
    key = field.rsplit(".", 1)[-1].split("[", 1)[0]
    if key == "reference":
        if value.startswith("Patient/") and value != f"Patient/{subject_key}":
            return [f"{where}: {field} names another patient"]
        return []
    if _DATE.match(value):
        return (
            [f"{where}: {field} is a date outside the shifted range"]
            if _after(value, latest)
            else []
        )
    if key in _NOT_TEXT_KEYS:
        return []
    return [
        f"{where}: {field} holds what looks like {label}"
        for label, p in PATTERNS
        if p.search(value)
    ]


# -- OMOP -------------------------------------------------------------------------------------


def _check_table(
    path: str, table: str, data: bytes, subject_key: str, latest: dt.date
) -> tuple[Counter[str], list[str]]:
    try:
        rows = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        header = next(rows, None)
    except UnicodeDecodeError:
        raise ManifestInvalid(f"{path}: not UTF-8 text") from None
    if header is None or tuple(header) != OMOP_COLUMNS[table]:
        raise ManifestInvalid(f"{path}: line 1: not the {table} table's CDM 5.4 columns")
    counts: Counter[str] = Counter()
    findings: list[str] = []
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ManifestInvalid(f"{path}: line {line}: {len(row)} fields, not {len(header)}")
        counts[table] += 1
        findings += _row_findings(
            f"{path}: line {line}", table, dict(zip(header, row, strict=True)), subject_key, latest
        )
    return counts, findings


def _row_findings(
    where: str, table: str, row: dict[str, str], subject_key: str, latest: dt.date
) -> list[str]:
    found = []
    if row.get("person_id", subject_key) != subject_key:
        found.append(f"{where}: person_id is not the project's subject key")
    if table == "person":
        found += [
            f"{where}: {column} is not empty" for column in _PERSON_MUST_BE_EMPTY if row[column]
        ]
    for column, value in row.items():
        if not value:
            continue
        if column.endswith(("_date", "_datetime")):
            if _after(value, latest):
                found.append(f"{where}: {column} is a date outside the shifted range")
        elif column.endswith("_source_value") or column in _OMOP_TEXT:
            found += [
                f"{where}: {column} holds what looks like {label}"
                for label, pattern in PATTERNS
                if pattern.search(value)
            ]
    return found


def _after(value: str, latest: dt.date) -> bool:
    """Whether a FHIR or OMOP date (a year, year-month or full date) lies after ``latest``."""
    try:
        if len(value) >= 10:
            return dt.date.fromisoformat(value[:10]) > latest
        return int(value[:4]) > latest.year
    except ValueError:
        return False
