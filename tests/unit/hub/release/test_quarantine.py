"""The hub verifies every upload before a curator sees it: the node's signature, each
chunk's hash, each file rebuilt from its chunks; its own PHI scan reports what it finds."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from common import signing
from common.schemas.channel import API_PREFIX
from common.schemas.release import MAX_BATCH_CHUNKS, StudyManifest, canonical_manifest
from hub.curation.scan import scan
from node.release import service as releases
from node.release import workflow
from node.release.exceptions import NothingToRetry
from node.release.models import OutboxItem
from node.store.db import transaction
from node.store.models import AuditRecord
from tests.unit.hub.conftest import PROJECT, bearer
from tests.unit.hub.release.conftest import Site, file_request

SUBJECT = "SUBJAAAAAAAA"
TODAY = dt.date(2026, 11, 28)


def approved_manifest(client: TestClient, researcher: str, site: Site) -> StudyManifest:
    """A study through stage 2 at the node, its manifest not yet sent."""
    request = file_request(client, researcher, study_uids=[site.store(1).study_uid])
    site.receive_tasks()
    site.approve(request["id"])
    with transaction(site.sessions) as session:
        for key in ("state:approved", "state:releasing"):
            item = session.query(OutboxItem).filter_by(key=key).one()
            site.signer.request("POST", f"{API_PREFIX}/releases/{request['id']}/state", item.body)
        study = session.query(OutboxItem).filter_by(kind="study").one()
        return releases.manifest_of(study)


def send_chunks(site: Site, manifest: StudyManifest) -> None:
    root = site.settings.data_dir / "release" / PROJECT
    for entry in manifest.files:
        data = (root / entry.path).read_bytes()
        for index, sha in enumerate(entry.chunks):
            block = data[index * 4096 : (index + 1) * 4096]
            put = site.signer.client.put(
                f"{API_PREFIX}/chunks/{sha}", content=block, headers=signed(site, sha, block)
            )
            assert put.status_code == 200, put.text


def signed(site: Site, sha: str, block: bytes) -> dict[str, str]:
    return signing.sign_request(
        site.signer.key,
        node_id=site.signer.node_id,
        method="PUT",
        target=f"{API_PREFIX}/chunks/{sha}",
        body=block,
    ).as_dict()


def post_manifest(site: Site, manifest: StudyManifest, key: Any = None) -> Any:
    signature = (key or site.signer.key).sign(canonical_manifest(manifest))
    body = {
        "manifest": manifest.model_dump(mode="json"),
        "signature": base64.b64encode(signature).decode(),
    }
    return site.signer.request("POST", f"{API_PREFIX}/releases/manifests", body)


def test_a_manifest_signed_by_another_key_is_refused(
    client: TestClient, researcher: str, site: Site
) -> None:
    manifest = approved_manifest(client, researcher, site)
    send_chunks(site, manifest)
    refused = post_manifest(site, manifest, key=signing.generate_private_key())
    assert refused.status_code == 422
    assert "signature" in refused.json()["detail"]


def test_a_chunk_whose_bytes_do_not_match_its_name_is_refused(site: Site) -> None:
    name = hashlib.sha256(b"what the node meant").hexdigest()
    refused = site.signer.client.put(
        f"{API_PREFIX}/chunks/{name}",
        content=b"something else",
        headers=signed(site, name, b"something else"),
    )
    assert refused.status_code == 422


def test_a_manifest_whose_chunks_are_not_all_uploaded_is_refused_naming_the_file(
    client: TestClient, researcher: str, site: Site
) -> None:
    manifest = approved_manifest(client, researcher, site)
    refused = post_manifest(site, manifest)
    assert refused.status_code == 422
    assert manifest.files[0].path in refused.json()["detail"]


def test_a_file_that_differs_from_its_manifest_is_refused(
    client: TestClient, researcher: str, site: Site
) -> None:
    manifest = approved_manifest(client, researcher, site)
    send_chunks(site, manifest)
    tampered = manifest.model_copy(deep=True)
    tampered.files[0].size += 1
    refused = post_manifest(site, tampered)
    assert refused.status_code == 422
    assert "SHA-256" in refused.json()["detail"]


def test_the_hub_tells_which_chunks_it_holds(
    client: TestClient, researcher: str, site: Site
) -> None:
    manifest = approved_manifest(client, researcher, site)
    wanted = manifest.files[0].chunks
    before = site.signer.request("POST", f"{API_PREFIX}/chunks/held", {"hashes": wanted})
    assert before.json()["held"] == []
    send_chunks(site, manifest)
    after = site.signer.request("POST", f"{API_PREFIX}/chunks/held", {"hashes": wanted})
    assert sorted(after.json()["held"]) == sorted(set(wanted))


def test_a_node_cannot_upload_for_a_request_it_was_not_sent(
    client: TestClient, researcher: str, site: Site
) -> None:
    manifest = approved_manifest(client, researcher, site)
    send_chunks(site, manifest)
    other = manifest.model_copy(update={"request_id": manifest.request_id + 100})
    assert post_manifest(site, other).status_code == 403


def test_a_researcher_may_not_curate(client: TestClient, researcher: str) -> None:
    assert client.get("/api/v1/curation", headers=bearer(researcher)).status_code == 403


def clean_instance() -> Dataset:
    ds = Dataset()
    ds.PatientName = SUBJECT
    ds.PatientID = SUBJECT
    ds.StudyDate = "20220101"
    ds.StudyDescription = "CT HEAD"
    return ds


def test_the_scan_finds_nothing_in_a_clean_instance() -> None:
    assert scan(clean_instance(), path="a.dcm", subject_key=SUBJECT, latest_date=TODAY) == []


def test_the_scan_names_the_attribute_of_each_finding_never_the_value() -> None:
    ds = clean_instance()
    ds.PatientID = "MRN99817263"
    ds.PatientBirthDate = "19470312"
    ds.StudyDate = "20261201"  # after the latest date a shifted date can take
    ds.ImageComments = "call +44 20 7946 0958 or jo@example.org"
    findings = scan(ds, path="a.dcm", subject_key=SUBJECT, latest_date=TODAY)
    assert findings == [
        "a.dcm: PatientID is not the project's subject key",
        "a.dcm: PatientBirthDate is not empty",
        "a.dcm: StudyDate is a date outside the shifted range",
        "a.dcm: ImageComments holds what looks like an e-mail address",
        "a.dcm: ImageComments holds what looks like a telephone number",
    ]
    for value in ("MRN99817263", "19470312", "7946", "example.org"):
        assert all(value not in finding for finding in findings)


def test_a_released_file_changed_before_upload_fails_its_study_naming_the_file(
    client: TestClient, researcher: str, site: Site
) -> None:
    manifest = approved_manifest(client, researcher, site)
    [entry] = manifest.files
    released = site.settings.data_dir / "release" / PROJECT / entry.path
    released.write_bytes(released.read_bytes()[:-1] + b"X")
    site.upload()
    with transaction(site.sessions) as session:
        study = session.query(OutboxItem).filter_by(kind="study").one()
        assert (study.state, study.chunks_sent) == ("failed", 0)
        assert study.last_error == f"{entry.path}: the file changed since stage 2"


def post_batch(site: Site, blocks: list[bytes], names: list[str] | None = None) -> httpx.Response:
    """Chunks in one signed request, as the node's upload worker sends them."""
    names = names or [hashlib.sha256(block).hexdigest() for block in blocks]
    parts = [f"{name}:{len(block)}" for name, block in zip(names, blocks, strict=True)]
    with site.uploader().make_client() as channel:
        return channel.post(
            f"{API_PREFIX}/chunks", params={"part": parts}, content=b"".join(blocks)
        )


