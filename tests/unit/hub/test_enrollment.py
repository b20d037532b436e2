"""Enrollment: a one-time token, stored hashed, used once before it expires."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from common import signing
from common.schemas.channel import API_PREFIX, EnrollRequest
from hub.db import transaction
from hub.deps import Runtime
from hub.nodes import service as nodes
from hub.nodes.exceptions import EnrollmentRefused
from hub.nodes.models import EnrollmentToken, Node, NodeState
from tests.unit.hub.conftest import create_node


def enroll_request(token: str) -> dict[str, str]:
    key = signing.generate_private_key()
    return {"token": token, "public_key": signing.public_key_text(key)}


def test_a_node_enrolls_with_its_token_and_holds_its_public_key(
    client: TestClient, runtime: Runtime
) -> None:
    body = enroll_request(create_node(runtime, "north"))
    response = client.post(f"{API_PREFIX}/enroll", json=body)
    assert response.status_code == 200
    assert response.json()["name"] == "north"
    with transaction(runtime.sessions) as session:
        node = nodes.require(session=session, name="north")
        assert node.state == NodeState.ENROLLED
        assert node.public_key == body["public_key"]


def test_an_enrollment_token_works_only_once(client: TestClient, runtime: Runtime) -> None:
    token = create_node(runtime, "north")
    assert client.post(f"{API_PREFIX}/enroll", json=enroll_request(token)).status_code == 200
    again = client.post(f"{API_PREFIX}/enroll", json=enroll_request(token))
    assert again.status_code == 401
    assert "used already" in again.json()["detail"]


def test_an_unknown_enrollment_token_is_refused(client: TestClient) -> None:
    response = client.post(f"{API_PREFIX}/enroll", json=enroll_request("hve_" + "x" * 40))
    assert response.status_code == 401
    assert "not known" in response.json()["detail"]


def test_an_expired_enrollment_token_is_refused(runtime: Runtime) -> None:
    token = create_node(runtime, "north")  # valid for an hour
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    with (
        transaction(runtime.sessions) as session,
        pytest.raises(EnrollmentRefused, match="expired"),
    ):
        nodes.enroll(
            session=session,
            secret=runtime.secret,
            request=EnrollRequest.model_validate(enroll_request(token)),
            now=later,
        )


def test_a_malformed_public_key_is_refused_and_the_token_stays_unused(
    client: TestClient, runtime: Runtime
) -> None:
    token = create_node(runtime, "north")
    bad = client.post(f"{API_PREFIX}/enroll", json={"token": token, "public_key": "A" * 44})
    assert bad.status_code == 422
    assert client.post(f"{API_PREFIX}/enroll", json=enroll_request(token)).status_code == 200


def test_the_hub_stores_no_token_in_the_clear(client: TestClient, runtime: Runtime) -> None:
    token = create_node(runtime, "north")
    with transaction(runtime.sessions) as session:
        stored = session.execute(select(EnrollmentToken.token_hash)).scalars().all()
        assert token not in stored
        assert all(len(value) == 64 for value in stored)
    folder = runtime.settings.data_dir
    raw = b"".join(path.read_bytes() for path in folder.glob("hub.db*"))
    assert token.encode() not in raw


def test_the_admin_api_creates_a_node_and_shows_its_token_once(
    client: TestClient, runtime: Runtime, admin: str
) -> None:
    headers = {"Authorization": f"Bearer {admin}"}
    created = client.post("/api/v1/nodes", json={"name": "south"}, headers=headers)
    assert created.status_code == 201
    token = created.json()["enrollment_token"]
    listed = client.get("/api/v1/nodes", headers=headers).json()
    assert [n["name"] for n in listed] == ["south"]
    assert token not in str(listed)
    with transaction(runtime.sessions) as session:
        assert session.execute(select(Node.state)).scalar_one() == NodeState.CREATED
