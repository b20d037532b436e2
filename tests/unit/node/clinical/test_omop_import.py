"""Importing OMOP CDM 5.4 tables: persons first, then their facts, row by row."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from node.clinical import omop, service
from node.clinical.exceptions import InvalidClinicalInput, UnknownPatient
from node.clinical.facts import OMOP_CONCEPT_SYSTEM
from node.clinical.models import FACT_TABLES, Condition, Measurement, Person
from node.clinical.service import ImportContext, ImportResult
from node.store.db import transaction
from tests.unit.node.clinical.conftest import OMOP_DIR


def import_folder(
    sessions: sessionmaker[Session], context: ImportContext, folder: Path = OMOP_DIR
) -> list[ImportResult]:
    results = []
    for table, path in omop.table_files(folder):
        with transaction(sessions) as session:
            results.append(
                service.import_omop_table(session=session, context=context, path=path, table=table)
            )
    return results


def counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with transaction(sessions) as session:
        return {
            name: int(session.execute(select(func.count()).select_from(model)).scalar_one())
            for name, model in {**FACT_TABLES, "person": Person}.items()
        }


def test_every_table_of_the_folder_becomes_facts(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    results = import_folder(sessions, context)
    assert [r.format for r in results] == [f"omop-{t}" for t in omop.TABLE_ORDER]
    assert counts(sessions) == {
        "person": 3,
        "visit": 131,
        "condition": 42,
        "drug": 48,
        "measurement": 1265,
        "observation": 789,
        "procedure": 147,
        "imaging_study": 0,
    }


def test_persons_get_sex_birth_year_and_death_date(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_folder(sessions, context)
    with transaction(sessions) as session:
        persons = session.execute(select(Person).order_by(Person.birth_year)).scalars().all()
    assert [(p.sex, p.birth_year) for p in persons] == [("M", 1938), ("M", 1998), ("F", 2014)]
    deaths = [p.death_date.isoformat() for p in persons if p.death_date is not None]
    assert deaths == ["2019-05-28"]


def test_measurements_keep_concept_value_unit_and_date(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_folder(sessions, context)
    with transaction(sessions) as session:
        weight = session.execute(
            select(Measurement).where(
                Measurement.code == "3025315", Measurement.date == dt.date(2013, 5, 17)
            )
        ).scalar_one()
    assert weight.system == OMOP_CONCEPT_SYSTEM
    assert (weight.value_as_number, weight.unit) == (48.1, "kg")


def test_source_values_and_source_ids_are_not_stored(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_folder(sessions, context)
    with transaction(sessions) as session:
        stored = "\n".join(
            " ".join(str(v) for v in row)
            for table in (*FACT_TABLES, "person", "audit_record")
            for row in session.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
        )
    assert "1007c05b-8d20-8fe6-6790-44622f8316df" not in stored  # person_source_value
    assert "65363002" not in stored  # condition_source_value (a free-text column)


def test_reimporting_the_folder_adds_nothing(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_folder(sessions, context)
    before = counts(sessions)
    import_folder(sessions, context)
    assert counts(sessions) == before


def test_a_bad_row_is_named_by_line_and_column_and_the_table_is_not_imported(
    sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path
) -> None:
    shutil.copy(OMOP_DIR / "person.csv", tmp_path / "PERSON.csv")
    lines = (OMOP_DIR / "condition_occurrence.csv").read_text().splitlines()
    cells = lines[5].split(",")
    cells[3] = "03/15/2016"  # condition_start_date
    lines[5] = ",".join(cells)
    (tmp_path / "condition_occurrence.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidClinicalInput) as caught:
        import_folder(sessions, context, tmp_path)
    assert str(caught.value).startswith(
        "condition_occurrence.csv: line 6: condition_start_date: is not a date"
    )
    assert "03/15/2016" not in str(caught.value)
    with transaction(sessions) as session:
        assert session.execute(select(func.count()).select_from(Condition)).scalar_one() == 0


def test_a_row_of_an_unknown_person_is_refused(
    sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path
) -> None:
    shutil.copy(OMOP_DIR / "measurement.csv", tmp_path / "measurement.csv")
    with pytest.raises(UnknownPatient, match=r"measurement\.csv: line 2: person_id"):
        import_folder(sessions, context, tmp_path)


def test_a_table_missing_a_needed_column_is_refused_at_its_header(
    sessions: sessionmaker[Session], context: ImportContext, tmp_path: Path
) -> None:
    (tmp_path / "person.csv").write_text("person_id,year_of_birth\n1,1950\n")
    with pytest.raises(InvalidClinicalInput, match=r"person\.csv: line 1: gender_concept_id"):
        import_folder(sessions, context, tmp_path)
