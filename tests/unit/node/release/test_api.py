"""Hospital IT decides on data requests through the node's API, under the node's token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from node import api
from node.main import create_app
from node.release import service as releases
from node.store.db import transaction
from tests.unit.node.release.conftest import request_task, store_study
from tests.unit.node.test_api import AUTH, node_settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = node_settings(tmp_path).model_copy(update={"ontology_at_start": False})
    with TestClient(create_app(settings)) as test_client:
        runtime: api.Runtime = test_client.app.state.node  # type: ignore[attr-defined]
        with transaction(runtime.sessions) as session:
            releases.record_request(session=session, task=request_task(5, "glioma", ["2.25.1"]))
        yield test_client


def test_pending_requests_are_listed_for_hospital_it(client: TestClient) -> None:
    listed = client.get("/api/v1/requests", headers=AUTH).json()
    assert [(r["id"], r["project"], r["state"]) for r in listed] == [(5, "glioma", "requested")]


def test_a_decline_records_its_reason(client: TestClient) -> None:
    declined = client.post(
        "/api/v1/requests/5/decline", json={"reason": "no ethics approval"}, headers=AUTH
    )
    assert declined.status_code == 200, declined.text
    assert (declined.json()["state"], declined.json()["reason"]) == (
        "declined",
        "no ethics approval",
    )
    again = client.post("/api/v1/requests/5/approve", headers=AUTH)
    assert again.status_code == 409


def test_requests_need_the_node_token(client: TestClient) -> None:
    assert client.get("/api/v1/requests").status_code == 401


def test_a_request_shows_what_it_selects_here_in_counts_only(client: TestClient) -> None:
    runtime: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
    uid = store_study(runtime.sessions, runtime.settings.data_dir, 1)
    with transaction(runtime.sessions) as session:
        releases.record_request(session=session, task=request_task(6, "glioma", [uid], 2))
    shown = client.get("/api/v1/requests/6", headers=AUTH).json()
    assert shown["selects"] == {
        "patients": 1,
        "studies": 1,
        "instances": 1,
        "megabytes": 0.0,
        "patients_with_records": 0,
    }


def test_a_release_that_has_not_failed_is_not_retried(client: TestClient) -> None:
    refused = client.post("/api/v1/requests/5/retry", headers=AUTH)
    assert refused.status_code == 409
    assert "nothing to retry" in refused.json()["detail"]
