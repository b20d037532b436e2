"""A node store built row by row (patients, studies, series, conditions, measurements), and
the real ontology (ICD-10-CM limited to the dementia subtree, for speed)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from common.crypto import SiteSecret
from node.clinical.models import Condition, Measurement, Person
from node.query import models as query_models  # noqa: F401 - registers the query tables
from node.query.concepts import Expander, ontology_expander
from node.store.db import make_engine, make_sessionmaker
from node.store.models import Base, Patient, Series, Study
from ontology import loader
from tests.conftest import SECRET

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
BRAIN_VOLUME = "LOINC:81243-3"  # any LOINC code serves: the tests store and ask this one

_numbers = itertools.count(1)


@dataclass
class Store:
    """Adds rows the way the ingest and the clinical import would leave them."""

    session: Session
    sources: Iterator[int] = field(default_factory=itertools.count)

    def patient(self, *, sex: str = "F", birth_year: int = 1950) -> str:
        key = f"SK{next(_numbers):010d}"
        self.session.add(Patient(subject_key=key, sex=sex, birth_year=birth_year))
        self.session.add(Person(subject_key=key, sex=sex, birth_year=birth_year))
        self.session.flush()
        return key

    def study(
        self,
        key: str,
        when: dt.date,
        *,
        series: tuple[tuple[str, str], ...] = (("MR", "t1_mprage_sag"),),
    ) -> None:
        patient = self.session.query(Patient).filter_by(subject_key=key).one()
        n = next(_numbers)
        study = Study(study_uid=f"2.25.{n}", study_date=when, patient=patient)
        for index, (modality, description) in enumerate(series):
            study.series.append(
                Series(
                    series_uid=f"2.25.{n}.{index}",
                    modality=modality,
                    body_part="HEAD" if modality == "MR" else "CHEST",
                    description=description,
                    manufacturer="SIEMENS",
                    field_strength=3.0 if modality == "MR" else None,
                    slice_thickness=1.0,
                )
            )
        self.session.add(study)
        self.session.flush()

    def condition(self, key: str, code: str, when: dt.date, system: str = ICD10CM) -> None:
        self.session.add(
            Condition(
                subject_key=key,
                system=system,
                code=code,
                date=when,
                source=f"test:condition/{next(self.sources)}",
            )
        )

    def measurement(
        self, key: str, value: float, when: dt.date, code: str = "81243-3", unit: str = "mL"
    ) -> None:
        self.session.add(
            Measurement(
                subject_key=key,
                system=LOINC,
                code=code,
                date=when,
                value_as_number=value,
                unit=unit,
                source=f"test:measurement/{next(self.sources)}:{next(_numbers)}",
            )
        )


def sqlite_sessions(path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    return make_sessionmaker(engine)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    factory = sqlite_sessions(tmp_path / "node.db")
    yield factory
    bind = factory.kw["bind"]
    assert isinstance(bind, Engine)
    bind.dispose()


@pytest.fixture(scope="session")
def ontology_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('ontology') / 'ontology.db'}")
    loader.load(engine, icd_roots=("G30",))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def node_with_ontology(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node database with the store's tables and the ontology loaded, to copy from."""
    path = tmp_path_factory.mktemp("template") / "node.db"
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    loader.load(engine, icd_roots=("G30",))
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture
def expander(ontology_engine: Engine) -> Iterator[Expander]:
    with Session(ontology_engine) as session:
        yield ontology_expander(session)


@pytest.fixture
def secret() -> SiteSecret:
    return SiteSecret(SECRET)
