"""The catalogue on a real PostgreSQL: the node builds it, the hub stores and searches it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.catalogue import MarginalCell, MarginalDimension
from hub.catalogue import service as hub_catalogue
from hub.catalogue.ontology import concept_expander
from hub.catalogue.schemas import CatalogueQuery
from hub.db import make_engine as make_hub_engine
from hub.db import make_sessionmaker as make_hub_sessionmaker
from hub.db import migrate as migrate_hub
from hub.db import transaction
from node.catalogue import service as node_catalogue
from node.store.db import make_engine, make_sessionmaker, migrate
from ontology import loader
from tests.unit.hub.catalogue.test_catalogue_search import cell, facet, publish, search
from tests.unit.node.catalogue.test_catalogue import add_patients

pytestmark = pytest.mark.peers


@pytest.fixture
def hub_sessions(postgres_database_url: str) -> Iterator[sessionmaker[Session]]:
    migrate_hub(postgres_database_url)
    engine = make_hub_engine(postgres_database_url)
    yield make_hub_sessionmaker(engine)
    engine.dispose()


def test_the_hub_searches_publications_on_postgresql(
    hub_sessions: sessionmaker[Session],
) -> None:
    publish(hub_sessions, "north", [cell(), cell(sequence_type="FLAIR", series=25)])
    publish(hub_sessions, "south", [cell(slice_band="3-5", series=30)])
    result = search(hub_sessions, modality=["mr"], slice_thickness_max=1.5)
    assert {n.node: n.series for n in result.nodes} == {"north": 65}
    assert facet(result, "slice_band") == {"0-1": 65, "3-5": 30}
    assert search(hub_sessions, sequence_type=["t2"]).total.series == 25


def test_concepts_expand_through_the_ontology_in_postgresql(
    hub_sessions: sessionmaker[Session],
) -> None:
    engine = hub_sessions.kw["bind"]
    loader.load(engine, icd_roots=("G30",))
    dementia = MarginalCell(
        dimension=MarginalDimension.CONDITION, system="ICD10CM", code="G30.9", patients=30
    )
    publish(hub_sessions, "north", [cell()], [dementia])
    with transaction(hub_sessions) as session:
        query = CatalogueQuery(concepts=["ICD10CM:G30"])
        result = hub_catalogue.search(query, session=session, expand=concept_expander(session))
    assert result.concepts[0].nodes == {"north": 30}


def test_a_node_on_postgresql_builds_the_same_catalogue_as_on_sqlite(
    postgres_database_url: str, tmp_path: object
) -> None:
    publications = []
    for url in (postgres_database_url, f"sqlite:///{tmp_path}/node.db"):
        migrate(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            add_patients(session, 14, description="t1_mprage_sag")
            add_patients(session, 3, description="ep2d_diff")
        with transaction(sessions) as session:
            publications.append(node_catalogue.build(session=session))
        engine.dispose()
    on_postgres, on_sqlite = publications
    assert on_postgres.cells == on_sqlite.cells
    assert on_postgres.marginals == on_sqlite.marginals
    assert on_postgres.cells  # something was published
