"""Load the vocabularies into any SQLAlchemy database, idempotently.

A vocabulary whose content fingerprint equals the loaded one is left alone; a changed one is
replaced whole (its concepts, their closure rows), and the cross-maps are rebuilt whenever any
vocabulary or the maps themselves changed. Loading the same content twice changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Engine, delete, insert, inspect, or_, select
from sqlalchemy.orm import Session

from ontology import sources
from ontology.models import (
    Base,
    ClosureRecord,
    ConceptRecord,
    MappingRecord,
    VocabularyRecord,
)
from ontology.sources import MappingRow, Vocabulary

logger = logging.getLogger(__name__)

Row = TypeVar("Row")

MAPPINGS_KEY = "_MAPPINGS"  # the vocabulary table's row that fingerprints the cross-maps
CHUNK = 5000  # rows per INSERT and ids per IN (...) list: inside every database's limits

_FOLD = re.compile(r"[^0-9a-z]+")


def search_text(display: str) -> str:
    """The display lower-cased, punctuation folded to single spaces (what typeahead matches)."""
    return " " + _FOLD.sub(" ", display.lower()).strip() + " "


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)  # systems (re)loaded
    unchanged: list[str] = field(default_factory=list)  # systems already up to date
    mappings: int | None = None  # cross-maps written, None when they were up to date
    unresolved_mappings: int = 0  # maps whose source or target is not loaded


def create_tables(engine: Engine) -> None:
    Base.metadata.create_all(engine)


def load(
    engine: Engine,
    vocabularies: Sequence[Vocabulary] | None = None,
    mapping_rows: Iterable[MappingRow] | None = None,
    *,
    icd_roots: Sequence[str] | None = None,
) -> LoadReport:
    """Create the tables if needed and load the vocabularies in one transaction.

    Without arguments, loads everything havenet ships (``icd_roots`` limits ICD-10 and
    ICD-10-CM to the subtrees under those codes, e.g. ``("G30", "C34")``).
    """
    create_tables(engine)
    if vocabularies is None:
        vocabularies = sources.default_vocabularies(icd_roots)
    if mapping_rows is None:
        mapping_rows = sources.mappings()
    with Session(engine) as session, session.begin():
        return load_vocabularies(
            session=session, vocabularies=vocabularies, mapping_rows=mapping_rows
        )


def load_vocabularies(
    *, session: Session, vocabularies: Sequence[Vocabulary], mapping_rows: Iterable[MappingRow]
) -> LoadReport:
    """Load into the session's transaction; the caller commits."""
    report = LoadReport()
    for vocabulary in vocabularies:
        fingerprint = vocabulary.fingerprint()
        record = session.get(VocabularyRecord, vocabulary.system)
        if record is not None and record.fingerprint == fingerprint:
            report.unchanged.append(vocabulary.system)
            continue
        _replace(session, vocabulary, fingerprint, record)
        report.loaded.append(vocabulary.system)
        logger.info("loaded %s: %d concepts", vocabulary.system, len(vocabulary.concepts))

    rows = sorted(
        set(mapping_rows),
        key=lambda m: (m.source_system, m.source_code, m.target_system, m.target_code),
    )
    digest = hashlib.sha256(
        repr(
            [
                (m.source_system, m.source_code, m.target_system, m.target_code, m.relation.value)
                for m in rows
            ]
        ).encode()
    )
    fingerprint = digest.hexdigest()
    record = session.get(VocabularyRecord, MAPPINGS_KEY)
    if report.loaded or record is None or record.fingerprint != fingerprint:
        written, unresolved = _replace_mappings(session, rows)
        report.mappings, report.unresolved_mappings = written, unresolved
        if record is None:
            record = VocabularyRecord(
                system=MAPPINGS_KEY,
                title="cross-maps",
                origin="ontology/data",
                licence="see the mapped vocabularies",
                fingerprint=fingerprint,
                concept_count=written,
            )
            session.add(record)
        record.fingerprint, record.concept_count = fingerprint, written
    session.flush()
    return report


