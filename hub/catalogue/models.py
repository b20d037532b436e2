"""The hub's catalogue: what each node last published, cell by cell (aggregates only)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, utcnow


class CatalogueSnapshot(Base):
    """A node's latest publication (one per node, replaced whole)."""

    __tablename__ = "catalogue_snapshot"

    node_id: Mapped[int] = mapped_column(
        ForeignKey("node.id", ondelete="CASCADE"), primary_key=True
    )
    generated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    threshold: Mapped[int] = mapped_column(Integer)
    rounding: Mapped[int] = mapped_column(Integer)
    suppressed_cells: Mapped[int] = mapped_column(Integer)
    suppressed_marginals: Mapped[int] = mapped_column(Integer)


class CatalogueCell(Base):
    __tablename__ = "catalogue_cell"
    __table_args__ = (
        Index("ix_catalogue_cell_search", "view", "modality", "body_part", "sequence_type"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("node.id", ondelete="CASCADE"), index=True)
    view: Mapped[str] = mapped_column(String(16))  # common.schemas.catalogue.VIEWS
    # The view's dimensions are set; the others are NULL.
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    body_part: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sequence_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    contrast: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    manufacturer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    field_strength: Mapped[float | None] = mapped_column(Float, nullable=True)
    slice_band: Mapped[str | None] = mapped_column(String(16), nullable=True)
    study_year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    patients: Mapped[int] = mapped_column(Integer)
    studies: Mapped[int] = mapped_column(Integer)
    series: Mapped[int] = mapped_column(Integer)


class CatalogueMarginal(Base):
    __tablename__ = "catalogue_marginal"
    __table_args__ = (Index("ix_catalogue_marginal_concept", "dimension", "system", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("node.id", ondelete="CASCADE"), index=True)
    dimension: Mapped[str] = mapped_column(String(16))
    system: Mapped[str] = mapped_column(String(128))
    code: Mapped[str] = mapped_column(String(64))
    patients: Mapped[int] = mapped_column(Integer)
