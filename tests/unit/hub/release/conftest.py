"""A hub in process and a node beside it — its own store of stage-1 instances, its key and
its upload worker talking to the hub through the test client — for the release path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.channel import TaskRead
from hub.deps import Runtime
from hub.users.models import Role
from node.clinical import service as clinical
from node.clinical.service import ImportContext
from node.federation import enrollment as enrollments
from node.federation import keys
from node.federation.client import SigningAuth
from node.federation.handlers import HandlerContext, registry
from node.release import service as releases
from node.release import workflow
from node.release.stage2 import Stage2Result
from node.release.upload import Uploader
from node.settings import NodeSettings
from node.store import correspondence
from node.store.correspondence import Keyring, new_key, parse_key
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from tests.conftest import SECRET, ct_dataset
from tests.unit.hub.conftest import PROJECT, SigningNode, add_user, bearer, enroll
from tests.unit.node.clinical.conftest import hospital_bundle
from tests.unit.node.test_qa import store_instance


class _InProcess(httpx.BaseTransport):
    """The node's signing httpx client, carried to the in-process hub by its test client."""

    def __init__(self, hub: TestClient) -> None:
        self.hub = hub

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.hub.request(
            request.method,
            request.url.raw_path.decode("ascii"),
            content=request.read(),
            headers=dict(request.headers),
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


@dataclass(frozen=True)
class Stored:
    """A stage-1 instance in the node's store (pseudonyms and a path)."""

    sop_uid: str
    study_uid: str
    path: str


@dataclass
class Site:
    """A node: settings, store, enrollment and the hub it talks to."""

    settings: NodeSettings
    sessions: sessionmaker[Session]
    signer: SigningNode
    hub: TestClient

    def store(self, study: int, instance: int = 1, patient_id: str = "") -> Stored:
        """A stage-1 CT; one patient per study (the store helper adds no second study)."""
        ds = ct_dataset(
            patient_id=patient_id or f"MRN9981726{study}",
            study_uid=f"1.2.826.0.1.3680043.10.1.{study}",
            series_uid=f"1.2.826.0.1.3680043.10.1.{study}.1",
            sop_uid=f"1.2.826.0.1.3680043.10.1.{study}.1.{instance}",
        )
        ds.InstanceNumber = instance
        with transaction(self.sessions) as session:
            stored = store_instance(session, self.settings.data_dir, ds)
            session.flush()
            return Stored(stored.sop_uid, stored.series.study.study_uid, stored.path)

    def import_records(self) -> None:
        """The hospital's FHIR Bundle of PATIENT_ID (a dementia diagnosis, a lab value),
        imported at stage 1 as the node's clinical import does."""
        context = ImportContext(
            rules=clinical.build_rules("pseudonymize", "site", SECRET),
            keyring=Keyring(current=parse_key(new_key())),
            actor="test",
        )
        with transaction(self.sessions) as session:
            clinical.import_fhir_bundle(session=session, context=context, bundle=hospital_bundle())

    def spoil(self, instance: Stored) -> None:
        """Make a stored file carry its stage-1 subject key where stage 2 keeps the text."""
        path = self.settings.data_dir / instance.path
        ds = pydicom.dcmread(path)
        ds.Manufacturer = f"ACME for {ds.PatientID}"
        ds.save_as(path, enforce_file_format=True)

    def receive_tasks(self) -> list[dict[str, Any]]:
        """Poll once and run each task's handler, as the agent would; answer the hub."""
        tasks = self.signer.poll()
        context = HandlerContext(self.settings, self.sessions)
        for task in tasks:
            handler = registry.get(task["kind"])
            assert handler is not None, task["kind"]
            payload = handler(TaskRead.model_validate(task), context)
            answer = self.signer.answer(task["id"], {"status": "answered", "payload": payload})
            assert answer.status_code == 200, answer.text
        return tasks

    def approve(self, request_id: int) -> Stage2Result:
        return workflow.approve_and_release(self.sessions, self.settings, request_id, "it-admin")

    def decline(self, request_id: int, reason: str) -> None:
        with transaction(self.sessions) as session:
            releases.decline(
                session=session, hub_request_id=request_id, reason=reason, actor="it-admin"
            )

    def uploader(self) -> Uploader:
        def make_client() -> httpx.Client:
            return httpx.Client(
                base_url="http://testserver",
                auth=SigningAuth(self.signer.node_id, self.signer.key),
                transport=_InProcess(self.hub),
            )

        return Uploader(self.settings, self.sessions, make_client)

    def upload(self) -> int:
        """Send the outbox until nothing is due (a sent study may queue "released")."""
        uploader = self.uploader()
        total = 0
        with uploader.make_client() as channel:
            while sent := uploader.send_due(channel):
                total += sent
        return total


@pytest.fixture
def site(client: TestClient, runtime: Runtime, tmp_path: Path) -> Iterator[Site]:
    signer = enroll(client, runtime, "st-elsewhere")
    settings = NodeSettings(
        data_dir=tmp_path / "node",
        site_secret=SECRET.decode(),  # type: ignore[arg-type]
        correspondence_key=correspondence.new_key(),  # type: ignore[arg-type]
        release_chunk_bytes=4096,
    )
    settings.data_dir.mkdir(parents=True)
    enrollments.save(
        settings.data_dir,
        enrollments.Enrollment(hub_url="http://testserver", node_id=signer.node_id, name="st"),
    )
    keys.write_private_key(keys.key_path(settings.data_dir), signer.key)
    migrate(settings.database)
    engine = make_engine(settings.database)
    yield Site(settings, make_sessionmaker(engine), signer, client)
    engine.dispose()


@pytest.fixture
def curator(runtime: Runtime) -> str:
    return add_user(runtime, "cora", Role.CURATOR)


def file_request(
    client: TestClient, token: str, project: str = PROJECT, **selection: Any
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/requests",
        json={"project": project, "selection": selection},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
