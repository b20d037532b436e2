"""Labelling new series in the background, so that a query seldom has to.

A query labels what arrived since the last labelling before it counts; after a bulk
arrival (a PACS retrieval, a restored project) that is tens of thousands of series, and
the first researcher to ask would wait for them. The job runs right after start and then
every minute; when every series has its label it costs two counts.
"""

from __future__ import annotations

import datetime as dt
import logging

from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from sqlalchemy.orm import Session, sessionmaker

from node.query.labels import label_new_series
from node.store.db import transaction

logger = logging.getLogger(__name__)

JOB_ID = "series-labelling"
INTERVAL_SECONDS = 60.0


def label(sessions: sessionmaker[Session]) -> None:
    try:
        with transaction(sessions) as session:
            label_new_series(session=session)
    except Exception as exc:  # the next run (or the next query) tries again; the type only
        logger.error("labelling new series failed: %s", type(exc).__name__)


def register(
    scheduler: BackgroundScheduler,
    sessions: sessionmaker[Session],
    *,
    interval_seconds: float = INTERVAL_SECONDS,
) -> None:
    scheduler.add_job(
        label,
        "interval",
        args=(sessions,),
        seconds=interval_seconds,
        id=JOB_ID,
        name="series labelling",
        replace_existing=True,
        next_run_time=dt.datetime.now(dt.UTC),
    )
