"""The clinical fact store on a real PostgreSQL: migration, import, idempotent upserts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from node.clinical import omop, service
from node.clinical.exceptions import InvalidClinicalInput
from node.clinical.models import FACT_TABLES, Condition, ImagingStudy, Person
from node.clinical.service import ImportContext
from node.store.correspondence import Keyring, new_key, parse_key
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from tests.conftest import SECRET
from tests.unit.node.clinical.conftest import OMOP_DIR, SYNTHEA_BUNDLES, hospital_bundle


@pytest.fixture
def sessions(postgres_database_url: str) -> Iterator[sessionmaker[Session]]:
    migrate(postgres_database_url)
    engine = make_engine(postgres_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def context() -> ImportContext:
    return ImportContext(
        rules=service.build_rules("pseudonymize", "site", SECRET),
        keyring=Keyring(current=parse_key(new_key())),
        actor="test",
    )


def import_everything(sessions: sessionmaker[Session], context: ImportContext) -> None:
    for path in SYNTHEA_BUNDLES:
        with transaction(sessions) as session:
            service.import_fhir_file(session=session, context=context, path=path)
    for table, path in omop.table_files(OMOP_DIR):
        with transaction(sessions) as session:
            service.import_omop_table(session=session, context=context, path=path, table=table)


def counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with transaction(sessions) as session:
        return {
            name: int(session.execute(select(func.count()).select_from(model)).scalar_one())
            for name, model in {**FACT_TABLES, "person": Person}.items()
        }


def test_fhir_and_omop_import_into_postgresql_and_a_second_import_adds_nothing(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    import_everything(sessions, context)
    first = counts(sessions)
    assert first["person"] == 5 and first["measurement"] > 1265
    import_everything(sessions, context)
    assert counts(sessions) == first


def test_a_failed_bundle_leaves_nothing_behind_in_postgresql(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    bundle = hospital_bundle()
    bundle["entry"][3]["resource"]["started"] = "soon"
    with pytest.raises(InvalidClinicalInput), transaction(sessions) as session:
        service.import_fhir_bundle(session=session, context=context, bundle=bundle)
    with transaction(sessions) as session:
        assert session.execute(select(func.count()).select_from(Condition)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(Person)).scalar_one() == 0


def test_dementia_with_a_study_within_90_days_is_answered_in_postgresql_sql(
    sessions: sessionmaker[Session], context: ImportContext
) -> None:
    with transaction(sessions) as session:
        service.import_fhir_bundle(session=session, context=context, bundle=hospital_bundle())

    days = func.abs(ImagingStudy.date - Condition.date)
    query = (
        select(func.count(func.distinct(Condition.subject_key)))
        .join(ImagingStudy, ImagingStudy.subject_key == Condition.subject_key)
        .where(Condition.code == "52448006", ImagingStudy.modalities.contains("MR"))
    )
    with transaction(sessions) as session:
        assert session.execute(query.where(days <= 90)).scalar_one() == 1
        assert session.execute(query.where(days <= 30)).scalar_one() == 0
