"""Approval as hospital IT runs it (CLI or API): the decision is committed first — so it
reaches the hub even if stage 2 then fails — then stage 2 streams: each study goes into the
outbox in its own transaction as soon as its files are written, so the running node uploads
it while stage 2 goes on with the next. A failure is recorded as ``failed`` with the
error's type, never its text."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from common.errors import HavenetError
from common.schemas.release import StudyManifest
from node.release import service as releases
from node.release import stage2
from node.release.stage2 import Stage2Result
from node.settings import NodeSettings
from node.store.db import transaction

logger = logging.getLogger(__name__)


def approve_and_release(
    sessions: sessionmaker[Session], settings: NodeSettings, hub_request_id: int, actor: str
) -> Stage2Result:
    with transaction(sessions) as session:
        releases.approve(session=session, hub_request_id=hub_request_id, actor=actor)
    return _release_or_fail(sessions, settings, hub_request_id)


def retry_and_release(
    sessions: sessionmaker[Session], settings: NodeSettings, hub_request_id: int, actor: str
) -> Stage2Result:
    """A failed release again: stage 2 afresh (the same files), every study queued again."""
    with transaction(sessions) as session:
        releases.retry(session=session, hub_request_id=hub_request_id, actor=actor)
    return _release_or_fail(sessions, settings, hub_request_id)


def _release_or_fail(
    sessions: sessionmaker[Session], settings: NodeSettings, hub_request_id: int
) -> Stage2Result:
    try:
        return stream_release(sessions, settings, hub_request_id)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, HavenetError) else type(exc).__name__
        logger.error("stage 2 of data request %d failed: %s", hub_request_id, reason)
        with transaction(sessions) as session:
            releases.fail(
                session=session, hub_request_id=hub_request_id, reason=f"stage 2: {reason}"
            )
        raise


def stream_release(
    sessions: sessionmaker[Session], settings: NodeSettings, hub_request_id: int
) -> Stage2Result:
    """Stage 2 of an approved request, each study queued for upload as it is done."""
    with transaction(sessions) as session:
        job, plan = releases.plan_release(
            session=session, settings=settings, hub_request_id=hub_request_id
        )
    result = Stage2Result(root=job.root)
    for outcome in stage2.images(job, hub_request_id, plan.sources):
        result.add(outcome)
        if isinstance(outcome, StudyManifest):
            with transaction(sessions) as session:
                releases.queue_study(
                    session=session, job=job, hub_request_id=hub_request_id, manifest=outcome
                )
    with transaction(sessions) as session:  # records read the fact store as they go
        records = stage2.records(
            session=session, job=job, request_id=hub_request_id, subjects=plan.record_subjects
        )
        for outcome in records:
            result.add(outcome)
            if isinstance(outcome, StudyManifest):
                releases.queue_study(
                    session=session, job=job, hub_request_id=hub_request_id, manifest=outcome
                )
    with transaction(sessions) as session:
        releases.finish_release(session=session, hub_request_id=hub_request_id, result=result)
    logger.info(
        "stage 2 for data request %d: %d manifests queued, %d held",
        hub_request_id,
        len(result.manifests),
        len(result.held),
    )
    return result