def held(site: Site, blocks: list[bytes]) -> list[str]:
    hashes = [hashlib.sha256(block).hexdigest() for block in blocks]
    answer = site.signer.request("POST", f"{API_PREFIX}/chunks/held", {"hashes": hashes})
    found: list[str] = answer.json()["held"]
    return found


def test_a_batch_of_chunks_is_stored_each_under_its_name_and_only_once(site: Site) -> None:
    blocks = [b"first chunk", b"second chunk", bytes(range(256)) * 2048]  # the last one big
    assert post_batch(site, blocks).json() == {"stored": 3}
    assert len(held(site, blocks)) == 3
    assert post_batch(site, blocks).json() == {"stored": 0}


def test_a_batch_with_a_chunk_that_does_not_match_its_name_stores_none_of_it(site: Site) -> None:
    blocks = [b"as meant", b"as sent"]
    names = [hashlib.sha256(b"as meant").hexdigest(), hashlib.sha256(b"as meant?").hexdigest()]
    refused = post_batch(site, blocks, names)
    assert refused.status_code == 422
    assert names[1] in refused.json()["detail"]
    assert held(site, blocks) == []


def test_a_batch_whose_parts_do_not_add_up_to_its_body_is_refused(site: Site) -> None:
    name = hashlib.sha256(b"abc").hexdigest()
    with site.uploader().make_client() as channel:
        short = channel.post(f"{API_PREFIX}/chunks", params={"part": f"{name}:2"}, content=b"abc")
        many = channel.post(
            f"{API_PREFIX}/chunks",
            params={"part": [f"{name}:0"] * (MAX_BATCH_CHUNKS + 1)},
            content=b"",
        )
        garbled = channel.post(f"{API_PREFIX}/chunks", params={"part": "abc:3"}, content=b"abc")
    assert short.status_code == 422 and "add up" in short.json()["detail"]
    assert many.status_code == 422 and f"1 to {MAX_BATCH_CHUNKS}" in many.json()["detail"]
    assert garbled.status_code == 422 and "part 0" in garbled.json()["detail"]


