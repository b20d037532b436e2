"""The agent dispatches each task to the handler of its kind, answers `node.status` with
counts only, refuses kinds it does not know, reports failures by type, and writes the node's
own audit record of every answer before it leaves."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common import audit
from common.schemas.channel import ResultStatus, TaskRead
from node.federation import agent as agents
from node.federation.agent import Agent
from node.federation.exceptions import HubUnreachable, TaskDeferred, TaskRefused
from node.federation.handlers import HandlerContext, Registry, node_status
from node.settings import NodeSettings
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from node.store.models import AuditRecord, Instance, Patient, Series, Study
from tests.integration.peers import free_port

PATIENT_NAME = "PHILLIPS^MARGARET"


@pytest.fixture
def settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(data_dir=tmp_path, hub_retry_min_seconds=0.01, hub_timeout_seconds=1)


@pytest.fixture
def sessions(settings: NodeSettings) -> Iterator[sessionmaker[Session]]:
    migrate(settings.database)
    engine = make_engine(settings.database)
    yield make_sessionmaker(engine)
    engine.dispose()


def task(kind: str = "node.status", **changes: Any) -> TaskRead:
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {
        "id": 7,
        "kind": kind,
        "issued": now,
        "expires": now + dt.timedelta(hours=1),
        "project": "p1",
        "requested_by": "ada",
        **changes,
    }
    return TaskRead(**values)


def make_agent(
    settings: NodeSettings, sessions: sessionmaker[Session], registry: Registry | None = None
) -> Agent:
    hub = httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    return Agent(settings, sessions, hub, registry or agents.registry)


def close(agent: Agent) -> None:
    asyncio.run(agent.client.aclose())


def store_one_instance(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        patient = Patient(subject_key="SK1", sex="F")
        study = Study(study_uid="2.25.1", patient=patient, description="")
        series = Series(series_uid="2.25.2", study=study)
        series.instances.append(
            Instance(
                sop_uid="2.25.3",
                sop_class_uid="1.2.3",
                path="store/a.dcm",
                size=1,
                sha256="0" * 64,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
            )
        )
        session.add(patient)


def test_node_status_answers_the_version_and_counts_of_the_store(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    store_one_instance(sessions)
    strict = settings.model_copy(update={"query_min_cell": 20, "query_breakdowns": ["sex"]})
    answer = node_status(task(), HandlerContext(strict, sessions))
    policy = answer.pop("policy")
    assert answer == {"software_version": "0.1.0", "studies": 1, "series": 1, "instances": 1}
    # The node publishes the disclosure policy it enforces.
    assert (policy["min_cell"], policy["breakdowns"], policy["noise"]) == (20, ["sex"], False)


def test_a_kind_without_a_handler_is_refused_naming_the_kind(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    agent = make_agent(settings, sessions)
    result = agent.run_handler(task("cohort.count"))
    close(agent)
    assert result.status == ResultStatus.REFUSED
    assert "cohort.count" in result.reason


def test_a_registered_handler_answers_its_kind(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    registry = Registry()
    registry.register("test.echo", lambda t, _context: {"id": t.id})
    agent = make_agent(settings, sessions, registry)
    result = agent.run_handler(task("test.echo"))
    close(agent)
    assert (result.status, result.payload) == (ResultStatus.ANSWERED, {"id": 7})


def test_a_handler_that_declines_makes_the_task_refused_with_its_reason(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    def decline(_task: TaskRead, _context: HandlerContext) -> dict[str, Any]:
        raise TaskRefused("waits for local approval")

    registry = Registry()
    registry.register("test.decline", decline)
    agent = make_agent(settings, sessions, registry)
    result = agent.run_handler(task("test.decline"))
    close(agent)
    assert (result.status, result.reason) == (ResultStatus.REFUSED, "waits for local approval")


def test_a_handler_that_answers_later_makes_the_task_deferred_with_its_reason(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    def hold(_task: TaskRead, _context: HandlerContext) -> dict[str, Any]:
        raise TaskDeferred("awaiting approval by the hospital")

    registry = Registry()
    registry.register("test.hold", hold)
    agent = make_agent(settings, sessions, registry)
    result = agent.run_handler(task("test.hold"))
    close(agent)
    assert (result.status, result.reason) == (
        ResultStatus.DEFERRED,
        "awaiting approval by the hospital",
    )


def test_a_failing_handler_is_reported_by_type_never_by_message(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    def crash(_task: TaskRead, _context: HandlerContext) -> dict[str, Any]:
        raise ValueError(f"bad row for {PATIENT_NAME}")

    registry = Registry()
    registry.register("test.crash", crash)
    agent = make_agent(settings, sessions, registry)
    result = agent.run_handler(task("test.crash"))
    close(agent)
    assert result.status == ResultStatus.FAILED
    assert result.reason == "ValueError at the node"


def test_each_answer_is_in_the_node_audit_log_before_it_leaves(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    agent = make_agent(settings, sessions)
    result = agent.run_handler(task())
    agent.record(task(), result)
    close(agent)
    with transaction(sessions) as session:
        [record] = session.execute(select(AuditRecord)).scalars()
        assert audit.verify(session, AuditRecord).ok
    details = json.loads(record.details)
    assert (record.action, record.subject) == ("federation.answer", "task 7")
    assert details["status"] == "answered"
    assert details["answer"]["instances"] == 0
    assert (details["project"], details["requested_by"]) == ("p1", "ada")


def test_an_expired_task_is_neither_run_nor_answered(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    agent = make_agent(settings, sessions)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    asyncio.run(agent.handle(task(expires=past)))  # posting would fail: nothing listens
    close(agent)
    with transaction(sessions) as session:
        assert session.execute(select(AuditRecord)).first() is None


def test_a_hub_that_cannot_be_reached_is_a_retryable_error(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    agent = make_agent(settings, sessions)
    with pytest.raises(HubUnreachable, match="cannot be reached"):
        asyncio.run(agent.poll())
    close(agent)


def test_a_node_that_is_not_enrolled_runs_no_agent(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    assert asyncio.run(agents.start(settings, sessions)) is None
