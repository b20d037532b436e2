"""Hospital IT's data-request page in process: a request from the hub waits with its
selection; approving runs stage 2 and queues the studies for upload; declining needs a reason
and queues it for the hub; a file the leak check held back is listed with its reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from node import api
from node.main import create_app
from node.release import service as releases
from node.release.models import OutboxItem
from node.store.db import transaction
from tests.conftest import ct_dataset
from tests.unit.node.release.conftest import request_task
from tests.unit.node.test_api import TOKEN, node_settings
from tests.unit.node.test_qa import store_instance


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(node_settings(tmp_path))) as test_client:
        test_client.post("/ui/login", data={"token": TOKEN})
        yield test_client


def runtime(client: TestClient) -> api.Runtime:
    node: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
    return node


def requested(client: TestClient, request_id: int, *, spoiled: bool = False) -> str:
    """A stored stage-1 study and the hub's request for it; the stage-1 study UID."""
    node = runtime(client)
    ds = ct_dataset(
        patient_id=f"MRN4412{request_id}",
        study_uid=f"1.2.826.0.1.3680043.10.8.{request_id}",
        series_uid=f"1.2.826.0.1.3680043.10.8.{request_id}.1",
        sop_uid=f"1.2.826.0.1.3680043.10.8.{request_id}.1.1",
    )
    with transaction(node.sessions) as session:
        stored = store_instance(session, node.settings.data_dir, ds)
        uid = stored.series.study.study_uid
        if spoiled:  # the file carries its subject key where stage 2 keeps the text
            path = node.settings.data_dir / stored.path
            spoilt = pydicom.dcmread(path)
            spoilt.Manufacturer = f"ACME for {spoilt.PatientID}"
            spoilt.save_as(path, enforce_file_format=True)
        releases.record_request(
            session=session, task=request_task(request_id, "brain-volume", [uid], request_id)
        )
    return uid


def outbox_keys(client: TestClient) -> list[str]:
    with transaction(runtime(client).sessions) as session:
        return [item.key for item in session.query(OutboxItem).order_by(OutboxItem.id)]


def test_a_waiting_request_shows_what_it_asks_for_with_labelled_decisions(
    client: TestClient,
) -> None:
    uid = requested(client, 7)
    page = client.get("/ui/requests").text
    assert "Request 7: project brain-volume" in page
    assert "for 1 study" in page and uid in page  # stage-1 UIDs: this is the node's own page
    assert (
        "Approving releases from this node today:</strong> 1 patient, 1 study, 1 instance" in page
    )
    assert 'aria-label="Approve request 7"' in page
    assert '<label for="reason-7">Reason for declining request 7' in page


def test_approving_runs_stage_2_and_queues_the_study_for_the_hub(client: TestClient) -> None:
    requested(client, 8)
    approved = client.post("/ui/requests/8/approve", follow_redirects=False)
    assert approved.headers["location"] == "/ui/requests?done=approved&request=8"
    page = client.get(approved.headers["location"]).text
    assert "Data request 8 approved: stage 2 ran" in page
    assert "No request is waiting." in page
    assert 'state-releasing">releasing' in page
    keys = outbox_keys(client)
    assert keys[:2] == ["state:approved", "state:releasing"]
    assert any(key.startswith("study:") for key in keys)


def test_a_file_held_by_the_leak_check_is_listed_with_its_reason(client: TestClient) -> None:
    requested(client, 9, spoiled=True)
    page = client.post("/ui/requests/9/approve").text
    assert "leak check" in page and "Manufacturer" in page
    assert 'state-released">released' in page  # nothing left to send


def test_declining_needs_a_reason_and_queues_it_for_the_hub(client: TestClient) -> None:
    requested(client, 10)
    empty = client.post("/ui/requests/10/decline", data={"reason": " "})
    assert "Give a reason for declining." in empty.text
    assert outbox_keys(client) == []
    declined = client.post("/ui/requests/10/decline", data={"reason": "no ethics approval"})
    assert "Data request 10 declined" in declined.text
    assert "declined: no ethics approval" in declined.text
    assert outbox_keys(client) == ["state:declined"]


def test_a_request_decided_already_is_not_decided_again(client: TestClient) -> None:
    requested(client, 11)
    client.post("/ui/requests/11/decline", data={"reason": "no"})
    again = client.post("/ui/requests/11/approve")
    assert again.status_code == 409
    assert "data request 11 is declined already" in again.text


def test_the_requests_page_needs_the_log_in(tmp_path: Path) -> None:
    with TestClient(create_app(node_settings(tmp_path))) as anonymous:
        assert anonymous.get("/ui/requests", follow_redirects=False).status_code == 303
        refused = anonymous.post("/ui/requests/1/approve", follow_redirects=False)
        assert refused.headers["location"].startswith("/ui/login")
