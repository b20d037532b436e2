"""A node's store with stage-1 CT instances, for stage 2 and the release outbox."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.channel import TaskRead
from common.schemas.release import RELEASE_REQUEST
from node.settings import NodeSettings
from node.store import correspondence
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from tests.conftest import SECRET, ct_dataset
from tests.unit.node.test_qa import store_instance


@pytest.fixture
def settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(
        data_dir=tmp_path,
        site_secret=SECRET.decode(),  # type: ignore[arg-type]
        correspondence_key=correspondence.new_key(),  # type: ignore[arg-type]
        release_chunk_bytes=4096,
    )


@pytest.fixture
def sessions(settings: NodeSettings) -> Iterator[sessionmaker[Session]]:
    migrate(settings.database)
    engine = make_engine(settings.database)
    yield make_sessionmaker(engine)
    engine.dispose()


def store_study(sessions: sessionmaker[Session], data_dir: Path, study: int) -> str:
    """One stage-1 CT instance of its own patient; its stage-1 study UID."""
    ds = ct_dataset(
        patient_id=f"MRN5566{study}",
        study_uid=f"1.2.826.0.1.3680043.10.3.{study}",
        series_uid=f"1.2.826.0.1.3680043.10.3.{study}.1",
        sop_uid=f"1.2.826.0.1.3680043.10.3.{study}.1.1",
    )
    with transaction(sessions) as session:
        uid: str = store_instance(session, data_dir, ds).series.study.study_uid
    return uid


def request_task(
    request_id: int, project: str, study_uids: list[str], task_id: int = 1
) -> TaskRead:
    now = dt.datetime.now(dt.UTC)
    return TaskRead(
        id=task_id,
        kind=RELEASE_REQUEST,
        payload={"request_id": request_id, "selection": {"study_uids": study_uids}},
        issued=now,
        expires=now + dt.timedelta(hours=1),
        project=project,
        requested_by="ada",
    )
