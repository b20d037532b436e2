"""The hub catalogue: publications in, faceted search across nodes out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.catalogue import (
    VIEWS,
    CataloguePublication,
    CubeCell,
    MarginalCell,
    MarginalDimension,
)
from hub import models
from hub.catalogue import service as catalogue
from hub.catalogue.models import CatalogueCell
from hub.catalogue.schemas import CatalogueQuery
from hub.db import Base, make_engine, make_sessionmaker, transaction
from hub.nodes.models import Node

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    models.import_all()
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def cell(view: str = "sequence", **values: object) -> CubeCell:
    """A cell of ``view``: the defaults of its dimensions, overridden by ``values``."""
    defaults: dict[str, object] = {
        "modality": "MR",
        "body_part": "BRAIN",
        "sequence_type": "T1w",
        "contrast": False,
        "manufacturer": "Siemens",
        "field_strength": 3.0,
        "slice_band": "0-1",
        "study_year": 2021,
        "patients": 20,
        "studies": 20,
        "series": 40,
    }
    counts = ("patients", "studies", "series")
    wanted = {k: v for k, v in defaults.items() if k in VIEWS[view] or k in counts}
    return CubeCell(view=view, **{**wanted, **values})  # type: ignore[arg-type]


def publish(
    sessions: sessionmaker[Session],
    name: str,
    cells: list[CubeCell],
    marginals: list[MarginalCell] | None = None,
) -> None:
    with transaction(sessions) as session:
        node = session.scalar(select(Node).where(Node.name == name))
        if node is None:
            node = Node(node_id=f"id-{name}", name=name)
            session.add(node)
            session.flush()
        publication = CataloguePublication(
            generated_at=NOW,
            threshold=10,
            rounding=5,
            cells=cells,
            marginals=marginals or [],
            suppressed_cells=0,
            suppressed_marginals=0,
        )
        catalogue.store_publication(session=session, node=node, publication=publication)


def search(sessions: sessionmaker[Session], **filters: object) -> catalogue.SearchResult:
    with transaction(sessions) as session:
        return catalogue.search(CatalogueQuery(**filters), session=session)  # type: ignore[arg-type]


def facet(result: catalogue.SearchResult, name: str) -> dict[str, int]:
    return {value.value: value.series for value in result.facets[name]}


def test_a_search_adds_up_every_node_and_tells_each_apart(
    sessions: sessionmaker[Session],
) -> None:
    publish(sessions, "north", [cell(), cell(sequence_type="FLAIR", series=25)])
    publish(sessions, "south", [cell(patients=15, studies=15, series=30)])
    result = search(sessions, modality=["mr"], sequence_type=["T1w"])
    assert result.total.series == 70
    assert {n.node: n.series for n in result.nodes} == {"north": 40, "south": 30}


def test_facets_count_what_choosing_another_value_would_give(
    sessions: sessionmaker[Session],
) -> None:
    publish(
        sessions,
        "north",
        [cell(), cell(sequence_type="FLAIR", series=25), cell(modality="CT", sequence_type="CT")],
    )
    result = search(sessions, modality=["MR"], sequence_type=["T1w"])
    assert facet(result, "sequence_type") == {"T1w": 40, "FLAIR": 25}  # own filter ignored
    assert facet(result, "modality") == {"MR": 40}  # the CT cell is no T1w
    assert facet(result, "contrast") == {"no": 40}
    assert facet(search(sessions, modality=["MR"]), "modality") == {"MR": 65, "CT": 40}


def test_slice_thickness_keeps_whole_bands_at_or_below_the_limit(
    sessions: sessionmaker[Session],
) -> None:
    publish(
        sessions,
        "north",
        [cell(slice_band="0-1"), cell(slice_band="1-1.5", series=11), cell(slice_band="3-5")],
    )
    assert search(sessions, slice_thickness_max=1.5).total.series == 51
    assert search(sessions, slice_thickness_max=0.5).total.series == 0


def test_a_sequence_family_expands_to_its_members(sessions: sessionmaker[Session]) -> None:
    publish(
        sessions,
        "north",
        [
            cell(sequence_type="DSC perfusion", contrast=True, series=12),
            cell(sequence_type="ASL perfusion", series=13),
            cell(sequence_type="T1w"),
        ],
    )
    assert search(sessions, sequence_type=["perfusion"]).total.series == 25
    assert search(sessions, sequence_type=["perfusion"], contrast=True).total.series == 12


def test_a_new_publication_replaces_the_nodes_old_one(sessions: sessionmaker[Session]) -> None:
    publish(sessions, "north", [cell(), cell(sequence_type="FLAIR")])
    publish(sessions, "north", [cell(series=55)])
    assert search(sessions).total.series == 55


def test_the_hub_drops_a_count_below_its_threshold_whatever_the_node_sent(
    sessions: sessionmaker[Session],
) -> None:
    publish(sessions, "north", [cell(patients=5, studies=5, series=5), cell(sequence_type="PD")])
    with transaction(sessions) as session:
        assert session.scalar(select(func.count()).select_from(CatalogueCell)) == 1


def test_clinical_concepts_show_their_availability_and_ask_for_a_federated_query(
    sessions: sessionmaker[Session],
) -> None:
    dementia = [
        MarginalCell(
            dimension=MarginalDimension.CONDITION, system="ICD10CM", code="G30.1", patients=15
        ),
        MarginalCell(
            dimension=MarginalDimension.CONDITION, system="ICD10CM", code="G30.9", patients=25
        ),
    ]
    publish(sessions, "north", [cell()], dementia)

    def expand(concept: str) -> Mapping[str, set[str]]:
        assert concept == "ICD10CM:G30"
        return {"ICD10CM": {"G30", "G30.0", "G30.1", "G30.8", "G30.9"}}

    with transaction(sessions) as session:
        query = CatalogueQuery(modality=["MR"], concepts=["ICD10CM:G30"])
        result = catalogue.search(query, session=session, expand=expand)
    (availability,) = result.concepts
    assert availability.nodes == {"north": 25}
    assert availability.codes == 5
    assert result.federated_query_needed


def test_a_search_is_answered_by_the_view_that_crosses_its_filters(
    sessions: sessionmaker[Session],
) -> None:
    publish(
        sessions,
        "north",
        [
            cell(series=40),
            cell(view="device", manufacturer="GE", series=30),
            cell(view="device", manufacturer="Siemens", series=10),
        ],
    )
    by_maker = search(sessions, modality=["MR"], manufacturer=["GE"])
    assert (by_maker.view, by_maker.total.series) == ("device", 30)
    assert not by_maker.federated_query_needed
    assert facet(by_maker, "manufacturer") == {"GE": 30, "Siemens": 10}
    assert facet(by_maker, "sequence_type") == {}  # no view crosses it with manufacturer


def test_filters_no_view_crosses_are_named_and_sent_to_a_federated_query(
    sessions: sessionmaker[Session],
) -> None:
    publish(sessions, "north", [cell(series=40), cell(view="device", manufacturer="GE")])
    result = search(sessions, manufacturer=["GE"], slice_thickness_max=1.0)
    assert result.unanswered == ["manufacturer"]
    assert result.federated_query_needed
    assert "manufacturer" in result.note
