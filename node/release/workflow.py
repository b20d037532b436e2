"""Approval as hospital IT runs it (CLI or API): the decision is committed first — so it
reaches the hub even if stage 2 then fails — then stage 2 runs in its own transaction; a
failure there is recorded as ``failed`` with the error's type, never its text."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from common.errors import HavenetError
from node.release import service as releases
from node.release.stage2 import Stage2Result
from node.settings import NodeSettings
from node.store.db import transaction

logger = logging.getLogger(__name__)


def approve_and_release(
    sessions: sessionmaker[Session], settings: NodeSettings, hub_request_id: int, actor: str
) -> Stage2Result:
    with transaction(sessions) as session:
        releases.approve(session=session, hub_request_id=hub_request_id, actor=actor)
    try:
        with transaction(sessions) as session:
            return releases.release(
                session=session, settings=settings, hub_request_id=hub_request_id
            )
    except Exception as exc:
        reason = str(exc) if isinstance(exc, HavenetError) else type(exc).__name__
        logger.error("stage 2 of data request %d failed: %s", hub_request_id, reason)
        with transaction(sessions) as session:
            releases.fail(
                session=session, hub_request_id=hub_request_id, reason=f"stage 2: {reason}"
            )
        raise
