"""Expansion of a query concept to everything it covers, and typeahead over concept names.

``expand`` returns the concept, all its descendants (one indexed look-up in the closure
table), and — across the cross-maps — every concept of another system whose meaning lies
inside it, with that concept's own descendants, until nothing new is found. A map is only
followed where it keeps the result inside the query's meaning: to an ``equivalent`` or
``narrower`` target, or back from the source of an ``equivalent`` or ``broader`` map.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from ontology.exceptions import BadConceptReference, UnknownConcept
from ontology.loader import CHUNK, search_text
from ontology.models import ClosureRecord, ConceptRecord, MappingRecord
from ontology.sources import Relation, canonical_system

logger = logging.getLogger(__name__)

DOWNWARD = (Relation.EQUIVALENT.value, Relation.NARROWER.value)  # source → target stays inside
UPWARD = (Relation.EQUIVALENT.value, Relation.BROADER.value)  # target ← source stays inside


@dataclass(frozen=True, order=True)
class Concept:
    system: str
    code: str
    display: str

    def __str__(self) -> str:
        return f"{self.system}:{self.code}"


def parse_reference(text: str) -> tuple[str, str]:
    """``"icd10cm:G30"`` → ``("ICD10CM", "G30")``."""
    system, sep, code = text.partition(":")
    if not sep or not system.strip() or not code.strip():
        raise BadConceptReference(text)
    return canonical_system(system), code.strip()


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _concept_id(session: Session, system: str, code: str) -> int:
    concept_id = session.scalar(
        select(ConceptRecord.id).where(ConceptRecord.system == system, ConceptRecord.code == code)
    )
    if concept_id is None and system.startswith("ICD"):  # tolerate codes written without a dot
        concept_id = session.scalar(
            select(ConceptRecord.id).where(
                ConceptRecord.system == system,
                func.replace(ConceptRecord.code, ".", "") == code.replace(".", "").upper(),
            )
        )
    if concept_id is None:
        raise UnknownConcept(system, code)
    return concept_id


def descendant_ids(session: Session, ids: Collection[int]) -> set[int]:
    found: set[int] = set()
    for chunk in _chunks(sorted(ids)):
        found.update(
            session.scalars(
                select(ClosureRecord.descendant_id).where(ClosureRecord.ancestor_id.in_(chunk))
            )
        )
    return found


def _mapped_inside(session: Session, ids: Collection[int]) -> set[int]:
    """Concepts of other systems reached from ``ids`` by maps that stay inside their meaning."""
    found: set[int] = set()
    for chunk in _chunks(sorted(ids)):
        rows = session.execute(
            select(MappingRecord.source_id, MappingRecord.target_id).where(
                or_(
                    and_(MappingRecord.source_id.in_(chunk), MappingRecord.relation.in_(DOWNWARD)),
                    and_(MappingRecord.target_id.in_(chunk), MappingRecord.relation.in_(UPWARD)),
                )
            )
        )
        for source, target in rows:
            found.add(target if source in ids else source)
    return found


def expand_ids(session: Session, start: int) -> set[int]:
    result = descendant_ids(session, {start})
    frontier = set(result)
    while frontier:
        reached = _mapped_inside(session, frontier) - result
        new = descendant_ids(session, reached) - result if reached else set()
        result |= new
        frontier = new
    return result


def concepts(session: Session, ids: Collection[int]) -> list[Concept]:
    found: list[Concept] = []
    for chunk in _chunks(sorted(ids)):
        found.extend(
            Concept(system, code, display)
            for system, code, display in session.execute(
                select(ConceptRecord.system, ConceptRecord.code, ConceptRecord.display).where(
                    ConceptRecord.id.in_(chunk)
                )
            )
        )
    return found


def expand(system: str, code: str, *, session: Session) -> list[Concept]:
    """The concept, its descendants and the concepts of other systems mapped inside it.

    Sorted with the query's own system first, then by system and code."""
    system = canonical_system(system)
    found = concepts(session, expand_ids(session, _concept_id(session, system, code)))
    return sorted(found, key=lambda c: (c.system != system, c.system, c.code))


def expand_codes(system: str, code: str, *, session: Session) -> dict[str, set[str]]:
    """``expand`` as a set of codes per system: what a query matches records against."""
    by_system: dict[str, set[str]] = {}
    for concept in expand(system, code, session=session):
        by_system.setdefault(concept.system, set()).add(concept.code)
    return by_system


def search(
    text: str,
    limit: int = 10,
    *,
    session: Session,
    systems: Sequence[str] | None = None,
) -> list[Concept]:
    """Typeahead: concepts whose name contains every word of ``text`` (or whose code is it).

    Ranked by: exact code, name starting with the text, words starting with the query's
    words, then shorter names first."""
    words = search_text(text).split()
    if not words or limit <= 0:
        return []
    query = select(ConceptRecord.system, ConceptRecord.code, ConceptRecord.display)
    if systems:
        query = query.where(ConceptRecord.system.in_([canonical_system(s) for s in systems]))
    by_name = query.where(*(ConceptRecord.search_text.contains(f"{w}") for w in words))
    by_name = by_name.order_by(func.length(ConceptRecord.display), ConceptRecord.code)
    by_code = query.where(func.upper(ConceptRecord.code) == text.strip().upper())
    rows = list(session.execute(by_code))
    rows += session.execute(by_name.limit(max(limit * 20, 200)))
    folded = search_text(text)

    def rank(row: tuple[str, str, str]) -> tuple[int, int, int, int]:
        _system, code, display = row
        name = search_text(display)
        exact_code = code.upper() != text.strip().upper()
        starts = not name.startswith(folded.rstrip())
        word_starts = sum(f" {w}" not in name for w in words)
        return (exact_code, starts, word_starts, len(display))

    seen: set[tuple[str, str]] = set()
    ranked: list[Concept] = []
    for system, code, display in sorted(rows, key=rank):
        if (system, code) not in seen:
            seen.add((system, code))
            ranked.append(Concept(system, code, display))
    return ranked[:limit]
