from __future__ import annotations

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from ontology import loader
from ontology.models import ClosureRecord, ConceptRecord
from ontology.sources import ConceptRow, Vocabulary

#        A
#       / \
#      B   C
#     / \ /
#    D   E        (E has two parents)
#    |
#    F
HIERARCHY = (
    ConceptRow("A", "root"),
    ConceptRow("B", "b", ("A",)),
    ConceptRow("C", "c", ("A",)),
    ConceptRow("D", "d", ("B",)),
    ConceptRow("E", "e", ("B", "C")),
    ConceptRow("F", "f", ("D",)),
)


def closure_of(concepts: tuple[ConceptRow, ...]) -> set[tuple[str, str, int]]:
    engine = create_engine("sqlite://")
    loader.load(engine, [Vocabulary("TEST", "t", "o", "l", concepts)], [])
    with Session(engine) as session:
        ancestor = select(ConceptRecord.code).where(ConceptRecord.id == ClosureRecord.ancestor_id)
        descendant = select(ConceptRecord.code).where(
            ConceptRecord.id == ClosureRecord.descendant_id
        )
        rows = session.execute(
            select(ancestor.scalar_subquery(), descendant.scalar_subquery(), ClosureRecord.depth)
        )
        return set(rows)


def test_the_closure_holds_every_ancestor_descendant_pair_with_its_depth() -> None:
    assert closure_of(HIERARCHY) == {
        *((c, c, 0) for c in "ABCDEF"),
        ("A", "B", 1), ("A", "C", 1), ("B", "D", 1), ("B", "E", 1), ("C", "E", 1), ("D", "F", 1),
        ("A", "D", 2), ("A", "E", 2), ("B", "F", 2),
        ("A", "F", 3),
    }  # fmt: skip


def test_a_concept_with_two_paths_to_an_ancestor_gets_the_shorter_depth() -> None:
    concepts = (*HIERARCHY, ConceptRow("G", "g", ("F", "A")))

    assert ("A", "G", 1) in closure_of(concepts)
    assert ("D", "G", 2) in closure_of(concepts)


def test_a_cycle_in_the_source_does_not_hang_the_loader() -> None:
    concepts = (ConceptRow("X", "x", ("Y",)), ConceptRow("Y", "y", ("X",)))

    assert {("X", "X", 0), ("Y", "Y", 0)} <= closure_of(concepts)
