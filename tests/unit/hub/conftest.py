"""An in-process hub on a fresh SQLite database, its users, and nodes that sign requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from httpx import Response

from common import signing
from common.schemas.channel import API_PREFIX
from hub.db import transaction
from hub.deps import Runtime
from hub.main import create_app
from hub.nodes import service as nodes
from hub.settings import HubSettings
from hub.users import service as users
from hub.users.models import Role

HUB_SECRET = "hub-secret-for-unit-tests-0123456789"
PROJECT = "brain-volume"


@pytest.fixture
def hub_settings(tmp_path: Path) -> HubSettings:
    return HubSettings(
        data_dir=tmp_path / "hub",
        secret=HUB_SECRET,  # type: ignore[arg-type]
        max_poll_wait_seconds=5,
        poll_recheck_seconds=0.05,
        ontology_at_start=False,  # ~7 s of loading; the catalogue tests load a subset
    )


@pytest.fixture
def client(hub_settings: HubSettings) -> Iterator[TestClient]:
    with TestClient(create_app(hub_settings)) as test_client:
        yield test_client


@pytest.fixture
def runtime(client: TestClient) -> Runtime:
    hub: Runtime = client.app.state.hub  # type: ignore[attr-defined]
    return hub


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_user(runtime: Runtime, name: str, role: Role, *projects: str) -> str:
    with transaction(runtime.sessions) as session:
        _, token = users.create(
            session=session, secret=runtime.secret, name=name, role=role, actor="test"
        )
        for project in projects:
            if users.get_project(session=session, name=project) is None:
                users.create_project(session=session, name=project, actor="test")
            users.add_member(session=session, project=project, user=name, actor="test")
    return token


@pytest.fixture
def admin(runtime: Runtime) -> str:
    return add_user(runtime, "root", Role.ADMIN)


@pytest.fixture
def researcher(runtime: Runtime) -> str:
    return add_user(runtime, "ada", Role.RESEARCHER, PROJECT)


@dataclass
class SigningNode:
    """A node as the hub sees it: an id and a key that signs its requests."""

    client: TestClient
    name: str
    node_id: str
    key: Ed25519PrivateKey

    def request(self, method: str, path: str, body: Any = None, **overrides: Any) -> Response:
        content = b"" if body is None else json.dumps(body).encode()
        headers = signing.sign_request(
            self.key, node_id=self.node_id, method=method, target=path, body=content, **overrides
        ).as_dict()
        headers["Content-Type"] = "application/json"
        return self.client.request(method, path, content=content, headers=headers)

    def poll(self, wait: float = 0) -> list[dict[str, Any]]:
        response = self.request("GET", f"{API_PREFIX}/tasks?wait={wait:g}")
        assert response.status_code == 200, response.text
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        return tasks

    def answer(self, task_id: int, result: dict[str, Any]) -> Response:
        return self.request("POST", f"{API_PREFIX}/tasks/{task_id}/result", result)


def create_node(runtime: Runtime, name: str) -> str:
    """A node entry at the hub; its one-time enrollment token."""
    with transaction(runtime.sessions) as session:
        _, token, _ = nodes.create(
            session=session, secret=runtime.secret, name=name, token_hours=1, actor="test"
        )
    return token


def enroll(client: TestClient, runtime: Runtime, name: str) -> SigningNode:
    token = create_node(runtime, name)
    key = signing.generate_private_key()
    response = client.post(
        f"{API_PREFIX}/enroll", json={"token": token, "public_key": signing.public_key_text(key)}
    )
    assert response.status_code == 200, response.text
    return SigningNode(client, name, response.json()["node_id"], key)


@pytest.fixture
def node(client: TestClient, runtime: Runtime) -> SigningNode:
    return enroll(client, runtime, "st-elsewhere")


STATUS_ANSWER = {
    "status": "answered",
    "payload": {"software_version": "0.1.0", "studies": 3, "series": 7, "instances": 210},
}
