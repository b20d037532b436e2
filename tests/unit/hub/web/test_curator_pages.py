"""The curator's pages in process, on studies a node in the same process released into
quarantine: the queue, a study with a thumbnail per series, the frame viewer in Instance
Number order, the report beside the PHI scan, accept and reject with a reason — and the
researcher's exports of what was accepted."""

from __future__ import annotations

import io
import zipfile

import pydicom
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from hub.curation import preview
from hub.curation import service as curation
from hub.db import transaction as hub_transaction
from hub.deps import Runtime
from hub.storage.service import LocalStorage
from node.store.db import transaction
from node.store.models import Instance, Patient, Series, Study
from tests.conftest import PATIENT_ID, PATIENT_NAME
from tests.unit.hub.conftest import PROJECT, bearer
from tests.unit.hub.release.conftest import Site
from tests.unit.hub.web.test_pages import log_in


def test_the_queue_lists_studies_awaiting_review_for_curators_only(
    client: TestClient, curator: str, researcher: str, two_studies: list[int]
) -> None:
    log_in(client, researcher)
    assert client.get("/ui/curation").status_code == 403
    client.cookies.clear()
    log_in(client, curator)
    page = client.get("/ui/curation").text
    for study_id in two_studies:
        assert f'href="/ui/curation/{study_id}"' in page
    assert "2 awaiting review" in page


def test_a_study_shows_a_thumbnail_of_every_series_and_the_report_beside_the_scan(
    client: TestClient, curator: str, two_studies: list[int]
) -> None:
    log_in(client, curator)
    page = client.get(f"/ui/curation/{two_studies[0]}").text
    thumbnails = [
        line.split('src="')[1].split('"')[0].replace("&amp;", "&")
        for line in page.splitlines()
        if "/frames/" in line and "<img" in line
    ]
    assert len(thumbnails) == 2
    assert "Series 1 · CT · 3 frames" in page and "Series 2 · CT · 1 frame" in page
    for src in thumbnails:
        image = client.get(src)
        assert image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (32, 32)
    assert "De-identification report (the node's)" in page
    assert "leak check</dt><dd>passed" in page
    assert "PHI scan (the hub's)" in page and "No finding" in page
    for identifier in (
        PATIENT_ID,
        PATIENT_NAME,
        PATIENT_NAME.split("^")[0],
        "1.2.826.0.1.3680043.10.5",
    ):
        assert identifier not in page


def test_the_viewer_steps_through_a_series_in_instance_number_order(
    client: TestClient, runtime: Runtime, curator: str, two_studies: list[int]
) -> None:
    log_in(client, curator)
    viewer = client.get(f"/ui/curation/{two_studies[0]}/series/1", params={"frame": 2}).text
    assert 'type="range" min="1" max="3" value="2"' in viewer
    assert 'href="?frame=1"' in viewer and 'href="?frame=3"' in viewer  # works without script
    with hub_transaction(runtime.sessions) as session:
        study = curation.require(session=session, study_id=two_studies[0])
        view = preview.series(
            storage=LocalStorage(runtime.settings.storage_root),
            project=PROJECT,
            study=study,
            number=1,
        )
    storage = LocalStorage(runtime.settings.storage_root)
    prefix = preview.files_prefix(PROJECT, study)
    ordered = [
        int(pydicom.dcmread(io.BytesIO(storage.get(f"{prefix}/{f.path}"))).InstanceNumber)
        for f in view.frames
    ]
    assert ordered == [1, 2, 3]
    assert client.get(f"/ui/curation/{two_studies[0]}/series/1/frames/4.png").status_code == 404


def test_accepting_moves_the_study_to_the_projects_exports(
    client: TestClient, curator: str, researcher: str, two_studies: list[int]
) -> None:
    log_in(client, curator)
    accepted = client.post(f"/ui/curation/{two_studies[0]}/accept", follow_redirects=False)
    assert accepted.headers["location"] == f"/ui/curation?done=accepted&study={two_studies[0]}"
    assert f"Study {two_studies[0]} accepted." in client.get(accepted.headers["location"]).text
    # Still viewable, now from the project's workspace.
    assert client.get(f"/ui/curation/{two_studies[0]}/series/2/frames/1.png").status_code == 200

    client.cookies.clear()
    log_in(client, researcher)
    exports = client.get("/ui/exports").text
    link = f"/ui/exports/{PROJECT}/studies/{two_studies[0]}.zip"
    assert link in exports
    assert f"/ui/exports/{PROJECT}/studies/{two_studies[1]}.zip" not in exports
    names = zipfile.ZipFile(io.BytesIO(client.get(link).content)).namelist()
    assert "manifest.json" in names and sum(name.endswith(".dcm") for name in names) == 4
    assert "anonymize" in client.get(f"/ui/exports/{PROJECT}/README.md").text


def test_a_rejection_needs_a_reason_and_goes_back_to_the_node(
    client: TestClient, curator: str, site: Site, two_studies: list[int]
) -> None:
    log_in(client, curator)
    study_id = two_studies[1]
    missing = client.post(f"/ui/curation/{study_id}/reject", data={"reason": "  "})
    assert "Give a reason for the rejection" in missing.text
    assert (
        client.get("/api/v1/curation/" + str(study_id), headers=bearer(curator)).json()["state"]
        == "awaiting_review"
    )

    rejected = client.post(f"/ui/curation/{study_id}/reject", data={"reason": "motion artefacts"})
    assert f"Study {study_id} rejected; its node is told why." in rejected.text
    assert [task["kind"] for task in site.receive_tasks()] == ["release.rejected"]
    shown = client.get(f"/ui/curation/{study_id}").text
    assert "rejected</span>: motion artefacts" in shown
    assert "its files were discarded" in shown
    assert "Accept into the project" not in shown


def test_no_hospital_identifier_or_stage_1_pseudonym_reaches_a_hub_page(
    client: TestClient, runtime: Runtime, admin: str, site: Site, two_studies: list[int]
) -> None:
    with transaction(site.sessions) as session:
        stage_1 = [
            *session.execute(select(Patient.subject_key)).scalars(),
            *session.execute(select(Study.study_uid)).scalars(),
            *session.execute(select(Series.series_uid)).scalars(),
            *session.execute(select(Instance.sop_uid)).scalars(),
        ]
    hospital = [PATIENT_ID, PATIENT_NAME, "PHILLIPS", "MRN7781", "1.2.826.0.1.3680043.10.5"]
    log_in(client, admin)  # an admin sees every hub page
    client.post(f"/ui/curation/{two_studies[0]}/accept")
    client.post(f"/ui/curation/{two_studies[1]}/reject", data={"reason": "motion"})
    pages = [
        "/ui/curation?state=accepted",
        "/ui/curation?state=rejected",
        f"/ui/curation/{two_studies[0]}",
        f"/ui/curation/{two_studies[0]}/series/1",
        f"/ui/curation/{two_studies[1]}",
        "/ui/requests",
        "/ui/exports",
        "/ui/queries",
        "/ui/admin/audit",
        "/ui/admin/nodes",
        f"/ui/exports/{PROJECT}/README.md",
    ]
    for path in pages:
        text = client.get(path).text
        for value in [*stage_1, *hospital]:
            assert value not in text, f"{path} shows {value}"
