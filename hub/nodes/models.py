"""Enrolled nodes, their one-time enrollment tokens and the nonces of signed requests."""

from __future__ import annotations

import datetime as dt
from enum import Enum

from sqlalchemy import DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hub.db import Base, utcnow


class NodeState(str, Enum):
    """Where a node stands with the hub."""

    # Created by an admin; waits for the node to enroll with its token.
    CREATED = "created"
    # Holds a public key; its signed requests are accepted.
    ENROLLED = "enrolled"
    # Refused from now on, whatever it signs.
    REVOKED = "revoked"


class Node(Base):
    __tablename__ = "node"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(32), unique=True)  # sent in X-Havenet-Node
    name: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[NodeState] = mapped_column(String(16), default=NodeState.CREATED)
    public_key: Mapped[str] = mapped_column(String(64), default="")
    software_version: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enrolled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    key_rotated_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    tokens: Mapped[list[EnrollmentToken]] = relationship(
        back_populates="node", cascade="all, delete-orphan"
    )


class EnrollmentToken(Base):
    """A one-time token, stored as a keyed hash; used once, before it expires."""

    __tablename__ = "enrollment_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_pk: Mapped[int] = mapped_column(ForeignKey("node.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    node: Mapped[Node] = relationship(back_populates="tokens")


class Nonce(Base):
    """A nonce seen in a signed request, kept while its timestamp could still be accepted.

    The unique constraint, not a read-then-write, is what refuses a replay: two copies of
    a request arriving at two hub workers at once cannot both insert.
    """

    __tablename__ = "nonce"
    __table_args__ = (UniqueConstraint("node_pk", "nonce", name="uq_nonce_node_pk_nonce"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_pk: Mapped[int] = mapped_column(ForeignKey("node.id", ondelete="CASCADE"))
    nonce: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
