from __future__ import annotations

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from ontology import loader
from ontology.models import ClosureRecord, ConceptRecord, MappingRecord
from ontology.sources import ConceptRow, MappingRow, Relation, Vocabulary

PARENT = Vocabulary(
    "P",
    "parent system",
    "test",
    "none",
    (ConceptRow("1", "one"), ConceptRow("1.1", "one one", ("1",))),
)
OTHER = Vocabulary("Q", "other system", "test", "none", (ConceptRow("x", "ex"),))
MAPS = [MappingRow("Q", "x", "P", "1", Relation.EQUIVALENT)]


def counts(engine: Engine) -> tuple[int, int, int]:
    with Session(engine) as session:
        return (
            session.scalar(select(func.count()).select_from(ConceptRecord)) or 0,
            session.scalar(select(func.count()).select_from(ClosureRecord)) or 0,
            session.scalar(select(func.count()).select_from(MappingRecord)) or 0,
        )


def test_loading_the_same_content_twice_changes_nothing() -> None:
    engine = create_engine("sqlite://")
    first = loader.load(engine, [PARENT, OTHER], MAPS)
    before = counts(engine)

    second = loader.load(engine, [PARENT, OTHER], MAPS)

    assert first.loaded == ["P", "Q"]
    assert second.loaded == []
    assert second.unchanged == ["P", "Q"]
    assert second.mappings is None
    assert counts(engine) == before == (3, 4, 1)


def test_changed_content_replaces_the_vocabulary_and_keeps_the_maps() -> None:
    engine = create_engine("sqlite://")
    loader.load(engine, [PARENT, OTHER], MAPS)
    grown = Vocabulary(
        "P",
        "parent system",
        "test",
        "none",
        (*PARENT.concepts, ConceptRow("1.2", "one two", ("1",))),
    )

    report = loader.load(engine, [grown, OTHER], MAPS)

    assert report.loaded == ["P"]
    assert report.unchanged == ["Q"]
    assert counts(engine) == (4, 6, 1)


def test_a_map_to_a_concept_that_is_not_loaded_is_skipped_and_counted() -> None:
    engine = create_engine("sqlite://")

    report = loader.load(
        engine, [PARENT], [*MAPS, MappingRow("P", "1", "P", "9", Relation.BROADER)]
    )

    assert report.mappings == 0
    assert report.unresolved_mappings == 2


def test_the_shipped_vocabularies_load_into_an_empty_database(ontology_engine: Engine) -> None:
    with Session(ontology_engine) as session:
        systems = set(session.scalars(select(ConceptRecord.system).distinct()))

    assert systems == {"DCM", "BODYPART", "SNOMED", "ICD10", "ICD10CM", "LOINC", "ATC", "OMOP"}
