"""The node's pages for hospital IT: arrivals, rejections, jobs and the QA preview."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from node import api
from node.ingest.exceptions import InstanceUnreadable
from node.main import create_app
from node.store.db import transaction
from tests.conftest import ct_dataset
from tests.unit.node.test_api import IDENTIFIERS, TOKEN, node_settings
from tests.unit.node.test_qa import store_instance


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(node_settings(tmp_path))) as test_client:
        yield test_client


def runtime(client: TestClient) -> api.Runtime:
    node: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
    return node


def log_in(client: TestClient) -> None:
    response = client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    assert TOKEN not in response.headers["set-cookie"]


def test_the_pages_ask_for_the_nodes_token(client: TestClient) -> None:
    assert client.get("/ui/jobs", follow_redirects=False).headers["location"] == (
        "/ui/login?next=/ui/jobs"
    )
    refused = client.post("/ui/login", data={"token": "guess"})
    assert refused.status_code == 401
    assert "That is not this node" in refused.text


def test_arrivals_show_what_was_stored_and_why_something_was_rejected(
    client: TestClient,
) -> None:
    node = runtime(client)
    with transaction(node.sessions) as session:
        store_instance(session, node.settings.data_dir)
    with pytest.raises(InstanceUnreadable):
        node.ingest.accept(b"not dicom at all", source="c-store MODALITY")
    node.ingest.drain(30)
    log_in(client)
    page = client.get("/ui/")
    assert page.status_code == 200
    assert "1 instances stored in the last 14 days" in page.text
    assert 'aria-label="Instances stored per modality"' in page.text
    assert ">CT</text>" in page.text  # a bar of the modality chart
    assert "<td>not a DICOM file: no DICM prefix</td>" in page.text


def test_the_qa_preview_shows_actions_and_pixels_but_no_identifier(client: TestClient) -> None:
    node = runtime(client)
    with transaction(node.sessions) as session:
        sop_uid = store_instance(session, node.settings.data_dir, ct_dataset()).sop_uid
    log_in(client)
    listing = client.get("/ui/qa")
    assert f'href="/ui/qa/{sop_uid}"' in listing.text
    page = client.get(f"/ui/qa/{sop_uid}")
    assert page.status_code == 200
    assert "PatientID" in page.text and "subject-key" in page.text
    assert [n for n in IDENTIFIERS if n in page.text] == []
    image = client.get(f"/ui/qa/{sop_uid}/image.png")
    assert image.headers["content-type"] == "image/png"
    assert client.get("/ui/qa/2.25.0").status_code == 404


def test_jobs_are_listed_with_their_progress(client: TestClient) -> None:
    log_in(client)
    page = client.get("/ui/jobs")
    assert "No job yet" in page.text
