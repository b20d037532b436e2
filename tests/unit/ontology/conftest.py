"""A SQLite ontology loaded once per session (ICD limited to the seeds' subtrees, for speed);
the tests only read it. Tests that write build their own small database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from ontology import loader

ICD_ROOTS = ("F00", "F01", "F03", "G30", "G31", "G35", "C18", "C22", "C34", "C50", "C61")


@pytest.fixture(scope="session")
def ontology_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("ontology") / "ontology.db"
    engine = create_engine(f"sqlite:///{path}")
    loader.load(engine, icd_roots=ICD_ROOTS)
    yield engine
    engine.dispose()


@pytest.fixture
def session(ontology_engine: Engine) -> Iterator[Session]:
    with Session(ontology_engine) as session:
        yield session
        session.rollback()
