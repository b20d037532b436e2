"""The query engine on a real PostgreSQL: the migration, date arithmetic, counts, the guard."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from common.crypto import SiteSecret
from common.schemas.cohort import CohortCountRequest
from node.query import service
from node.query.concepts import Expander, ontology_expander
from node.query.disclosure import Policy
from node.query.exceptions import QueryRefused
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from ontology import loader
from tests.conftest import SECRET
from tests.unit.node.query.conftest import Store
from tests.unit.node.query.test_engine import COMBINATIONS

D = dt.date
MR_AFTER_FIRST_G30 = {
    "inclusion": {
        "all": [
            {"kind": "condition", "id": "dementia", "concept": "ICD10CM:G30"},
            {
                "kind": "imaging",
                "modality": ["MR"],
                "within": {"anchor": "dementia", "max_days": 90},
            },
        ]
    }
}


@pytest.fixture
def sessions(postgres_database_url: str) -> Iterator[sessionmaker[Session]]:
    migrate(postgres_database_url)
    engine = make_engine(postgres_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def ontology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('ontology') / 'o.db'}")
    loader.load(engine, icd_roots=("G30",))
    yield engine
    engine.dispose()


@pytest.fixture
def expander(ontology: Engine) -> Iterator[Expander]:
    with Session(ontology) as session:
        yield ontology_expander(session)


def request(cohort: dict[str, object], **extra: object) -> CohortCountRequest:
    return CohortCountRequest.model_validate({"project": "p", "cohort": cohort, **extra})


def test_the_temporal_query_selects_the_same_patients_on_postgresql(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        inside, on_the_day, too_late, before = (store.patient() for _ in range(4))
        for key, diagnosed, scanned in (
            (inside, D(2020, 1, 10), D(2020, 2, 9)),
            (on_the_day, D(2021, 5, 1), D(2021, 5, 1)),
            (too_late, D(2020, 1, 1), D(2020, 4, 1)),
            (before, D(2020, 6, 1), D(2020, 5, 1)),
        ):
            store.condition(key, "G30.1", diagnosed)
            store.study(key, scanned, series=(("MR", "Ax T2 FLAIR"), ("MR", "t1_mprage")))
    with transaction(sessions) as session:
        result = service.evaluate(
            request(MR_AFTER_FIRST_G30, breakdowns=["sequence_type", "age_band"]),
            session=session,
            expander=expander,
        )
    assert result.patients == {inside, on_the_day}
    assert (result.studies, result.series) == (2, 4)
    assert result.breakdowns["sequence_type"] == {"FLAIR": 2, "T1w": 2}
    assert result.breakdowns["age_band"] == {"60-79": 2}


def test_the_differencing_guard_refuses_on_postgresql(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        keys = [store.patient(sex="M" if i == 0 else "F") for i in range(25)]
        for key in keys:
            store.study(key, D(2021, 1, 1))
    secret, policy = SiteSecret(SECRET), Policy()

    def ask(cohort: dict[str, object]) -> int | None:
        with transaction(sessions) as session:
            answer = service.answer(
                request(cohort),
                session=session,
                policy=policy,
                secret=secret,
                actor="t",
                expander=expander,
            )
        return answer.patients.value

    assert ask({"inclusion": {"kind": "imaging"}}) == 25
    with pytest.raises(QueryRefused):
        ask({"inclusion": {"kind": "imaging"}, "exclusion": {"kind": "patient", "sex": ["M"]}})


def test_all_any_not_sex_and_age_select_the_same_patients_on_postgresql(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    """The scratch tables (cohort keys, demographics) are temporary tables there too, and a
    session that evaluates twice reuses them."""
    with transaction(sessions) as session:
        store = Store(session)
        keys = {name: store.patient(birth_year=1940 if name == "a" else 1990) for name in "abcd"}
        store.study(keys["a"], D(2020, 1, 1))
        store.study(keys["b"], D(2020, 1, 1))
        store.study(keys["c"], D(2020, 1, 1), series=(("CT", "head"),))
        for name in "acd":
            store.condition(keys[name], "G30.9", D(2019, 1, 1))
        store.condition("SK-NOT-ON-RECORD", "G30.9", D(2019, 1, 1))
    aged = {"inclusion": {"kind": "imaging", "modality": ["MR"], "age_min": 65}}
    with transaction(sessions) as session:
        for cohort, members in [*COMBINATIONS, (aged, "a")]:
            found = service.evaluate(request(cohort), session=session, expander=expander)
            assert found.patients == {keys[name] for name in members}, cohort
