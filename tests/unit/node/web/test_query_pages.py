"""Hospital IT's page of the queries that wait for local approval, in process: each shows
the cohort in words and exactly what approving would send (never a suppressed figure);
approving answers it, declining needs a reason; both are audited and listed as decided. (This
node is not enrolled: the decision waits to be sent, which the page says.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from common.schemas.cohort import CohortCountRequest
from node import api
from node.main import create_app
from node.query import approval as approvals
from node.store.db import transaction
from node.store.models import AuditRecord
from tests.unit.node.query.conftest import Store
from tests.unit.node.query.test_handler_and_seed_comparison import task
from tests.unit.node.test_api import TOKEN, node_settings

MR = {"project": "seed-000", "cohort": {"inclusion": {"kind": "imaging", "modality": ["MR"]}}}
CT = {"project": "seed-000", "cohort": {"inclusion": {"kind": "imaging", "modality": ["CT"]}}}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """12 MR patients and 3 CT patients; task 7 asks for MR, task 8 for CT."""
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
            for _ in range(3):
                store.study(store.patient(), dt.date(2022, 3, 1), series=(("CT", "head"),))
            for task_id, payload in ((7, MR), (8, CT)):
                approvals.hold(
                    CohortCountRequest.model_validate(payload),
                    task(payload).model_copy(update={"id": task_id}),
                    session=session,
                )
        test_client.post("/ui/login", data={"token": TOKEN})
        yield test_client


def actions(client: TestClient) -> list[str]:
    runtime: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
    with transaction(runtime.sessions) as session:
        return list(session.scalars(select(AuditRecord.action).order_by(AuditRecord.id)))


def test_a_waiting_query_shows_what_approving_would_send(client: TestClient) -> None:
    html = client.get("/ui/queries").text
    assert "Query 7: project seed-000" in html and "modality MR" in html
    assert "patients 10, studies 10, series 10 (rounded to 5)" in html  # 12, rounded
    assert "patients &lt;10" in html  # the 3 CT patients are withheld ...
    assert "patients 3" not in html and "studies 3" not in html  # ... and never shown
    assert 'for="reason-7"' in html and 'aria-label="Approve query 7"' in html
    assert 'href="/ui/queries"' in html  # in the navigation of every page


def test_approving_answers_and_lists_the_query_as_decided(client: TestClient) -> None:
    done = client.post("/ui/queries/7/approve", follow_redirects=False)
    assert done.status_code == 303
    html = client.get(done.headers["location"]).text
    assert "Query 7 decided" in html
    decided = html.split("<h2>Decided</h2>")[1]
    assert "approved" in decided and "patients 10" in decided and "not yet" in decided
    assert "query.approved" in actions(client)
    again = client.post("/ui/queries/7/approve")
    assert again.status_code == 409 and "Query 7" in again.text


def test_declining_needs_a_reason_and_records_it(client: TestClient) -> None:
    empty = client.post("/ui/queries/8/decline", data={"reason": "  "}, follow_redirects=False)
    assert empty.headers["location"] == "/ui/queries?error=reason"
    assert "query.declined" not in actions(client)
    client.post("/ui/queries/8/decline", data={"reason": "outside our agreement"})
    html = client.get("/ui/queries").text
    assert "declined: outside our agreement" in html
    assert "query.declined" in actions(client)


def test_the_queries_page_needs_the_log_in(client: TestClient) -> None:
    client.cookies.clear()
    assert client.get("/ui/queries", follow_redirects=False).status_code == 303
    assert client.post("/ui/queries/7/approve", follow_redirects=False).status_code == 303
    assert "query.approved" not in actions(client)
