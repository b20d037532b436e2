"""The hub's hash-chained audit log (``common.audit``): enrollments, revocations, every task
created and every answer received. Details are counts, names and ids, never a value."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from common import audit
from common.audit import AuditRecordMixin
from hub.db import Base


class AuditRecord(AuditRecordMixin, Base):
    __tablename__ = "audit_record"


def record(
    *, session: Session, actor: str, action: str, subject: str = "", **details: Any
) -> AuditRecord:
    """Append one record in the caller's transaction (it commits with the work recorded)."""
    return audit.append(
        session, AuditRecord, actor=actor, action=action, subject=subject, details=details
    )
