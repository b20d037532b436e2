"""The release path in one process: a researcher's request reaches the node, hospital IT
approves, stage 2 runs, the studies upload into quarantine, a curator accepts one and
rejects another, and the project's export holds what was accepted."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.audit import AuditRecord as HubAudit
from hub.curation import service as curation
from hub.db import transaction as hub_transaction
from hub.deps import Runtime
from hub.storage.service import LocalStorage
from hub.users.models import Project
from node.release import service as releases
from node.release.models import OutboxItem
from node.store.db import transaction
from node.store.models import AuditRecord
from tests.conftest import PATIENT_ID
from tests.unit.hub.conftest import PROJECT, bearer
from tests.unit.hub.release.conftest import Site, file_request


def released_to_hub(client: TestClient, researcher: str, site: Site, studies: int) -> int:
    uids = [site.store(study).study_uid for study in range(1, studies + 1)]
    request = file_request(client, researcher, study_uids=uids)
    assert site.receive_tasks()[0]["kind"] == "release.request"
    site.approve(request["id"])
    site.upload()
    request_id: int = request["id"]
    return request_id


def test_a_request_reaches_the_node_and_waits_for_hospital_it(
    client: TestClient, researcher: str, site: Site
) -> None:
    uid = site.store(1).study_uid
    request = file_request(client, researcher, study_uids=[uid])
    assert request["targets"][0]["state"] == "requested"
    site.receive_tasks()
    with transaction(site.sessions) as session:
        pending = releases.listing(session=session)
        assert [(r.hub_request_id, r.state) for r in pending] == [(request["id"], "requested")]


def test_an_approved_request_lands_in_quarantine_awaiting_a_curator(
    client: TestClient, researcher: str, curator: str, site: Site
) -> None:
    request_id = released_to_hub(client, researcher, site, studies=2)
    queue = client.get("/api/v1/curation", headers=bearer(curator)).json()
    assert len(queue) == 2
    assert {study["request_id"] for study in queue} == {request_id}
    shown = client.get(f"/api/v1/curation/{queue[0]['id']}", headers=bearer(curator)).json()
    assert shown["summary"]["modalities"] == ["CT"]
    assert shown["report"]["leak_check"] == "passed"
    assert shown["scan_findings"] == []
    state = client.get(f"/api/v1/requests/{request_id}", headers=bearer(researcher)).json()
    assert state["targets"][0]["state"] == "released"
    assert state["targets"][0]["studies"] == 2


def test_a_decline_and_its_reason_reach_the_hub_and_both_audit_logs(
    client: TestClient, researcher: str, runtime: Runtime, site: Site
) -> None:
    request = file_request(client, researcher, study_uids=[site.store(1).study_uid])
    site.receive_tasks()
    site.decline(request["id"], "ethics approval expired")
    site.upload()
    state = client.get(f"/api/v1/requests/{request['id']}", headers=bearer(researcher)).json()
    assert state["targets"][0]["state"] == "declined"
    assert state["targets"][0]["reason"] == "ethics approval expired"
    with hub_transaction(runtime.sessions) as session:
        hub_actions = session.execute(select(HubAudit.action)).scalars().all()
    with transaction(site.sessions) as session:
        node_actions = session.execute(select(AuditRecord.action)).scalars().all()
    assert "release.declined" in hub_actions
    assert "release.declined" in node_actions


def test_a_file_that_fails_the_leak_check_is_held_at_the_node_and_never_sent(
    client: TestClient, researcher: str, curator: str, site: Site
) -> None:
    clean, spoiled = site.store(1, 1), site.store(1, 2)
    site.spoil(spoiled)
    request = file_request(client, researcher, study_uids=[clean.study_uid])
    site.receive_tasks()
    result = site.approve(request["id"])
    assert [held.sop_uid for held in result.held] == [spoiled.sop_uid]
    assert "Manufacturer" in result.held[0].reason
    site.upload()
    queue = client.get("/api/v1/curation", headers=bearer(curator)).json()
    assert [study["files"] for study in queue] == [1]
    state = client.get(f"/api/v1/requests/{request['id']}", headers=bearer(researcher)).json()
    assert state["targets"][0]["held"] == 1


def test_accepted_studies_are_exported_one_zip_each_with_manifest_and_readme(
    client: TestClient, researcher: str, curator: str, site: Site, tmp_path: Path
) -> None:
    released_to_hub(client, researcher, site, studies=2)
    for study in client.get("/api/v1/curation", headers=bearer(curator)).json():
        accepted = client.post(f"/api/v1/curation/{study['id']}/accept", headers=bearer(curator))
        assert accepted.json()["state"] == "accepted"
    export = client.get(f"/api/v1/exports/{PROJECT}", headers=bearer(researcher)).json()
    assert len(export["studies"]) == 2
    first = export["studies"][0]
    accepted = client.get(
        "/api/v1/curation", params={"state": "accepted"}, headers=bearer(curator)
    ).json()
    [study_id] = [s["id"] for s in accepted if s["study_uid"] == first["study_uid"]]
    download = client.get(
        f"/api/v1/exports/{PROJECT}/studies/{study_id}.zip", headers=bearer(researcher)
    )
    names = zipfile.ZipFile(io.BytesIO(download.content)).namelist()
    assert "manifest.json" in names
    assert all(name.startswith(first["subject_key"]) for name in names if name.endswith(".dcm"))
    readme = client.get(f"/api/v1/exports/{PROJECT}/README.md", headers=bearer(researcher)).text
    assert "anonymize" in readme
    assert PATIENT_ID not in readme


def test_the_export_command_writes_zips_a_manifest_and_a_readme(
    client: TestClient, researcher: str, curator: str, runtime: Runtime, site: Site, tmp_path: Path
) -> None:
    released_to_hub(client, researcher, site, studies=1)
    study = client.get("/api/v1/curation", headers=bearer(curator)).json()[0]
    client.post(f"/api/v1/curation/{study['id']}/accept", headers=bearer(curator))
    storage = LocalStorage(runtime.settings.storage_root)
    with hub_transaction(runtime.sessions) as session:
        project = session.execute(select(Project).where(Project.name == PROJECT)).scalar_one()
        written = curation.export(
            session=session, storage=storage, project=project, folder=tmp_path / "out"
        )
    assert [path.name for path in written] == [f"{study['subject_key']}_{study['study_uid']}.zip"]
    assert (tmp_path / "out" / "README.md").is_file()
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_a_rejection_goes_back_to_the_node_with_its_reason(
    client: TestClient, researcher: str, curator: str, site: Site
) -> None:
    released_to_hub(client, researcher, site, studies=1)
    study = client.get("/api/v1/curation", headers=bearer(curator)).json()[0]
    rejected = client.post(
        f"/api/v1/curation/{study['id']}/reject",
        json={"reason": "wrong body part"},
        headers=bearer(curator),
    )
    assert rejected.json()["state"] == "rejected"
    assert [task["kind"] for task in site.receive_tasks()] == ["release.rejected"]
    with transaction(site.sessions) as session:
        found = releases.rejections(session=session)
        assert [(r.study_uid, r.reason) for r in found] == [(study["study_uid"], "wrong body part")]


def test_sending_again_resends_no_chunk_and_makes_no_duplicate(
    client: TestClient, researcher: str, curator: str, site: Site
) -> None:
    released_to_hub(client, researcher, site, studies=1)
    with transaction(site.sessions) as session:
        item = session.execute(select(OutboxItem).where(OutboxItem.kind == "study")).scalar_one()
        first_sent = item.chunks_sent
        item.state = "queued"  # as if the node had not seen the hub's answer
    site.upload()
    with transaction(site.sessions) as session:
        item = session.execute(select(OutboxItem).where(OutboxItem.kind == "study")).scalar_one()
        assert item.chunks_sent == first_sent
        assert item.state == "sent"
    assert len(client.get("/api/v1/curation", headers=bearer(curator)).json()) == 1


def test_releasing_accepted_data_again_to_the_project_makes_no_duplicate(
    client: TestClient, researcher: str, curator: str, site: Site
) -> None:
    uid = site.store(1).study_uid
    first = file_request(client, researcher, study_uids=[uid])
    site.receive_tasks()
    site.approve(first["id"])
    site.upload()
    [study] = client.get("/api/v1/curation", headers=bearer(curator)).json()
    client.post(f"/api/v1/curation/{study['id']}/accept", headers=bearer(curator))

    again = file_request(client, researcher, study_uids=[uid])
    site.receive_tasks()
    site.approve(again["id"])
    site.upload()
    state = client.get(f"/api/v1/requests/{again['id']}", headers=bearer(researcher)).json()
    assert state["targets"][0]["state"] == "released"
    received = client.get("/api/v1/curation", params={"state": "accepted"}, headers=bearer(curator))
    assert [s["id"] for s in received.json()] == [study["id"]]
