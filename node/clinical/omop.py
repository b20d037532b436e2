"""OMOP CDM 5.4 CSV tables: read row by row, check, turn pseudonymized rows into facts.

A folder holds one CSV per table, named after it in any case (``person.csv``,
``PERSON.csv``); the tables are imported in :data:`TABLE_ORDER`, person first, since every
other row names its patient by ``person_id``. Rows are read one at a time, so memory stays
flat whatever the size of a table. Concepts are stored as OMOP concept ids under the system
``https://ohdsi.org/omop/concept``.

Errors name the file, the line and the column — never the value.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node.clinical.exceptions import InvalidClinicalInput
from node.clinical.facts import OMOP_CONCEPT_SYSTEM, Extracted, Fact, PersonFacts
from node.clinical.fhir import FileDigest
from node.clinical.rules import parse_date

logger = logging.getLogger(__name__)

TABLE_ORDER = (
    "person",
    "death",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "measurement",
    "observation",
    "procedure_occurrence",
)
# OMOP gender concepts (the Gender vocabulary).
_SEX = {"8507": "M", "8532": "F", "8521": "O", "8551": "U"}


@dataclass(frozen=True, slots=True)
class TableSpec:
    """Where a table's facts come from: its id, concept and date columns, and the fact
    table they go to."""

    id_column: str
    concept: str
    date: str
    end_date: str = ""
    fact_table: str = ""


SPECS: dict[str, TableSpec] = {
    "person": TableSpec("person_id", "gender_concept_id", ""),
    "death": TableSpec("person_id", "", "death_date"),
    "visit_occurrence": TableSpec(
        "visit_occurrence_id", "visit_concept_id", "visit_start_date", "visit_end_date", "visit"
    ),
    "condition_occurrence": TableSpec(
        "condition_occurrence_id",
        "condition_concept_id",
        "condition_start_date",
        "condition_end_date",
        "condition",
    ),
    "drug_exposure": TableSpec(
        "drug_exposure_id",
        "drug_concept_id",
        "drug_exposure_start_date",
        "drug_exposure_end_date",
        "drug",
    ),
    "measurement": TableSpec(
        "measurement_id", "measurement_concept_id", "measurement_date", "", "measurement"
    ),
    "observation": TableSpec(
        "observation_id", "observation_concept_id", "observation_date", "", "observation"
    ),
    "procedure_occurrence": TableSpec(
        "procedure_occurrence_id",
        "procedure_concept_id",
        "procedure_date",
        "procedure_end_date",
        "procedure",
    ),
}


# The columns :func:`extract` reads, per table (besides the spec's concept and dates).
_READ = frozenset(
    {
        "year_of_birth",
        "birth_datetime",
        "gender_concept_id",
        "value_as_number",
        "unit_source_value",
        "value_as_concept_id",
    }
)


def columns_read(table: str) -> frozenset[str]:
    """What :func:`extract` reads of a pseudonymized row of ``table``."""
    spec = SPECS[table]
    return _READ | {c for c in (spec.concept, spec.date, spec.end_date) if c}


@dataclass(frozen=True, slots=True)
class Row:
    where: str  # "person.csv: line 12"
    values: dict[str, str]


def table_files(folder: Path) -> list[tuple[str, Path]]:
    """The tables present in ``folder``, in import order."""
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    return [(table, by_name[f"{table}.csv"]) for table in TABLE_ORDER if f"{table}.csv" in by_name]


def read_table(path: Path, table: str, name: str, digest: FileDigest) -> Iterator[Row]:
    """The rows of one table, with the columns its spec needs checked present."""
    spec = SPECS[table]
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(_hashed_lines(f, digest))
        header = next(reader, None)
        if header is None:
            raise InvalidClinicalInput(f"{name}: line 1", "the file is empty; a header is needed")
        header = [column.strip().lower() for column in header]
        for required in (spec.id_column, "person_id", spec.concept, spec.date):
            if required and required not in header:
                raise InvalidClinicalInput(f"{name}: line 1", "missing column", required)
        width = len(header)
        for record in reader:
            where = f"{name}: line {reader.line_num}"
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if len(record) != width:
                raise InvalidClinicalInput(
                    where, f"has {len(record)} columns where the header has {width}"
                )
            yield Row(where, dict(zip(header, record, strict=True)))


def _hashed_lines(lines: Iterator[str], digest: FileDigest) -> Iterator[str]:
    for line in lines:
        digest.update(line.encode("utf-8"))
        yield line


def check_row(table: str, row: Row) -> None:
    """The values the fact store needs are there and well formed (names the column only)."""
    spec = SPECS[table]
    for column in (spec.id_column, "person_id"):
        if not row.values.get(column, "").strip():
            raise InvalidClinicalInput(row.where, "is empty", column)
    if spec.concept and not row.values.get(spec.concept, "").strip().isdigit():
        raise InvalidClinicalInput(row.where, "is not a concept id", spec.concept)
    for column in (c for c in (spec.date, spec.end_date) if c):
        text = row.values.get(column, "").strip()
        if column == spec.date and not text:
            raise InvalidClinicalInput(row.where, "is empty", column)
        if text and parse_date(text) is None:
            raise InvalidClinicalInput(row.where, "is not a date (YYYY-MM-DD)", column)
    for column in ("value_as_number", "range_low", "range_high", "quantity"):
        text = row.values.get(column, "").strip()
        if text and _number(text) is None:
            raise InvalidClinicalInput(row.where, "is not a number", column)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def extract(table: str, row: dict[str, str], subject_key: str, source: str) -> Extracted:
    """The facts of one pseudonymized row (columns a rule removed are empty)."""
    spec = SPECS[table]
    if table == "person":
        year = row.get("year_of_birth", "") or row.get("birth_datetime", "")[:4]
        return Extracted(
            person=PersonFacts(
                subject_key=subject_key,
                sex=_SEX.get(row.get("gender_concept_id", ""), ""),
                birth_year=int(year) if year.isdigit() else None,
            )
        )
    if table == "death":
        return Extracted(
            person=PersonFacts(subject_key=subject_key, death_date=parse_date(row["death_date"]))
        )
    code = row.get(spec.concept, "")
    if not code:
        return Extracted()  # the rules removed the concept: nothing to query on
    values: dict[str, object] = {
        "subject_key": subject_key,
        "source": f"{source}#0",
        "system": OMOP_CONCEPT_SYSTEM,
        "code": code,
        "display": "",
        "date": parse_date(row.get(spec.date)),
    }
    if spec.end_date:
        values["end_date"] = parse_date(row.get(spec.end_date))
    if spec.fact_table in ("measurement", "observation"):
        number = row.get("value_as_number", "")
        values["value_as_number"] = _number(number) if number else None
        values["unit"] = row.get("unit_source_value", "")[:64]
    if spec.fact_table == "observation":
        concept = _concept(row.get("value_as_concept_id", ""))
        if concept:
            values["value_system"] = OMOP_CONCEPT_SYSTEM
            values["value_code"] = concept
    return Extracted([Fact(spec.fact_table, values)])


def _concept(value: str) -> str:
    return value if value and value != "0" else ""
