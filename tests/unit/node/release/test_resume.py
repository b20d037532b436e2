"""A node stopped in the middle of stage 2 (killed, or a CLI approval cut off) leaves its
request approved; the next start runs stage 2 again, unless another process is running it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.release import ReleaseState
from node.main import create_app
from node.release import service as releases
from node.release import workflow
from node.release.exceptions import Stage2Busy
from node.release.models import OutboxItem
from node.settings import NodeSettings
from node.store.db import transaction
from tests.unit.node.release.conftest import request_task, store_study
from tests.unit.node.test_api import TOKEN


def approved_then_cut_off(sessions: sessionmaker[Session], settings: NodeSettings, n: int) -> None:
    """The decision committed, stage 2 never finished: what a kill leaves behind."""
    uid = store_study(sessions, settings.data_dir, n)
    with transaction(sessions) as session:
        releases.record_request(session=session, task=request_task(n, "glioma", [uid], n))
        releases.approve(session=session, hub_request_id=n, actor="it")


def state(sessions: sessionmaker[Session], n: int) -> ReleaseState:
    with transaction(sessions) as session:
        return ReleaseState(releases.require(session=session, hub_request_id=n).state)


def queued_studies(sessions: sessionmaker[Session]) -> list[str]:
    with transaction(sessions) as session:
        keys = session.scalars(select(OutboxItem.key).where(OutboxItem.kind == "study"))
        return list(keys)


def test_an_interrupted_stage_2_runs_again_and_queues_its_study(
    sessions: sessionmaker[Session], settings: NodeSettings
) -> None:
    approved_then_cut_off(sessions, settings, 1)
    assert workflow.interrupted(sessions) == [1]
    assert workflow.resume(sessions, settings, [1]) == [1]
    assert state(sessions, 1) is ReleaseState.RELEASING  # the uploader sends it next
    assert len(queued_studies(sessions)) == 1
    assert workflow.interrupted(sessions) == []


def test_a_decided_or_finished_request_is_not_resumed(
    sessions: sessionmaker[Session], settings: NodeSettings
) -> None:
    approved_then_cut_off(sessions, settings, 2)
    with transaction(sessions) as session:
        releases.fail(session=session, hub_request_id=2, reason="stage 2: OSError")
    assert workflow.resume(sessions, settings, [2]) == []  # listed before, failed since
    assert state(sessions, 2) is ReleaseState.FAILED and queued_studies(sessions) == []


def test_a_stage_2_another_process_runs_is_left_to_it(
    sessions: sessionmaker[Session], settings: NodeSettings
) -> None:
    approved_then_cut_off(sessions, settings, 3)
    with workflow.stage2_lock(settings, 3, wait=False):  # the lock file exists now
        pass
    lock = settings.data_dir / workflow.LOCKS / "request-3.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(Stage2Busy), workflow.stage2_lock(settings, 3, wait=False):
            pass
        assert workflow.resume(sessions, settings, [3]) == []
        assert state(sessions, 3) is ReleaseState.APPROVED
    finally:
        holder.kill()
        holder.communicate()
    assert workflow.resume(sessions, settings, [3]) == [3]  # its holder died: the lock is free


HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_the_node_resumes_an_interrupted_release_when_it_starts(
    sessions: sessionmaker[Session], settings: NodeSettings
) -> None:
    approved_then_cut_off(sessions, settings, 4)
    serving = settings.model_copy(
        update={"api_token": SecretStr(TOKEN), "ontology_at_start": False}
    )
    with TestClient(create_app(serving)):
        deadline = time.monotonic() + 30
        while state(sessions, 4) is ReleaseState.APPROVED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state(sessions, 4) in {ReleaseState.RELEASING, ReleaseState.RELEASED}
    assert len(queued_studies(sessions)) == 1
