"""The hub's pages: log-in, the catalogue for researchers, nodes and audit for admins."""

from __future__ import annotations

from fastapi.testclient import TestClient

from common.web import session as web_session
from hub.deps import Runtime
from tests.unit.hub.catalogue.test_catalogue_api import publish
from tests.unit.hub.conftest import SigningNode


def log_in(client: TestClient, token: str) -> None:
    response = client.post("/ui/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert token not in response.headers["set-cookie"]  # the cookie is a session, not the token


def test_a_page_asks_for_a_log_in_first(client: TestClient) -> None:
    response = client.get("/ui/?modality=MR", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=/ui/%3Fmodality%3DMR"


def test_a_wrong_token_is_refused_on_the_log_in_page(client: TestClient) -> None:
    response = client.post("/ui/login", data={"token": "not-a-token"})
    assert response.status_code == 401
    assert "That token is not valid." in response.text


def test_the_log_in_never_redirects_off_the_hub(client: TestClient, researcher: str) -> None:
    response = client.post(
        "/ui/login",
        data={"token": researcher, "next": "https://elsewhere.example/"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/ui/"


def test_a_researcher_sees_the_catalogue_with_counts_per_node(
    client: TestClient, node: SigningNode, researcher: str
) -> None:
    publish(node)
    log_in(client, researcher)
    page = client.get("/ui/", params={"modality": "MR", "slice_thickness_max": "1.5"})
    assert page.status_code == 200
    assert "45 series" in page.text
    assert f"<td>{node.name}</td>" in page.text
    assert 'aria-label="Series per node"' in page.text  # the bar chart, drawn as SVG
    assert 'value="T1w"' in page.text  # a facet value to choose


def test_a_tampered_session_cookie_is_no_log_in(
    client: TestClient, researcher: str, runtime: Runtime
) -> None:
    log_in(client, researcher)
    cookie = client.cookies.get(web_session.COOKIE) or ""
    user_id, expires, mac = cookie.split(".")
    client.cookies.clear()
    client.cookies.set(web_session.COOKIE, f"{int(user_id) + 1}.{expires}.{mac}")
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_admin_pages_are_for_admins_only(
    client: TestClient, node: SigningNode, researcher: str, admin: str
) -> None:
    log_in(client, researcher)
    assert client.get("/ui/admin/nodes").status_code == 403
    client.cookies.clear()
    log_in(client, admin)
    nodes = client.get("/ui/admin/nodes")
    assert nodes.status_code == 200 and node.name in nodes.text
    audit = client.get("/ui/admin/audit", params={"q": "web.login"})
    assert audit.status_code == 200
    assert "user:ada" in audit.text and "user:root" in audit.text
    assert "node.enroll" not in audit.text  # the search narrows the log


def test_the_pages_fetch_nothing_from_elsewhere(client: TestClient, researcher: str) -> None:
    log_in(client, researcher)
    page = client.get("/ui/").text
    assert "http://" not in page and "https://" not in page
    assert client.get("/ui/static/typeahead.js").status_code == 200
    assert client.get("/ui/assets/style.css").status_code == 200
