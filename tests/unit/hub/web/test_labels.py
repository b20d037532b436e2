"""Every control on every hub page has an accessible name: a <label for>, a wrapping <label>,
or aria-label — checked on the pages as an admin sees them, with data on each."""

from __future__ import annotations

from html.parser import HTMLParser

from fastapi.testclient import TestClient

from tests.unit.hub.release.conftest import Site
from tests.unit.hub.web.test_pages import log_in
from tests.unit.hub.web.test_research_pages import answer, run_query

CONTROLS = frozenset({"input", "select", "textarea"})
UNNAMED_TYPES = frozenset({"hidden", "submit", "button"})


class Controls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.labelled_ids: set[str] = set()
        self.inside_label = 0
        self.found: list[tuple[dict[str, str], bool]] = []  # (attributes, wrapped in a label)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "label":
            self.inside_label += 1
            if values.get("for"):
                self.labelled_ids.add(values["for"])
        elif tag in CONTROLS and values.get("type", "") not in UNNAMED_TYPES:
            self.found.append((values, self.inside_label > 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.inside_label -= 1

    def unnamed(self) -> list[str]:
        return [
            values.get("name", "?")
            for values, wrapped in self.found
            if not wrapped
            and values.get("id", "") not in self.labelled_ids
            and not values.get("aria-label")
        ]


def test_every_control_on_every_hub_page_has_a_label(
    client: TestClient, site: Site, admin: str, two_studies: list[int]
) -> None:
    log_in(client, admin)
    task_id = run_query(client)
    site.signer.poll()
    site.signer.answer(task_id, answer(30))
    client.post("/ui/admin/nodes", data={"name": "st-labels"})  # a token field on the page
    pages = [
        "/ui/",
        "/ui/cohort",
        "/ui/queries",
        f"/ui/queries/{task_id}",
        "/ui/requests",
        "/ui/exports",
        "/ui/curation",
        f"/ui/curation/{two_studies[0]}",
        f"/ui/curation/{two_studies[0]}/series/1",
        "/ui/admin/nodes",
        "/ui/admin/projects",
        "/ui/admin/audit",
    ]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        parser = Controls()
        parser.feed(response.text)
        assert parser.found or path in {"/ui/queries", "/ui/exports", "/ui/requests"}, path
        assert parser.unnamed() == [], path
    client.cookies.clear()
    parser = Controls()
    parser.feed(client.get("/ui/login").text)
    assert parser.found and parser.unnamed() == []
