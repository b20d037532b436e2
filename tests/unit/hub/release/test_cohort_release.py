"""A researcher requests a cohort (the federated query's definition), not UIDs: the node
resolves it, releases the matching study and the patient's clinical records, the hub
validates and scans both, and the export holds both. Released again to the project, nothing
is sent twice and nothing is queued twice; released to another project, everything differs."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.deps import Runtime
from hub.users.models import Role
from node.release.models import OutboxItem, ReleaseRequest
from node.store.db import transaction
from tests.conftest import PATIENT_ID
from tests.unit.hub.conftest import PROJECT, add_user, bearer
from tests.unit.hub.release.conftest import Site, file_request
from tests.unit.node.clinical.conftest import IDENTIFIERS

DEMENTIA_WITH_CT = {
    "inclusion": {
        "all": [
            {"kind": "condition", "concept": "ICD10CM:F03.90"},
            {"kind": "imaging", "modality": ["CT"]},
        ]
    }
}


def hospital(site: Site) -> None:
    """The dementia patient's CT and records, and another patient's CT."""
    site.store(1, patient_id=PATIENT_ID)
    site.store(2)
    site.import_records()


def release_cohort(
    client: TestClient, researcher: str, site: Site, project: str = PROJECT
) -> dict[str, Any]:
    request = file_request(client, researcher, project, cohort=DEMENTIA_WITH_CT)
    site.receive_tasks()
    site.approve(request["id"])
    site.upload()
    return request


def queue(client: TestClient, curator: str, state: str = "awaiting_review") -> list[Any]:
    found: list[Any] = client.get(
        "/api/v1/curation", params={"state": state}, headers=bearer(curator)
    ).json()
    return found


def chunks_sent(site: Site, hub_request_id: int) -> int:
    with transaction(site.sessions) as session:
        total = session.execute(
            select(func.sum(OutboxItem.chunks_sent))
            .join(ReleaseRequest, OutboxItem.request_id == ReleaseRequest.id)
            .where(ReleaseRequest.hub_request_id == hub_request_id)
        ).scalar_one()
    return int(total or 0)


def test_a_selection_naming_nothing_is_refused(client: TestClient, researcher: str) -> None:
    response = client.post(
        "/api/v1/requests", json={"project": PROJECT, "selection": {}}, headers=bearer(researcher)
    )
    assert response.status_code == 422
    assert "give a cohort, study_uids or subject_keys" in response.text


def test_a_cohort_request_releases_its_matching_study_and_the_patients_records(
    client: TestClient, researcher: str, curator: str, site: Site
) -> None:
    hospital(site)
    request = release_cohort(client, researcher, site)
    state = client.get(f"/api/v1/requests/{request['id']}", headers=bearer(researcher)).json()
    assert state["targets"][0]["state"] == "released"
    received = sorted(queue(client, curator), key=lambda s: s["files"])
    assert [(s["files"], s["records"]) for s in received] == [(0, 2), (1, 0)]
    assert received[0]["subject_key"] == received[1]["subject_key"]
    records = client.get(f"/api/v1/curation/{received[0]['id']}", headers=bearer(curator)).json()
    assert records["scan_findings"] == []
    assert records["summary"]["records"]["Condition"] >= 1
    assert records["summary"]["records"]["person"] == 1


def test_accepted_records_are_exported_with_the_same_subject_key_and_no_identifier(
    client: TestClient, researcher: str, curator: str, site: Site
) -> None:
    hospital(site)
    release_cohort(client, researcher, site)
    for study in queue(client, curator):
        client.post(f"/api/v1/curation/{study['id']}/accept", headers=bearer(curator))
    [records] = [s for s in queue(client, curator, "accepted") if s["records"]]
    download = client.get(
        f"/api/v1/exports/{PROJECT}/studies/{records['id']}.zip", headers=bearer(researcher)
    )
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    subject = records["subject_key"]
    assert sorted(archive.namelist()) == [
        f"{subject}/clinical/bundle.json",
        f"{subject}/clinical/person.csv",
        "manifest.json",
    ]
    text = b"".join(archive.read(name) for name in archive.namelist()).decode()
    assert not [value for value in IDENTIFIERS if value in text]
    export = client.get(f"/api/v1/exports/{PROJECT}", headers=bearer(researcher)).json()
    assert sorted(s["records"] for s in export["studies"]) == [0, 2]


def test_the_same_cohort_released_again_sends_no_chunk_and_queues_nothing_twice(
    client: TestClient, researcher: str, curator: str, site: Site
) -> None:
    hospital(site)
    first = release_cohort(client, researcher, site)
    before = queue(client, curator)
    client.post(f"/api/v1/curation/{before[0]['id']}/accept", headers=bearer(curator))

    again = release_cohort(client, researcher, site)
    assert chunks_sent(site, first["id"]) > 0
    assert chunks_sent(site, again["id"]) == 0
    state = client.get(f"/api/v1/requests/{again['id']}", headers=bearer(researcher)).json()
    assert state["targets"][0]["state"] == "released"
    after = queue(client, curator) + queue(client, curator, "accepted")
    assert sorted(s["id"] for s in after) == sorted(s["id"] for s in before)


def test_another_project_receives_the_cohort_under_other_keys_and_uids(
    client: TestClient, researcher: str, curator: str, runtime: Runtime, site: Site
) -> None:
    hospital(site)
    release_cohort(client, researcher, site)
    other = add_user(runtime, "bo", Role.RESEARCHER, "stroke")
    release_cohort(client, other, site, project="stroke")
    received = queue(client, curator)
    by_project = {
        project: {(s["subject_key"], s["study_uid"]) for s in received if s["project"] == project}
        for project in (PROJECT, "stroke")
    }
    assert len(by_project[PROJECT]) == len(by_project["stroke"]) == 2
    keys = [{key for key, _ in pairs} for pairs in by_project.values()]
    uids = [{uid for _, uid in pairs} for pairs in by_project.values()]
    assert keys[0].isdisjoint(keys[1])
    assert uids[0].isdisjoint(uids[1])
