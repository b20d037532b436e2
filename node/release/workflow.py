"""Approval as hospital IT runs it (CLI or API): the decision is committed first — so it
reaches the hub even if stage 2 then fails — then stage 2 streams: each study goes into the
outbox in its own transaction as soon as its files are written, so the running node uploads
it while stage 2 goes on with the next. A failure is recorded as ``failed`` with the
error's type, never its text.

Stage 2 of a request runs under a lock file of its own (``flock``: the operating system
frees it when the process ends, however it ends), taken before the decision commits. A node
that stopped in the middle of stage 2 — killed, or a CLI approval interrupted — leaves the
request approved with nobody holding its lock; the node's next start finds it
(:func:`interrupted`) and runs stage 2 again (:func:`resume`): the same files, the studies
queued afresh, nothing the hub holds sent twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from common.errors import HavenetError
from common.schemas.release import ReleaseState, StudyManifest
from node.release import service as releases
from node.release import stage2
from node.release.exceptions import Stage2Busy
from node.release.stage2 import Stage2Result
from node.settings import NodeSettings
from node.store.db import transaction

logger = logging.getLogger(__name__)

LOCKS = "release-locks"  # under the data directory; one file per data request


@contextmanager
def stage2_lock(settings: NodeSettings, hub_request_id: int, *, wait: bool) -> Iterator[None]:
    """Hold the request's stage-2 lock for the block; :class:`Stage2Busy` when another
    process holds it and ``wait`` is false."""
    folder = settings.data_dir / LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / f"request-{hub_request_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Stage2Busy(hub_request_id) from None
        yield
    finally:
        os.close(descriptor)  # closing frees the lock


def approve_and_release(
    sessions: sessionmaker[Session], settings: NodeSettings, hub_request_id: int, actor: str
) -> Stage2Result:
    with stage2_lock(settings, hub_request_id, wait=True):
        with transaction(sessions) as session:
            releases.approve(session=session, hub_request_id=hub_request_id, actor=actor)
        return _release_or_fail(sessions, settings, hub_request_id)


def retry_and_release(
    sessions: sessionmaker[Session], settings: NodeSettings, hub_request_id: int, actor: str
) -> Stage2Result:
    """A failed release again: stage 2 afresh (the same files), every study queued again."""
    with stage2_lock(settings, hub_request_id, wait=True):
        with transaction(sessions) as session:
            releases.retry(session=session, hub_request_id=hub_request_id, actor=actor)
        return _release_or_fail(sessions, settings, hub_request_id)


def interrupted(sessions: sessionmaker[Session]) -> list[int]:
    """The requests approved whose stage 2 has not finished (it runs, or it was cut off)."""
    with transaction(sessions) as session:
        found = releases.listing(session=session, state=ReleaseState.APPROVED)
        return [request.hub_request_id for request in found]


def resume(
    sessions: sessionmaker[Session], settings: NodeSettings, hub_request_ids: list[int]
) -> list[int]:
    """Stage 2 again for each request nobody runs (its lock is free) and still approved;
    the requests it ran. A failure fails that request (audited, sent to the hub), not the
    others."""
    resumed = []
    for hub_request_id in hub_request_ids:
        try:
            with stage2_lock(settings, hub_request_id, wait=False):
                if not _still_approved(sessions, hub_request_id):
                    continue
                logger.info(
                    "data request %d: stage 2 was interrupted; running it again", hub_request_id
                )
                resumed.append(hub_request_id)
                _release_or_fail(sessions, settings, hub_request_id)
        except Stage2Busy:
            logger.info("data request %d: stage 2 runs in another process", hub_request_id)
        except Exception as exc:  # recorded as failed by _release_or_fail; go on with the rest
            logger.error(
                "data request %d: stage 2 failed again (%s)", hub_request_id, type(exc).__name__
            )
    return resumed


def _still_approved(sessions: sessionmaker[Session], hub_request_id: int) -> bool:
    with transaction(sessions) as session:
        request = releases.require(session=session, hub_request_id=hub_request_id)
        return ReleaseState(request.state) is ReleaseState.APPROVED


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
