"""Data-access requests: what a researcher asked a project's nodes to release, and where the
request stands at each node."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from common.schemas.release import ReleaseState
from hub.db import Base, utcnow
from hub.nodes.models import Node


class DataRequest(Base):
    __tablename__ = "data_request"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    created_by: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(64))
    selection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    task_id: Mapped[int | None] = mapped_column(
        ForeignKey("task.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    targets: Mapped[list[RequestTarget]] = relationship(
        back_populates="request", cascade="all, delete-orphan", order_by="RequestTarget.id"
    )


class RequestTarget(Base):
    """One node's share of a request: the decision, then the release's progress."""

    __tablename__ = "data_request_target"
    __table_args__ = (
        UniqueConstraint("request_id", "node_pk", name="uq_data_request_target_request_node"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("data_request.id", ondelete="CASCADE"))
    node_pk: Mapped[int] = mapped_column(ForeignKey("node.id", ondelete="CASCADE"), index=True)
    state: Mapped[ReleaseState] = mapped_column(String(16), default=ReleaseState.REQUESTED)
    reason: Mapped[str] = mapped_column(Text, default="")
    studies: Mapped[int] = mapped_column(Integer, default=0)
    held: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    request: Mapped[DataRequest] = relationship(back_populates="targets")
    node: Mapped[Node] = relationship()
