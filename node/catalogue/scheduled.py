"""Publishing the catalogue on a schedule, while the node is enrolled.

The first run comes a minute after start (the store settles, the hub channel connects);
then every ``catalogue_publish_hours``. A hub that cannot be reached is tried again at the
next run; nothing is queued meanwhile: each publication is built afresh from the store.
"""

from __future__ import annotations

import datetime as dt
import logging

from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from sqlalchemy.orm import Session, sessionmaker

from common.errors import HavenetError
from node.catalogue import publish as publishing
from node.federation import enrollment as enrollments
from node.settings import NodeSettings

logger = logging.getLogger(__name__)

JOB_ID = "catalogue-publication"
FIRST_DELAY_SECONDS = 60.0


def publish_if_enrolled(settings: NodeSettings, sessions: sessionmaker[Session]) -> None:
    if not enrollments.is_enrolled(settings.data_dir):
        return
    try:
        publishing.publish(sessions, settings, actor="scheduler")
    except HavenetError as exc:
        logger.warning("catalogue not published: %s", exc)


def register(
    scheduler: BackgroundScheduler,
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    *,
    first_delay_seconds: float = FIRST_DELAY_SECONDS,
) -> None:
    """Add the publication job, unless ``catalogue_publish_hours`` is 0 (on demand only)."""
    if settings.catalogue_publish_hours <= 0:
        return
    scheduler.add_job(
        publish_if_enrolled,
        "interval",
        args=(settings, sessions),
        hours=settings.catalogue_publish_hours,
        id=JOB_ID,
        name="catalogue publication",
        replace_existing=True,
        next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=first_delay_seconds),
    )
