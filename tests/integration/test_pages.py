"""The hub's pages in headless Chromium against a running hub: a researcher logs in,
finds a cohort in the catalogue and sees its counts per node. Screenshots of every page
land in test-artifacts/pages/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from hub.db import make_engine
from ontology import loader
from tests.integration.hubs import Hub, NodeProcess
from tests.integration.test_federation import enroll_in_process, fill_store, name_of

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pages"
LOAD_BUDGET_MS = 1000


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    server = Hub(tmp_path_factory.mktemp("hub")).start()
    engine = make_engine(f"sqlite:///{server.folder / 'hub.db'}")
    loader.load(engine, icd_roots=("G30",))  # enough ontology for the typeahead
    engine.dispose()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def published_node(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> str:
    admin = hub.cli("user", "add", "pages-admin", "--role", "admin")
    created = hub.api("POST", "/api/v1/nodes", admin, json={"name": "st-elsewhere"})
    node = NodeProcess(tmp_path_factory.mktemp("node") / "st-elsewhere")
    enroll_in_process(node, hub, created.json()["enrollment_token"])
    fill_store(node.data_dir, studies=12, series_per_study=2, instances=1)
    assert "published" in node.cli("catalogue", "publish").stdout
    return name_of(node)


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def load_time_ms(page: Page) -> float:
    timing = page.evaluate(
        "() => { const t = performance.getEntriesByType('navigation')[0];"
        " return t.loadEventEnd - t.startTime; }"
    )
    return float(timing)


def test_a_researcher_finds_a_cohort_and_sees_its_counts_per_node(
    browser: Browser, hub: Hub, published_node: str
) -> None:
    token = hub.cli("user", "add", "ada-pages", "--role", "researcher")
    page = browser.new_page()
    page.goto(f"{hub.url}/ui/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shoot(page, "login")
    page.get_by_label("Your hub token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Catalogue")).to_be_visible()
    page.get_by_role("group", name="modality").get_by_label("MR").check()
    page.get_by_role("button", name="Search").click()
    expect(
        page.get_by_role("heading", name="25 series, 10 studies, at most 10 patients")
    ).to_be_visible()
    expect(page.get_by_role("cell", name=published_node)).to_be_visible()
    expect(page.get_by_role("img", name="Series per node")).to_be_visible()
    assert load_time_ms(page) < LOAD_BUDGET_MS
    shoot(page, "catalogue")
    page.get_by_label("diagnosis or drug (SYSTEM:CODE)").press_sequentially("alzheimer")
    # The options come from the hub's ontology as the researcher types.
    expect(page.locator("#concept-options option").first).to_have_attribute(
        "value", re.compile(r"^(ICD10CM|ICD10|SNOMED|OMOP):\S+$")
    )
    page.close()


def test_an_admin_sees_the_nodes_and_searches_the_audit_log(
    browser: Browser, hub: Hub, published_node: str
) -> None:
    token = hub.cli("user", "add", "root-pages", "--role", "admin")
    page = browser.new_page()
    page.goto(f"{hub.url}/ui/login")
    page.get_by_label("Your hub token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Nodes").click()
    expect(page.get_by_role("cell", name=published_node)).to_be_visible()
    shoot(page, "nodes")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Search actor, action or subject").fill("catalogue.published")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("cell", name="catalogue.published")).to_be_visible()
    shoot(page, "audit")
    page.close()
