"""An append-only, hash-chained audit log (DESIGN.md, decision 11).

Each record carries the hash of the record before it, so removing, reordering or editing
any record breaks the chain from that point on, and :func:`verify` says where. Hub and node
each keep their own log in their own database: both declare a table with
:class:`AuditRecordMixin` and call :func:`append` in the same transaction as the work it
records, so a record exists exactly when the work was committed.

Details are PHI-free by contract: pseudonyms, counts, hashes and reasons, never a value
from a hospital.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

GENESIS = "0" * 64


class AuditRecordMixin:
    """Columns of an audit table; a package declares ``class AuditRecord(Base, Mixin)``."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(128), default="")
    details: Mapped[str] = mapped_column(Text, default="{}")
    previous_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


Record = TypeVar("Record", bound=AuditRecordMixin)


def _digest(
    previous: str, at: dt.datetime, actor: str, action: str, subject: str, details: str
) -> str:
    canonical = json.dumps(
        [previous, at.astimezone(dt.UTC).isoformat(), actor, action, subject, details],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append(
    session: Session,
    model: type[Record],
    *,
    actor: str,
    action: str,
    subject: str = "",
    details: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> Record:
    """Add one record after the last one (the caller commits, with the work it records)."""
    last = session.execute(
        select(model).order_by(model.id.desc()).limit(1).with_for_update()
    ).scalar_one_or_none()
    previous = last.hash if last is not None else GENESIS
    when = (at or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    text = json.dumps(details or {}, sort_keys=True, separators=(",", ":"))
    record = model()
    record.at = when
    record.actor = actor
    record.action = action
    record.subject = subject
    record.details = text
    record.previous_hash = previous
    record.hash = _digest(previous, when, actor, action, subject, text)
    session.add(record)
    session.flush()
    return record


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    first_broken_id: int | None = None
    problem: str = ""


def verify(session: Session, model: type[AuditRecordMixin]) -> Verification:
    """Walk the chain from the first record; report the first one that does not hold."""
    previous = GENESIS
    count = 0
    for record in session.execute(select(model).order_by(model.id)).scalars():
        count += 1
        if record.previous_hash != previous:
            return Verification(False, count, record.id, "does not follow the record before it")
        at = record.at if record.at.tzinfo else record.at.replace(tzinfo=dt.UTC)
        expected = _digest(
            previous, at, record.actor, record.action, record.subject, record.details
        )
        if record.hash != expected:
            return Verification(False, count, record.id, "was changed after it was written")
        previous = record.hash
    return Verification(True, count)
