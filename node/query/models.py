"""Tables of the query engine: normalized series labels and the answers the node gave.

``series_label`` is derived from ``series`` (the ontology's reading of its free text) so a
query filters on sequence type, contrast and body part in SQL; it is filled in for new
series before each query (:func:`node.query.labels.label_new_series`).

``query_answer`` remembers, per project, which patient sets the node has answered about,
as keyed hashes of their members (HMAC with the site secret: worthless off the node), so
the differencing guard can refuse a set that differs from an earlier one by a few patients.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from node.store.models import Base, utcnow


class SeriesLabel(Base):
    __tablename__ = "series_label"

    series_id: Mapped[int] = mapped_column(
        ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    sequence_type: Mapped[str] = mapped_column(String(32), index=True)
    contrast: Mapped[bool] = mapped_column(Boolean)
    body_part: Mapped[str] = mapped_column(String(64), index=True)
    manufacturer: Mapped[str] = mapped_column(String(64))


class QueryAnswer(Base):
    """One answered query of a project: what it asked (hash) and whom it counted (hashes)."""

    __tablename__ = "query_answer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    question_hash: Mapped[str] = mapped_column(String(64))
    answered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The patient sets the answer is about (the cohort, each statistic group), one per
    # line, each a space-separated sorted list of keyed member hashes.
    member_sets: Mapped[str] = mapped_column(Text, default="")
