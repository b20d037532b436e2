"""Hub users authenticate with tokens; roles decide what each may do."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.db import transaction
from hub.deps import Runtime
from hub.users.models import User
from tests.unit.hub.conftest import bearer


def test_a_request_without_a_valid_token_is_refused(client: TestClient) -> None:
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", headers=bearer("hvu_not-a-token")).status_code == 401


def test_an_admin_creates_a_user_whose_token_then_works(client: TestClient, admin: str) -> None:
    created = client.post(
        "/api/v1/users", json={"name": "grace", "role": "curator"}, headers=bearer(admin)
    )
    assert created.status_code == 201
    me = client.get("/api/v1/me", headers=bearer(created.json()["token"])).json()
    assert me == {"name": "grace", "role": "curator"}


def test_only_admins_manage_nodes_users_and_projects(client: TestClient, researcher: str) -> None:
    for path, body in (
        ("/api/v1/nodes", {"name": "n"}),
        ("/api/v1/users", {"name": "mallory", "role": "admin"}),
        ("/api/v1/projects", {"name": "p"}),
    ):
        response = client.post(path, json=body, headers=bearer(researcher))
        assert response.status_code == 403, path
        assert "admin" in response.json()["detail"]


def test_user_tokens_are_stored_only_as_keyed_hashes(
    client: TestClient, runtime: Runtime, admin: str
) -> None:
    with transaction(runtime.sessions) as session:
        stored = session.execute(select(User.token_hash)).scalars().all()
    assert admin not in stored
    assert all(len(value) == 64 for value in stored)
