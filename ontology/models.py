"""The ontology's tables: concepts, their transitive closure and the cross-maps between systems.

The closure table holds one row per (ancestor, descendant) pair, the concept itself included at
depth 0, so "a concept and all it subsumes" is one indexed look-up in any SQL database.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Integer, MetaData, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class VocabularyRecord(Base):
    """One loaded code system and the fingerprint of the content that was loaded."""

    __tablename__ = "ontology_vocabulary"

    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(400))
    licence: Mapped[str] = mapped_column(String(400))
    fingerprint: Mapped[str] = mapped_column(String(64))
    concept_count: Mapped[int] = mapped_column(Integer)


class ConceptRecord(Base):
    __tablename__ = "ontology_concept"
    __table_args__ = (UniqueConstraint("system", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    system: Mapped[str] = mapped_column(
        String(32), ForeignKey("ontology_vocabulary.system", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(64))
    display: Mapped[str] = mapped_column(String(400))
    # lower-cased display with punctuation folded to spaces, for the typeahead
    search_text: Mapped[str] = mapped_column(String(400))


class ClosureRecord(Base):
    """``ancestor`` subsumes ``descendant`` at ``depth`` is-a steps (0: the concept itself)."""

    __tablename__ = "ontology_closure"
    __table_args__ = (Index("ix_ontology_closure_descendant", "descendant_id"),)

    ancestor_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ontology_concept.id", ondelete="CASCADE"), primary_key=True
    )
    descendant_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ontology_concept.id", ondelete="CASCADE"), primary_key=True
    )
    depth: Mapped[int] = mapped_column(Integer)


class MappingRecord(Base):
    """A cross-map: ``relation`` says how the target's meaning relates to the source's."""

    __tablename__ = "ontology_mapping"
    __table_args__ = (Index("ix_ontology_mapping_target", "target_id"),)

    source_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ontology_concept.id", ondelete="CASCADE"), primary_key=True
    )
    target_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ontology_concept.id", ondelete="CASCADE"), primary_key=True
    )
    relation: Mapped[str] = mapped_column(String(16))
