"""Data release at the node: requests from the hub and hospital IT's decisions, files held
back by the leak check (with their reason), the durable outbox of what must reach the hub
(decisions, progress, studies), and curators' rejections.

Every column holds project pseudonyms, UIDs, counts, hashes or PHI-free reasons.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common.schemas.release import ReleaseState
from node.store.models import Base, utcnow


class ReleaseRequest(Base):
    __tablename__ = "release_request"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hub_request_id: Mapped[int] = mapped_column(Integer, unique=True)
    task_id: Mapped[int] = mapped_column(Integer)
    project: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    selection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[ReleaseState] = mapped_column(
        String(16), default=ReleaseState.REQUESTED, index=True
    )
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(64), default="")
    studies: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    held: Mapped[list[HeldFile]] = relationship(
        back_populates="request", cascade="all, delete-orphan", order_by="HeldFile.id"
    )


class HeldFile(Base):
    """A file stage 2 or the leak check refused: it stays at the node, never sent."""

    __tablename__ = "release_held_file"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("release_request.id", ondelete="CASCADE"), index=True
    )
    sop_uid: Mapped[str] = mapped_column(String(64))  # the stage-1 UID (a pseudonym)
    code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)

    request: Mapped[ReleaseRequest] = relationship(back_populates="held")


class OutboxState(str, Enum):
    """Where an item bound for the hub stands."""

    # Waiting to be sent (again, after next_attempt_at).
    QUEUED = "queued"
    # The hub took it.
    SENT = "sent"
    # The hub refused it for good; last_error says why.
    FAILED = "failed"


class OutboxItem(Base):
    """What must reach the hub; kept until the hub has taken it, across restarts."""

    __tablename__ = "release_outbox"
    __table_args__ = (UniqueConstraint("request_id", "key", name="uq_release_outbox_request_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("release_request.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # state, study
    key: Mapped[str] = mapped_column(String(96))  # state:approved, study:<project UID>
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[OutboxState] = mapped_column(String(16), default=OutboxState.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    chunks_sent: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Rejection(Base):
    """A curator's rejection of a released study, as the hub sent it."""

    __tablename__ = "release_rejection"
    __table_args__ = (UniqueConstraint("task_id", name="uq_release_rejection_task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer)
    hub_request_id: Mapped[int] = mapped_column(Integer, index=True)
    study_uid: Mapped[str] = mapped_column(String(64))  # the project's UID
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
