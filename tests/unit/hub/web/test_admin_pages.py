"""The admin's pages in process: a new node's enrollment token is shown once and enrolls the
node; users are made with a token shown once; projects get members; the audit log is
searched, details included."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from common import signing
from common.schemas.channel import API_PREFIX
from hub.deps import Runtime
from hub.users.models import Role
from tests.unit.hub.conftest import add_user, bearer
from tests.unit.hub.web.test_pages import log_in


def shown_token(page: str, field: str) -> str:
    found = re.search(rf'id="{field}" class="token" readonly value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def test_a_new_nodes_token_is_shown_once_and_enrolls_it(client: TestClient, admin: str) -> None:
    log_in(client, admin)
    created = client.post("/ui/admin/nodes", data={"name": "st-new"})
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    token = shown_token(created.text, "new-token")
    assert token.startswith("hve_")
    listed = client.get("/ui/admin/nodes").text
    assert "st-new" in listed and "unused, expires" in listed
    assert token not in listed  # shown once: the hub keeps only its hash

    key = signing.generate_private_key()
    enrolled = client.post(
        f"{API_PREFIX}/enroll", json={"token": token, "public_key": signing.public_key_text(key)}
    )
    assert enrolled.status_code == 200, enrolled.text
    assert "used " in client.get("/ui/admin/nodes").text


def test_a_node_name_taken_or_malformed_is_refused_with_a_message(
    client: TestClient, admin: str
) -> None:
    log_in(client, admin)
    client.post("/ui/admin/nodes", data={"name": "st-twice"})
    again = client.post("/ui/admin/nodes", data={"name": "st-twice"})
    assert again.status_code == 422
    assert "a node named &#39;st-twice&#39; exists already" in again.text
    bad = client.post("/ui/admin/nodes", data={"name": "../etc"})
    assert bad.status_code == 422 and "letters, digits" in bad.text


def test_a_node_is_revoked_from_the_page(client: TestClient, admin: str) -> None:
    log_in(client, admin)
    client.post("/ui/admin/nodes", data={"name": "st-gone"})
    revoked = client.post("/ui/admin/nodes/st-gone/revoke")
    assert revoked.status_code == 200  # after the redirect: the list again
    assert re.search(r"<td>st-gone</td><td>revoked</td>", revoked.text)


def test_users_projects_and_members_are_managed_from_the_page(
    client: TestClient, admin: str
) -> None:
    log_in(client, admin)
    made = client.post("/ui/admin/users", data={"name": "grace", "role": "researcher"})
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    token = shown_token(made.text, "user-token")
    assert client.get("/api/v1/me", headers=bearer(token)).json()["name"] == "grace"

    client.post("/ui/admin/projects", data={"name": "hippocampus"})
    page = client.post("/ui/admin/projects/hippocampus/members", data={"member": "grace"}).text
    assert re.search(r"<td>hippocampus</td><td>grace</td>", page)
    again = client.post("/ui/admin/projects/hippocampus/members", data={"member": "grace"})
    assert again.status_code == 422 and "exists already" in again.text


def test_admin_pages_refuse_other_roles(client: TestClient, runtime: Runtime) -> None:
    log_in(client, add_user(runtime, "cora", Role.CURATOR))
    for path in ("/ui/admin/nodes", "/ui/admin/projects", "/ui/admin/audit"):
        assert client.get(path).status_code == 403
    assert client.post("/ui/admin/users", data={"name": "x", "role": "admin"}).status_code == 403


def test_the_audit_log_is_searched_in_its_details_too(client: TestClient, admin: str) -> None:
    log_in(client, admin)
    client.post("/ui/admin/users", data={"name": "hopper", "role": "curator"})
    found = client.get("/ui/admin/audit", params={"q": "curator"}).text
    assert "<td>user.add</td><td>hopper</td>" in found
    assert "web.login" not in found
