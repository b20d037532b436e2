"""Tables of the query engine: normalized series labels and the answers the node gave.

``series_label`` is derived from ``series`` (the ontology's reading of its free text) so a
query filters on sequence type, contrast and body part in SQL; it is filled in for new
series before each query (:func:`node.query.labels.label_new_series`).

``query_answer`` remembers, per project, which patient sets the node has answered about,
as keyed hashes of their members (HMAC with the site secret: worthless off the node), so
the differencing guard can refuse a set that differs from an earlier one by a few patients.

``query_approval`` holds the queries of a node that answers only after local approval
(``query_auto_answer`` off): what was asked, hospital IT's decision, and the result that goes
back to the hub over the channel.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text
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


class ApprovalState(str, Enum):
    """Where a query that waits for hospital IT stands."""

    # Recorded; the hub knows the answer waits for a decision.
    AWAITING = "awaiting"
    # Approved and answered under disclosure control; the answer goes to the hub.
    APPROVED = "approved"
    # Approved, but disclosure control refused it then (budget spent, differencing).
    REFUSED = "refused"
    # Declined by hospital IT; the reason goes to the hub.
    DECLINED = "declined"
    # The task's time-to-live ran out before a decision.
    EXPIRED = "expired"


class QueryApproval(Base):
    """A federated query held for hospital IT's decision, and the result sent back."""

    __tablename__ = "query_approval"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, unique=True)  # the hub's task number
    project: Mapped[str] = mapped_column(String(128), index=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the cohort.count payload
    question_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[ApprovalState] = mapped_column(
        String(16), default=ApprovalState.AWAITING, index=True
    )
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    # The channel's TaskResult for the hub, once decided; sent_at once the hub took it (or
    # said it no longer would: hub_reply says which).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    hub_reply: Mapped[str] = mapped_column(Text, default="")
