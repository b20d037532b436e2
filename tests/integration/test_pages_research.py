"""A researcher builds a cohort in headless Chromium and sees each hospital's answer: a real
hub and two real nodes (`havenet hub serve`, `havenet node serve`), one with 30 patients, one
with 4 — whose counts come back as "<10". Seed 000's comparison (brain volume with and
without a dementia diagnosis) is asked as the statistic. Screenshots go to
test-artifacts/pages/ (load times beside them)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from common.schemas.release import Selection
from tests.integration.hubs import Hub, NodeProcess
from tests.integration.test_federation import enroll_in_process, fill_seed_comparison, name_of
from tests.integration.test_pages import add_user, log_in, shoot
from tests.unit.node.query.test_handler_and_seed_comparison import DEMENTIA, OTHERS

pytestmark = pytest.mark.slow
PROJECT = "dementia-pages"
ANSWER_SECONDS = 30_000  # ms: two nodes polling every second answer well within it


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    server = Hub(tmp_path_factory.mktemp("hub")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(hub: Hub) -> str:
    return add_user(hub, "pages-admin", "admin")


@pytest.fixture(scope="module")
def researcher(hub: Hub, admin: str) -> str:
    created = hub.api("POST", "/api/v1/users", admin, json={"name": "ada-q", "role": "researcher"})
    assert created.status_code == 201, created.text
    assert hub.api("POST", "/api/v1/projects", admin, json={"name": PROJECT}).status_code == 201
    member = hub.api("POST", f"/api/v1/projects/{PROJECT}/members", admin, json={"user": "ada-q"})
    assert member.status_code == 201
    token: str = created.json()["token"]
    return token


@pytest.fixture(scope="module")
def nodes(hub: Hub, admin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two hospitals: 30 patients (15 with dementia) and 4 (2 with dementia)."""
    started: list[NodeProcess] = []
    try:
        for name, dementia, others in (
            ("st-large", DEMENTIA, OTHERS),
            ("st-small", DEMENTIA[:2], OTHERS[:2]),
        ):
            created = hub.api("POST", "/api/v1/nodes", admin, json={"name": name})
            assert created.status_code == 201, created.text
            node = NodeProcess(tmp_path_factory.mktemp(name) / name)
            enroll_in_process(node, hub, created.json()["enrollment_token"])
            fill_seed_comparison(node.data_dir, dementia, others)
            started.append(node.start())
        yield [name_of(node) for node in started]
    finally:
        for node in started:
            node.stop()


def criterion(page: Page, number: int) -> Locator:
    return page.get_by_role("group", name=f"Criterion {number}")


def test_a_researcher_builds_a_cohort_and_sees_each_nodes_answer(
    browser: Browser, hub: Hub, researcher: str, nodes: list[str]
) -> None:
    large, small = nodes
    page = browser.new_page()
    log_in(page, hub.url, researcher)
    page.get_by_role("navigation").get_by_role("link", name="Cohort builder").click()
    expect(page.get_by_label("Project")).to_have_value(PROJECT)  # their only project
    page.get_by_label("Cohort name").fill("MRI and brain volume")
    first = criterion(page, 1)
    first.get_by_label("Kind").select_option("imaging")
    expect(first.get_by_label("Concept (SYSTEM:CODE)")).to_be_hidden()  # fields of its kind only
    first.get_by_label("Modality").fill("MR")
    second = criterion(page, 2)
    second.get_by_label("Kind").select_option("condition")
    second.get_by_label("Role").select_option("exclude")
    second.get_by_label("Concept (SYSTEM:CODE)").fill("ICD10CM:C71")  # no brain tumours
    page.get_by_role("group", name="Break the counts down by").get_by_label("sex").check()
    page.get_by_label("Measurement (SYSTEM:CODE)").fill("LOINC:81243-3")
    page.get_by_label("Histogram edges").fill("15, 20, 25, 30")
    page.get_by_label("Groups").select_option("split")
    page.get_by_label("Condition that splits (SYSTEM:CODE)").fill("ICD10CM:G30")
    page.get_by_role("button", name="Check").click()
    expect(page.get_by_role("heading", name="The query, as the nodes will get it")).to_be_visible()
    shoot(page, "cohort-builder")

    page.get_by_role("button", name="Run the query").click()
    expect(page.get_by_role("heading", name="MRI and brain volume")).to_be_visible()
    answers = page.get_by_role("table", name="Each node's answer")
    for name in (large, small):
        row = answers.get_by_role("row", name=re.compile(rf"^{name} "))
        expect(row.get_by_role("cell", name="answered")).to_be_visible(timeout=ANSWER_SECONDS)
    expect(answers.get_by_role("row", name=re.compile(rf"^{large} "))).to_contain_text("30")
    small_row = answers.get_by_role("row", name=re.compile(rf"^{small} "))
    expect(small_row.get_by_role("cell", name="<10").first).to_be_visible()  # suppressed
    expect(page.get_by_role("heading", name=re.compile(r"^≥30 patients"))).to_be_visible()
    expect(page.get_by_role("img", name="Patients per node")).to_be_visible()
    expect(page.get_by_role("img", name="Patients by sex")).to_be_visible()
    expect(page.get_by_role("img", name="Group yes: histogram")).to_be_visible()
    expect(page.get_by_text("Welch's t-test, no vs yes: t = 2.4")).to_be_visible()
    shoot(page, "query-answers")

    if "cohort" in Selection.model_fields:  # selection.cohort: the release engineer's change
        page.get_by_role("button", name="File the data request").click()
        expect(page.get_by_role("status")).to_contain_text("filed")
        expect(page.get_by_text("the cohort 'MRI and brain volume'")).to_be_visible()
        shoot(page, "requests-filed")
    page.get_by_role("navigation").get_by_role("link", name="Queries").click()
    expect(page.get_by_role("link", name="MRI and brain volume")).to_be_visible()
    shoot(page, "queries")
    page.close()
