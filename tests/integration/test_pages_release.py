"""Data release through the pages, in headless Chromium against a real hub and a real node
(`havenet hub serve`, `havenet node serve` on loopback): hospital IT approves a request on
the node's page; a curator looks through a study's series, rejects one study with a reason
and accepts another; the researcher sees the request's progress and downloads the export.
Screenshots of every page go to test-artifacts/pages/ (load times beside them)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import numpy
import pytest
from playwright.sync_api import Browser, expect

from node.settings import load
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from tests.conftest import ct_dataset
from tests.integration.hubs import API_TOKEN, Hub, NodeProcess, havenet
from tests.integration.peers import free_port
from tests.integration.test_federation import enroll_in_process
from tests.integration.test_pages import add_user, log_in, shoot
from tests.unit.node.test_qa import store_instance

pytestmark = pytest.mark.slow
PROJECT = "glioma-pages"


@dataclass
class ServedNode(NodeProcess):
    """A node process whose API (and pages) listen on a port the test knows."""

    api_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _serve(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        command = [
            *havenet(), "node", "serve", "--data-dir", str(self.data_dir),
            "--dicom-port", str(free_port()), "--api-port", str(self.api_port),
        ]  # fmt: skip
        return subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the node did not answer /health in time:\n{self.log()}")

    def api(self, method: str, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    server = Hub(tmp_path_factory.mktemp("hub")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> dict[str, str]:
    admin = add_user(hub, "pages-admin", "admin")
    made = {"admin": admin}
    for name, role in (("ada-release", "researcher"), ("cora-release", "curator")):
        created = hub.api("POST", "/api/v1/users", admin, json={"name": name, "role": role})
        assert created.status_code == 201, created.text
        made[role] = created.json()["token"]
    assert hub.api("POST", "/api/v1/projects", admin, json={"name": PROJECT}).status_code == 201
    member = {"user": "ada-release"}
    assert hub.api("POST", f"/api/v1/projects/{PROJECT}/members", admin, json=member).is_success
    return made


@pytest.fixture(scope="module")
def node(
    hub: Hub, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedNode]:
    created = hub.api("POST", "/api/v1/nodes", tokens["admin"], json={"name": "st-pages"})
    assert created.status_code == 201, created.text
    served = ServedNode(tmp_path_factory.mktemp("node") / "st-pages")
    enroll_in_process(served, hub, created.json()["enrollment_token"])
    served.start()
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


def phantom(rows: int, slice_index: int, slices: int) -> bytes:
    """A disc whose radius follows the slice, so that scrolling through a series shows it."""
    y, x = numpy.mgrid[0:rows, 0:rows]
    radius = rows * (0.15 + 0.25 * (slice_index + 1) / slices)
    disc = (x - rows / 2) ** 2 + (y - rows / 2) ** 2 < radius**2
    pixels = numpy.where(disc, 1800, 200) + (x * 4)  # stored values; the slope maps to HU
    return pixels.astype(numpy.uint16).tobytes()


def fill(node: NodeProcess, tag: int, studies: int, slices: int, rows: int = 96) -> list[str]:
    """Stage-1 CT series in the node's store, one patient per study; the stage-1 study UIDs."""
    settings = load(None, data_dir=node.data_dir)
    migrate(settings.database)
    engine = make_engine(settings.database)
    uids = []
    try:
        for study in range(1, studies + 1):
            with transaction(make_sessionmaker(engine)) as session:
                for number in range(1, slices + 1):
                    ds = ct_dataset(
                        patient_id=f"MRN{tag}{study:04d}",
                        study_uid=f"1.2.826.0.1.3680043.10.{tag}.{study}",
                        series_uid=f"1.2.826.0.1.3680043.10.{tag}.{study}.1",
                        sop_uid=f"1.2.826.0.1.3680043.10.{tag}.{study}.1.{number}",
                        rows=rows,
                    )
                    ds.InstanceNumber = number
                    ds.WindowCenter, ds.WindowWidth = 400, 2000
                    ds.PixelData = phantom(rows, number - 1, slices)
                    stored = store_instance(session, settings.data_dir, ds)
                uids.append(stored.series.study.study_uid)
    finally:
        engine.dispose()
    return uids


def request_release(hub: Hub, researcher: str, uids: list[str]) -> int:
    body = {"project": PROJECT, "selection": {"study_uids": uids}, "nodes": ["st-pages"]}
    created = hub.api("POST", "/api/v1/requests", researcher, json=body)
    assert created.status_code == 201, created.text
    request_id: int = created.json()["id"]
    return request_id


