"""`POST /clinical/fhir`: a Bundle in, pseudonymized facts stored, counts out."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from node import api
from node.clinical.models import Condition
from node.main import create_app
from node.store.db import transaction
from tests.unit.node.clinical.conftest import IDENTIFIERS, hospital_bundle
from tests.unit.node.test_api import AUTH, node_settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = node_settings(tmp_path_factory.mktemp("node"))
    with TestClient(create_app(settings)) as running:
        yield running


def conditions(client: TestClient) -> int:
    runtime: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
    with transaction(runtime.sessions) as session:
        return int(session.execute(select(func.count()).select_from(Condition)).scalar_one())


def test_a_bundle_is_imported_and_answered_with_counts_only(client: TestClient) -> None:
    response = client.post("/clinical/fhir", json=hospital_bundle(), headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["patients"] == 1
    assert body["facts"] == {"condition": 2, "imaging_study": 1, "measurement": 1}
    assert not any(identifier in response.text for identifier in IDENTIFIERS)
    again = client.post("/clinical/fhir", json=hospital_bundle(), headers=AUTH)
    assert again.status_code == 200
    assert conditions(client) == 2


def test_an_invalid_entry_is_a_422_naming_it_and_nothing_is_stored(client: TestClient) -> None:
    before = conditions(client)
    bundle = hospital_bundle()
    bundle["entry"][1]["resource"]["onsetDateTime"] = "MRN99817263"
    response = client.post("/clinical/fhir", json=bundle, headers=AUTH)
    assert response.status_code == 422
    assert "entry 1 (Condition): Condition.onsetDateTime" in response.json()["detail"]
    assert "MRN99817263" not in response.text
    assert conditions(client) == before


def test_a_bundle_sent_as_application_fhir_json_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/clinical/fhir",
        content=json.dumps(hospital_bundle("collection")),
        headers={**AUTH, "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["patients"] == 1


def test_a_bundle_without_the_token_is_refused(client: TestClient) -> None:
    response = client.post("/clinical/fhir", json=hospital_bundle())
    assert response.status_code == 401