def test_a_study_of_small_files_goes_in_one_request_and_every_chunk_is_counted(
    client: TestClient, researcher: str, site: Site
) -> None:
    uid = site.store(1, 1).study_uid
    site.store(1, 2)
    site.store(1, 3)
    request = file_request(client, researcher, study_uids=[uid])
    site.receive_tasks()
    site.approve(request["id"])
    paths: list[str] = []
    uploader = site.uploader()
    with uploader.make_client() as channel:
        channel.event_hooks["request"].append(lambda sent: paths.append(sent.url.path))
        while uploader.send_due(channel):
            pass
    assert paths.count(f"{API_PREFIX}/chunks") == 1
    with transaction(site.sessions) as session:
        study = session.query(OutboxItem).filter_by(kind="study").one()
        assert (study.state, study.chunks_sent) == ("sent", 3)


def test_a_failed_release_is_retried_by_hospital_it_and_reaches_the_hub(
    client: TestClient, researcher: str, site: Site
) -> None:
    manifest = approved_manifest(client, researcher, site)
    [entry] = manifest.files
    released = site.settings.data_dir / "release" / PROJECT / entry.path
    released.write_bytes(released.read_bytes()[:-1] + b"X")
    site.upload()
    request_id = manifest.request_id
    assert hub_state(client, researcher, request_id) == "failed"
    with transaction(site.sessions) as session:
        request = releases.require(session=session, hub_request_id=request_id)
        assert request.state == "failed"
        assert request.reason == f"upload: {entry.path}: the file changed since stage 2"

    workflow.retry_and_release(site.sessions, site.settings, request_id, "it-admin")
    site.upload()
    assert hub_state(client, researcher, request_id) == "released"
    with transaction(site.sessions) as session:
        study = session.query(OutboxItem).filter_by(kind="study").one()
        assert study.state == "sent"
        retried = session.query(AuditRecord).filter_by(action="release.retried").one()
        assert retried.actor == "it-admin"
        assert json.loads(retried.details)["failed_studies"] == 1
    with pytest.raises(NothingToRetry):
        workflow.retry_and_release(site.sessions, site.settings, request_id, "it-admin")


def hub_state(client: TestClient, researcher: str, request_id: int) -> str:
    answer = client.get(f"/api/v1/requests/{request_id}", headers=bearer(researcher)).json()
    found: str = answer["targets"][0]["state"]
    return found
