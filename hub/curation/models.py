"""Studies received from nodes: in quarantine, waiting for a curator, accepted into the
project's workspace, or rejected (the node is told why)."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, utcnow


class StudyState(str, Enum):
    """Where a received study stands."""

    # Verified (manifest, signature, DICOM) and scanned; waiting for a curator.
    AWAITING_REVIEW = "awaiting_review"
    # A curator accepted it; its files are in the project's workspace.
    ACCEPTED = "accepted"
    # A curator rejected it; the node has a task with the reason.
    REJECTED = "rejected"


class ReceivedStudy(Base):
    __tablename__ = "received_study"
    __table_args__ = (
        UniqueConstraint("project_id", "study_uid", name="uq_received_study_project_study"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    request_id: Mapped[int] = mapped_column(
        ForeignKey("data_request.id", ondelete="CASCADE"), index=True
    )
    node_pk: Mapped[int] = mapped_column(ForeignKey("node.id", ondelete="CASCADE"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64))  # the project's UID
    subject_key: Mapped[str] = mapped_column(String(64))  # the project's subject key
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_sha256: Mapped[str] = mapped_column(String(64))  # of its files (paths, hashes)
    signature: Mapped[str] = mapped_column(String(200))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # header summary
    findings: Mapped[list[str]] = mapped_column(JSON, default=list)  # the hub's PHI scan
    state: Mapped[StudyState] = mapped_column(
        String(16), default=StudyState.AWAITING_REVIEW, index=True
    )
    reason: Mapped[str] = mapped_column(Text, default="")
    reviewed_by: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
