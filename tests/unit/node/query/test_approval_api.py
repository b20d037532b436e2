"""Queries awaiting approval in the node's API, behind its token: list with the answer the
node would give, read, approve, decline with a reason. (This node is not enrolled: the
decision stays unsent, which the answer says; the channel is tested with a real hub in
tests/integration/test_federation.py.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from common.schemas.cohort import CohortCountRequest
from node import api
from node.main import create_app
from node.query import approval as approvals
from node.store.db import transaction
from tests.unit.node.query.conftest import Store
from tests.unit.node.query.test_handler_and_seed_comparison import task
from tests.unit.node.test_api import AUTH, node_settings

MR = {"project": "seed-000", "cohort": {"inclusion": {"kind": "imaging", "modality": ["MR"]}}}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """A node with 12 MR patients and two queries waiting (tasks 7 and 8)."""
    settings = node_settings(tmp_path).model_copy(
        update={"ontology_at_start": False, "query_auto_answer": False}
    )
    with TestClient(create_app(settings)) as test_client:
        runtime: api.Runtime = test_client.app.state.node  # type: ignore[attr-defined]
        runtime.scheduler.pause()
        with transaction(runtime.sessions) as session:
            store = Store(session)
            for _ in range(12):
                store.study(store.patient(), dt.date(2022, 3, 1))
            for task_id in (7, 8):
                approvals.hold(
                    CohortCountRequest.model_validate(MR),
                    task(MR).model_copy(update={"id": task_id}),
                    session=session,
                )
        yield test_client


def test_the_queries_need_the_node_token(client: TestClient) -> None:
    assert client.get("/api/v1/queries").status_code == 401


def test_waiting_queries_are_listed_with_the_answer_the_node_would_give(
    client: TestClient,
) -> None:
    listed = client.get("/api/v1/queries", headers=AUTH).json()
    assert [q["task_id"] for q in listed] == [7, 8]
    assert listed[0]["answer"]["patients"] == {"value": 10, "withheld": None}  # 12, rounded
    assert listed[0]["cohort"][1] == "  an imaging series: modality MR"
    assert client.get("/api/v1/queries/8", headers=AUTH).json()["state"] == "awaiting"
    assert client.get("/api/v1/queries/99", headers=AUTH).status_code == 404


def test_approval_answers_and_a_decision_not_yet_sent_says_so(client: TestClient) -> None:
    approved = client.post("/api/v1/queries/7/approve", headers=AUTH)
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert (body["state"], body["decided_by"], body["sent_at"]) == (
        "approved",
        "api@testclient",
        None,
    )
    assert body["answer"]["patients"]["value"] == 10
    again = client.post("/api/v1/queries/7/approve", headers=AUTH)
    assert again.status_code == 409
    assert "approved" in again.json()["detail"]


def test_a_query_is_declined_with_a_reason(client: TestClient) -> None:
    empty = client.post("/api/v1/queries/8/decline", json={"reason": ""}, headers=AUTH)
    assert empty.status_code == 422
    declined = client.post(
        "/api/v1/queries/8/decline", json={"reason": "outside our agreement"}, headers=AUTH
    ).json()
    assert (declined["state"], declined["refusal"]) == ("declined", "outside our agreement")
    assert [q["task_id"] for q in client.get("/api/v1/queries", headers=AUTH).json()] == [7]
    everything = client.get("/api/v1/queries?decided=true", headers=AUTH).json()
    assert [(q["task_id"], q["state"]) for q in everything] == [(8, "declined"), (7, "awaiting")]
