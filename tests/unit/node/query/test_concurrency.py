"""A query's answer while other work writes to the node's store at the same time.

On SQLite the evaluation reads under a snapshot; a write committed by another connection
before the answer is remembered used to fail the answer at once ("database is locked")."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common import audit
from common.crypto import SiteSecret
from common.schemas.cohort import CohortCountRequest
from node.query import scheduled, service
from node.query.concepts import Expander
from node.query.disclosure import Policy
from node.query.labels import all_labelled, label_new_series
from node.store.db import lock_for_writing, transaction
from node.store.models import AuditRecord
from tests.unit.node.query.conftest import Store, sqlite_sessions

ALL_IMAGED = {"inclusion": {"kind": "imaging"}}


def _fill(sessions: sessionmaker[Session], count: int) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        for _ in range(count):
            store.study(store.patient(), dt.date(2021, 1, 1))


def _write_elsewhere(sessions: sessionmaker[Session], done: threading.Event) -> None:
    with transaction(sessions) as session:
        audit.append(session, AuditRecord, actor="ingest", action="stored", subject="x")
    done.set()


def test_a_write_committed_during_the_evaluation_waits_and_the_answer_stands(
    sessions: sessionmaker[Session],
    expander: Expander,
    secret: SiteSecret,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fill(sessions, 30)
    with transaction(sessions) as session:
        label_new_series(session=session)  # else labelling them makes the query a writer early
    evaluate = service.evaluate
    written = threading.Event()
    writer: list[threading.Thread] = []

    def evaluate_while_another_writes(*args: Any, **kwargs: Any) -> service.Evaluation:
        figures = evaluate(*args, **kwargs)
        thread = threading.Thread(target=_write_elsewhere, args=(sessions, written))
        thread.start()
        writer.append(thread)
        written.wait(0.5)  # without the write lock, the other commit lands right now
        return figures

    monkeypatch.setattr(service, "evaluate", evaluate_while_another_writes)
    request = CohortCountRequest.model_validate({"project": "p", "cohort": ALL_IMAGED})
    with transaction(sessions) as session:
        answer = service.answer(
            request, session=session, policy=Policy(), secret=secret, actor="t", expander=expander
        )
    writer[0].join(10)
    assert answer.patients.value == 30
    assert written.is_set()  # the other writer waited its turn, then committed
    with transaction(sessions) as session:
        actions = session.scalars(select(AuditRecord.action).order_by(AuditRecord.id)).all()
    assert actions == ["query.answered", "stored"]


def test_concurrent_queries_and_writers_all_succeed(
    sessions: sessionmaker[Session], expander: Expander, secret: SiteSecret
) -> None:
    _fill(sessions, 30)
    failures: list[BaseException] = []

    def ask(project: str) -> None:
        request = CohortCountRequest.model_validate({"project": project, "cohort": ALL_IMAGED})
        try:
            for _ in range(5):
                with transaction(sessions) as session:
                    service.answer(
                        request,
                        session=session,
                        policy=Policy(),
                        secret=secret,
                        actor="t",
                        expander=expander,
                    )
        except BaseException as exc:  # collected, and asserted below
            failures.append(exc)

    def write() -> None:
        try:
            for _ in range(40):
                _write_elsewhere(sessions, threading.Event())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=ask, args=(f"p{i}",)) for i in range(3)]
    threads.append(threading.Thread(target=write))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    with transaction(sessions) as session:
        answered = session.scalar(
            select(func.count()).where(AuditRecord.action == "query.answered")
        )
    assert answered == 15


def test_the_lock_is_a_no_op_inside_a_transaction_that_already_wrote(tmp_path: Path) -> None:
    sessions = sqlite_sessions(tmp_path / "n.db")
    with transaction(sessions) as session:
        audit.append(session, AuditRecord, actor="a", action="b", subject="c")
        session.flush()
        lock_for_writing(session)  # already the writer: nothing to begin, nothing raised
        audit.append(session, AuditRecord, actor="a", action="d", subject="c")
    with transaction(sessions) as session:
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 2


def test_the_scheduled_job_labels_what_arrived_so_the_query_does_not(
    sessions: sessionmaker[Session],
) -> None:
    _fill(sessions, 12)
    with transaction(sessions) as session:
        assert not all_labelled(session)
    scheduled.label(sessions)
    with transaction(sessions) as session:
        assert all_labelled(session)
        assert label_new_series(session=session) == 0  # the next query finds nothing to do


def test_a_scheduler_runs_the_labelling_right_after_start(
    sessions: sessionmaker[Session],
) -> None:
    _fill(sessions, 3)
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    scheduled.register(scheduler, sessions)
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with transaction(sessions) as session:
                if all_labelled(session):
                    break
            time.sleep(0.05)
        with transaction(sessions) as session:
            assert all_labelled(session)
    finally:
        scheduler.shutdown(wait=True)
