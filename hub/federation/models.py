"""Federated tasks and their per-node state and result."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hub.db import Base, utcnow
from hub.nodes.models import Node


class TargetState(str, Enum):
    """Where a task stands at one node."""

    # Waiting for the node to fetch and answer it.
    PENDING = "pending"
    # The node answered; the result holds its (aggregate) answer.
    ANSWERED = "answered"
    # The node declined (policy, unknown kind); the reason says why.
    REFUSED = "refused"
    # The time-to-live ran out before the node answered.
    EXPIRED = "expired"
    # The node tried and failed, or its answer did not fit the task's kind.
    FAILED = "failed"


class TargetStatus(str, Enum):
    """Where a task stands at one node as users see it: the state, with a pending one told
    apart by what the hub knows of the node."""

    # Waiting for the node, which was seen lately.
    PENDING = "pending"
    # The node holds the task and answers later (it waits for local approval).
    DEFERRED = "deferred"
    # Waiting for a node not seen lately; it still answers if it returns within the TTL.
    OFFLINE = "offline"
    ANSWERED = "answered"
    REFUSED = "refused"
    EXPIRED = "expired"
    FAILED = "failed"


# An answer may still come and is worth waiting for (an offline node's is not).
AWAITED = frozenset({TargetStatus.PENDING, TargetStatus.DEFERRED})
# HubSettings.node_offline_after_seconds' default, for callers without the settings at hand.
OFFLINE_AFTER = dt.timedelta(seconds=180)


class Task(Base):
    __tablename__ = "task"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("project.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)

    targets: Mapped[list[TaskTarget]] = relationship(
        back_populates="task", cascade="all, delete-orphan", order_by="TaskTarget.id"
    )


class TaskTarget(Base):
    """One node's share of a task: its state, and its result once it has one."""

    __tablename__ = "task_target"
    __table_args__ = (UniqueConstraint("task_id", "node_pk", name="uq_task_target_task_id_node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    node_pk: Mapped[int] = mapped_column(ForeignKey("node.id", ondelete="CASCADE"), index=True)
    state: Mapped[TargetState] = mapped_column(String(16), default=TargetState.PENDING, index=True)
    delivered: Mapped[int] = mapped_column(Integer, default=0)  # times handed to the node
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    # When the node said it will answer later; a deferred task is not handed out again.
    deferred_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    task: Mapped[Task] = relationship(back_populates="targets")
    node: Mapped[Node] = relationship()