def eventually(check: Callable[[], Any], node: NodeProcess, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s:\n{node.log()}")
        time.sleep(0.1)
    return found


def arrived_at_node(node: ServedNode, request_id: int) -> bool:
    return any(r["id"] == request_id for r in node.api("GET", "/api/v1/requests").json())


def hub_state(hub: Hub, token: str, request_id: int) -> str:
    found = hub.api("GET", f"/api/v1/requests/{request_id}", token).json()
    state: str = found["targets"][0]["state"]
    return state


def released(hub: Hub, tokens: dict[str, str], node: ServedNode, request_id: int) -> None:
    eventually(lambda: hub_state(hub, tokens["researcher"], request_id) == "released", node, 60)


def test_hospital_it_approves_a_request_on_the_nodes_page(
    browser: Browser, hub: Hub, tokens: dict[str, str], node: ServedNode
) -> None:
    uids = fill(node, 81, studies=1, slices=3)
    request_id = request_release(hub, tokens["researcher"], uids)
    eventually(lambda: arrived_at_node(node, request_id), node)

    page = browser.new_page()
    page.goto(f"{node.url}/ui/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shoot(page, "node-login")
    page.get_by_label("The node's API token").fill(API_TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Arrivals")).to_be_visible()
    shoot(page, "node-arrivals")
    page.get_by_role("link", name="Data requests").click()
    expect(
        page.get_by_role("heading", name=f"Request {request_id}: project {PROJECT}")
    ).to_be_visible()
    shoot(page, "node-requests-pending")
    page.get_by_role("button", name=f"Approve request {request_id}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Data request {request_id} approved")
    expect(page.get_by_text("No request is waiting.")).to_be_visible()
    shoot(page, "node-requests")
    released(hub, tokens, node, request_id)

    page.get_by_role("link", name="Jobs").click()
    shoot(page, "node-jobs")
    page.get_by_role("link", name="QA preview").click()
    page.get_by_role("link").filter(has_text="2.25.").first.click()
    expect(page.get_by_role("img", name="The stored, pseudonymized pixels")).to_be_visible()
    shoot(page, "node-qa")
    page.close()


def test_a_curator_rejects_one_study_and_accepts_another(
    browser: Browser, hub: Hub, tokens: dict[str, str], node: ServedNode
) -> None:
    uids = fill(node, 82, studies=2, slices=4)
    request_id = request_release(hub, tokens["researcher"], uids)
    eventually(lambda: arrived_at_node(node, request_id), node)
    approved = node.api("POST", f"/api/v1/requests/{request_id}/approve")
    assert approved.status_code == 200, approved.text
    released(hub, tokens, node, request_id)
    queue = hub.api("GET", "/api/v1/curation", tokens["curator"]).json()
    reject, accept = sorted(s["id"] for s in queue if s["request_id"] == request_id)

    page = browser.new_page()
    log_in(page, hub.url, tokens["curator"])
    expect(page.get_by_role("heading", name="Quarantine")).to_be_visible()  # a curator's home
    shoot(page, "curation-queue")
    page.get_by_role("link", name=f"Study {reject}", exact=True).click()
    thumbnail = page.get_by_role("img", name="Series 1 (CT), frame 2 of 4")
    expect(thumbnail).to_be_visible()
    drawn = "img => img.complete && img.naturalWidth === 96"  # the hub rendered the pixels
    page.wait_for_function(drawn, arg=thumbnail.element_handle(), timeout=5000)
    expect(page.get_by_role("heading", name="PHI scan (the hub's)")).to_be_visible()
    shoot(page, "curation-study")

    thumbnail.click()
    frame = page.get_by_role("img", name="Series 1, frame 2 of 4")
    expect(frame).to_be_visible()
    page.get_by_label("Frame", exact=True).fill("4")
    expect(page.locator("#frame-label")).to_have_text("Frame 4 of 4")
    expect(page.locator("#frame-image")).to_have_attribute(
        "src", re.compile(r"/frames/4\.png\?v=\w+$")
    )
    page.wait_for_function(drawn, arg=page.locator("#frame-image").element_handle())
    shoot(page, "curation-viewer")
    page.get_by_role("link", name="Next frame").click()  # without the script: a page a step
    expect(page.locator("#frame-label")).to_have_text("Frame 4 of 4")

    page.get_by_role("link", name="Back to the study").click()
    page.get_by_label("Reason for rejecting (the node sees it)").fill("motion artefacts")
    page.get_by_role("button", name="Reject").click()
    expect(page.get_by_role("status")).to_have_text(
        f"Study {reject} rejected; its node is told why."
    )
    page.get_by_role("link", name=f"Study {accept}", exact=True).click()
    page.get_by_role("button", name="Accept into the project").click()
    expect(page.get_by_role("status")).to_have_text(f"Study {accept} accepted.")
    page.close()

    rejections = lambda: node.api("GET", "/api/v1/requests/rejections").json()  # noqa: E731
    [rejection] = eventually(rejections, node)
    assert rejection["reason"] == "motion artefacts"
    _researcher_sees_the_export(browser, hub, tokens["researcher"], request_id, accept)


def _researcher_sees_the_export(
    browser: Browser, hub: Hub, token: str, request_id: int, accepted: int
) -> None:
    page = browser.new_page()
    log_in(page, hub.url, token)
    page.get_by_role("navigation").get_by_role("link", name="Data requests").click()
    row = page.get_by_role("row", name=re.compile(rf"^{request_id} {PROJECT} "))
    expect(row).to_contain_text("st-pages: released, 2 studies")
    shoot(page, "requests")
    page.get_by_role("navigation").get_by_role("link", name="Exports").click()
    link = page.get_by_role("link").filter(has_text=".zip")
    expect(link).to_have_count(1)
    with page.expect_download() as download:
        page.locator(f'a[href$="/studies/{accepted}.zip"]').click()
    assert download.value.suggested_filename.endswith(".zip")
    shoot(page, "exports")
    page.close()
