"""The node's scheduler picks due selection jobs and runs them, one at a time.

``main.py`` calls :func:`register` once at start-up, before ``scheduler.start()``, and
``scheduler.shutdown()`` at the end: the running job notices the scheduler stopping, sends
C-CANCEL to the PACS and goes back to the queue, so shutdown does not wait for a long
retrieval to finish.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.schedulers.base import STATE_STOPPED  # type: ignore[import-untyped]
from sqlalchemy.orm import Session, sessionmaker

from node.jobs import service
from node.jobs.runner import ClientFactory, IngestSink, RetryPolicy, Runner
from node.settings import NodeSettings
from node.store.db import transaction

logger = logging.getLogger(__name__)

JOB_ID = "havenet-node-selection-jobs"
INTERVAL_SECONDS = 5.0


class JobPicker:
    """The scheduled callable: runs due jobs unless a run is already going on."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._busy = threading.Lock()

    def __call__(self) -> None:
        if not self._busy.acquire(blocking=False):
            return  # a long job is still running; it picks the next due job itself
        try:
            self.runner.run_due()
        except Exception as exc:  # keep the schedule alive; the job's own state says why
            logger.error("picking jobs failed: %s", type(exc).__name__)
        finally:
            self._busy.release()


def register(
    scheduler: BackgroundScheduler,
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    ingest: IngestSink,
    *,
    interval_seconds: float = INTERVAL_SECONDS,
    clients: ClientFactory | None = None,
    retry: RetryPolicy | None = None,
) -> None:
    """Queue again the jobs a dead node left RUNNING, then check for due jobs every
    ``interval_seconds`` (the first check right away). ``clients`` and ``retry`` replace
    the real PACS client and the default back-off (tests)."""
    with transaction(sessions) as session:
        service.requeue_interrupted(session=session)
    runner = Runner(
        settings=settings,
        sessions=sessions,
        ingest=ingest,
        clients=clients,
        retry=retry,
        should_stop=lambda: scheduler.state == STATE_STOPPED,
    )
    scheduler.add_job(
        JobPicker(runner),
        "interval",
        seconds=interval_seconds,
        id=JOB_ID,
        name="selection jobs",
        replace_existing=True,
        coalesce=True,
        # A second instance only finds the picker busy and returns at once; this keeps
        # APScheduler from warning "maximum number of running instances" during long jobs.
        max_instances=2,
        next_run_time=dt.datetime.now(dt.UTC),
    )