def _chunks(items: Sequence[Row], size: int = CHUNK) -> Iterator[Sequence[Row]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _replace(
    session: Session, vocabulary: Vocabulary, fingerprint: str, record: VocabularyRecord | None
) -> None:
    system = vocabulary.system
    old_ids = select(ConceptRecord.id).where(ConceptRecord.system == system).scalar_subquery()
    session.execute(
        delete(MappingRecord).where(
            or_(MappingRecord.source_id.in_(old_ids), MappingRecord.target_id.in_(old_ids))
        )
    )
    session.execute(delete(ClosureRecord).where(ClosureRecord.descendant_id.in_(old_ids)))
    session.execute(delete(ConceptRecord).where(ConceptRecord.system == system))
    if record is None:
        record = VocabularyRecord(system=system)
        session.add(record)
    record.title, record.origin, record.licence = (
        vocabulary.title,
        vocabulary.origin,
        vocabulary.licence,
    )
    record.fingerprint, record.concept_count = fingerprint, len(vocabulary.concepts)
    session.flush()

    concepts = {concept.code: concept for concept in vocabulary.concepts}
    values = [
        {
            "system": system,
            "code": c.code,
            "display": c.display,
            "search_text": search_text(c.display),
        }
        for c in concepts.values()
    ]
    for chunk in _chunks(values):
        session.execute(insert(ConceptRecord), list(chunk))
    ids = {
        code: concept_id
        for code, concept_id in session.execute(
            select(ConceptRecord.code, ConceptRecord.id).where(ConceptRecord.system == system)
        )
    }
    closure = [
        {"ancestor_id": ids[ancestor], "descendant_id": ids[code], "depth": depth}
        for code, ancestors in ancestor_depths(concepts).items()
        for ancestor, depth in ancestors.items()
    ]
    for closure_chunk in _chunks(closure):
        session.execute(insert(ClosureRecord), list(closure_chunk))


def ancestor_depths(concepts: dict[str, sources.ConceptRow]) -> dict[str, dict[str, int]]:
    """Each code's ancestors (itself at depth 0) with the fewest is-a steps to reach them.

    Parents that are not in the vocabulary are ignored; a cycle is cut where it closes."""
    done: dict[str, dict[str, int]] = {}

    def visit(code: str, path: frozenset[str]) -> dict[str, int]:
        if code in done:
            return done[code]
        depths = {code: 0}
        for parent in concepts[code].parents:
            if parent not in concepts or parent in path:
                continue
            for ancestor, depth in visit(parent, path | {code}).items():
                if depth + 1 < depths.get(ancestor, 1 << 30):
                    depths[ancestor] = depth + 1
        done[code] = depths
        return depths

    for code in concepts:
        # iterative deepening would be needed for very deep trees; ICD is at most 7 levels
        visit(code, frozenset())
    return done


def _replace_mappings(session: Session, rows: Sequence[MappingRow]) -> tuple[int, int]:
    session.execute(delete(MappingRecord))
    systems = {m.source_system for m in rows} | {m.target_system for m in rows}
    ids: dict[tuple[str, str], int] = {}
    for system in systems:
        for code, concept_id in session.execute(
            select(ConceptRecord.code, ConceptRecord.id).where(ConceptRecord.system == system)
        ):
            ids[(system, code)] = concept_id
    values: dict[tuple[int, int], str] = {}
    unresolved = 0
    for m in rows:
        source = ids.get((m.source_system, m.source_code))
        target = ids.get((m.target_system, m.target_code))
        if source is None or target is None:
            unresolved += 1
            continue
        values[(source, target)] = m.relation.value
    records = [{"source_id": s, "target_id": t, "relation": r} for (s, t), r in values.items()]
    for chunk in _chunks(records):
        session.execute(insert(MappingRecord), list(chunk))
    return len(records), unresolved


def is_loaded(engine: Engine) -> bool:
    """Whether this database holds the vocabularies already."""
    if not inspect(engine).has_table(VocabularyRecord.__tablename__):
        return False
    with Session(engine) as session:
        return session.scalar(select(VocabularyRecord.system).limit(1)) is not None


def ensure_loaded(engine: Engine) -> bool:
    """Load everything havenet ships, once; True when this call loaded it."""
    if is_loaded(engine):
        return False
    report = load(engine)
    logger.info("vocabularies loaded: %s", ", ".join(report.loaded))
    return True
