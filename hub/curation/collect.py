"""Garbage collection of central storage: chunks no received study names any more (those of
rejected studies, of uploads abandoned before their manifest came) and files an interrupted
verification left under ``incoming/``.

Only what is older than a grace period goes: a chunk uploaded a moment ago may belong to a
study whose manifest is still on its way, and a node that was told the hub holds a chunk does
not send it again. A node that uploads after a longer silence than the grace period finds
its manifest refused (a chunk not uploaded) and sends the chunk on its next attempt.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import audit
from hub.curation.models import ReceivedStudy, StudyState
from hub.db import utcnow
from hub.storage.service import Storage

logger = logging.getLogger(__name__)

DEFAULT_GRACE = dt.timedelta(days=7)
_PREFIXES = ("chunks", "incoming")


@dataclass(frozen=True)
class Collected:
    chunks: int
    files: int  # left under incoming/
    bytes: int
    dry_run: bool


def collect(
    *,
    session: Session,
    storage: Storage,
    actor: str,
    grace: dt.timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> Collected:
    """Delete (or with ``dry_run`` only count) what no study needs and ``grace`` has passed
    over; audited."""
    named = referenced_chunks(session=session)
    cutoff = (now or utcnow()) - grace
    counts = {prefix: 0 for prefix in _PREFIXES}
    size = 0
    for prefix in _PREFIXES:
        for key in storage.list(prefix):
            if prefix == "chunks" and key.rsplit("/", 1)[-1] in named:
                continue
            if storage.modified(key) > cutoff:
                continue
            size += storage.size(key) if prefix == "chunks" else 0
            counts[prefix] += 1
            if not dry_run:
                storage.delete(key)
    collected = Collected(counts["chunks"], counts["incoming"], size, dry_run)
    audit.record(
        session=session,
        actor=actor,
        action="storage.collect",
        subject="central storage",
        chunks=collected.chunks,
        files=collected.files,
        bytes=collected.bytes,
        grace_hours=round(grace.total_seconds() / 3600, 2),
        dry_run=dry_run,
    )
    logger.info(
        "storage: %s %d chunks (%d bytes) and %d incoming files",
        "would collect" if dry_run else "collected",
        collected.chunks,
        collected.bytes,
        collected.files,
    )
    return collected


def referenced_chunks(*, session: Session) -> set[str]:
    """The chunks of every study in quarantine or accepted (a rejected one's are free)."""
    manifests = session.execute(
        select(ReceivedStudy.manifest).where(ReceivedStudy.state != StudyState.REJECTED)
    ).scalars()
    return {
        sha
        for manifest in manifests
        for entry in [*manifest.get("files", []), *manifest.get("records", [])]
        for sha in entry["chunks"]
    }
