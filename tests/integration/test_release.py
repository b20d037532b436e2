"""Data release across real processes on loopback: a hub and a node (`havenet hub serve`,
`havenet node serve`), a researcher's request for a cohort, hospital IT reading what it
selects and approving on the command line, stage 2, upload into quarantine, a curator's
accept and reject, the export — and a node killed mid-upload that resumes without sending
again what the hub holds.

The node's state is read from its database, not through its command line, while waiting
(each `havenet node` command costs a second or two of start-up)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import pydicom
import pytest
from sqlalchemy import func, select

from common.schemas.release import MAX_BATCH_CHUNKS
from hub.audit import AuditRecord as HubAudit
from hub.db import make_engine as hub_engine
from hub.db import make_sessionmaker as hub_sessions
from hub.db import transaction as hub_transaction
from node.release import service as releases
from node.release.models import OutboxItem
from node.settings import load
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from tests.conftest import ct_dataset
from tests.integration.hubs import Hub, NodeProcess
from tests.integration.test_federation import enroll_in_process, node_audit
from tests.unit.node.test_qa import store_instance

pytestmark = pytest.mark.slow
PROJECT = "glioma-release"
SMALL_CHUNKS = {"HAVENET_NODE_RELEASE_CHUNK_BYTES": "1024"}
UPLOAD_THREADS = 2  # the node's default release_upload_workers
CT_COHORT = {"inclusion": {"kind": "imaging", "modality": ["CT"]}}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    server = Hub(tmp_path_factory.mktemp("hub")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> dict[str, str]:
    admin = hub.cli("user", "add", "hub-admin", "--role", "admin")
    made = {"admin": admin}
    for name, role in (("ada", "researcher"), ("cora", "curator")):
        created = hub.api("POST", "/api/v1/users", admin, json={"name": name, "role": role})
        assert created.status_code == 201, created.text
        made[role] = created.json()["token"]
    assert hub.api("POST", "/api/v1/projects", admin, json={"name": PROJECT}).status_code == 201
    joined = hub.api("POST", f"/api/v1/projects/{PROJECT}/members", admin, json={"user": "ada"})
    assert joined.status_code == 201
    return made


@dataclass
class ReleasingNode(NodeProcess):
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        # No vocabularies at start: ~7 s of CPU these tests do not need.
        quiet = {"HAVENET_NODE_ONTOLOGY_AT_START": "false"}
        return {**super().env, **quiet, **self.extra_env}


def enrolled_node(hub: Hub, admin: str, folder: Path, name: str, **env: str) -> ReleasingNode:
    created = hub.api("POST", "/api/v1/nodes", admin, json={"name": name})
    assert created.status_code == 201, created.text
    node = ReleasingNode(folder / name)
    node.extra_env = env
    enroll_in_process(node, hub, created.json()["enrollment_token"])
    return node


def fill(node: NodeProcess, tag: int, studies: int, instances: int, rows: int = 16) -> list[str]:
    """Stage-1 CT files in the node's store (patients and UIDs told apart by ``tag``); the
    stage-1 study UIDs."""
    settings = load(None, data_dir=node.data_dir)
    migrate(settings.database)
    engine = make_engine(settings.database)
    uids = []
    try:
        for study in range(1, studies + 1):
            with transaction(make_sessionmaker(engine)) as session:
                for number in range(1, instances + 1):
                    ds = ct_dataset(
                        patient_id=f"MRN{tag}{study:04d}",
                        study_uid=f"1.2.826.0.1.3680043.10.{tag}.{study}",
                        series_uid=f"1.2.826.0.1.3680043.10.{tag}.{study}.1",
                        sop_uid=f"1.2.826.0.1.3680043.10.{tag}.{study}.1.{number}",
                        rows=rows,
                    )
                    # Noise, so that chunks differ (equal chunks are sent once).
                    noise = numpy.random.default_rng(tag * 1000 + study * 100 + number)
                    ds.PixelData = noise.integers(0, 4096, rows * rows, numpy.uint16).tobytes()
                    stored = store_instance(session, settings.data_dir, ds)
                uids.append(stored.series.study.study_uid)
    finally:
        engine.dispose()
    return uids


def spoil_one(node: NodeProcess, study_uid_index: int = 0) -> None:
    """The store's first file carries its subject key where stage 2 keeps text."""
    path = sorted((node.data_dir / "store").rglob("*.dcm"))[study_uid_index]
    ds = pydicom.dcmread(path)
    ds.Manufacturer = f"ACME for {ds.PatientID}"
    ds.save_as(path, enforce_file_format=True)


def request_release(hub: Hub, researcher: str, node_name: str, selection: dict[str, Any]) -> int:
    body = {"project": PROJECT, "selection": selection, "nodes": [node_name]}
    created = hub.api("POST", "/api/v1/requests", researcher, json=body)
    assert created.status_code == 201, created.text
    request_id: int = created.json()["id"]
    return request_id


def eventually(check: Callable[[], Any], node: NodeProcess, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s:\n{node.log()}")
        time.sleep(0.1)


def node_requests(node: NodeProcess) -> list[dict[str, Any]]:
    """The node's requests as `havenet node requests list --json` shows them."""
    engine = make_engine(load(None, data_dir=node.data_dir).database)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            found = releases.listing(session=session)
            return [releases.read(r).model_dump(mode="json") for r in found]
    finally:
        engine.dispose()


def hub_state(hub: Hub, token: str, request_id: int) -> str:
    state: str = hub.api("GET", f"/api/v1/requests/{request_id}", token).json()["targets"][0][
        "state"
    ]
    return state


def test_a_cohort_request_is_approved_released_curated_and_exported(
    hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    node = enrolled_node(hub, tokens["admin"], tmp_path, "st-anne")
    fill(node, 71, studies=2, instances=2)
    spoil_one(node)
    node.start()
    try:
        request_id = request_release(hub, tokens["researcher"], "st-anne", {"cohort": CT_COHORT})
        eventually(lambda: node_requests(node), node)
        shown = json.loads(node.cli("requests", "show", str(request_id)).stdout)
        assert shown["selects"]["patients"] == shown["selects"]["studies"] == 2
        assert shown["selects"]["instances"] == 4
        approval = node.cli("requests", "approve", str(request_id)).stdout
        assert "2 studies (3 files)" in approval
        eventually(lambda: hub_state(hub, tokens["researcher"], request_id) == "released", node)
        [held] = node_requests(node)[0]["held"]
        assert "leak check" in held["reason"]

        queue = hub.api("GET", "/api/v1/curation", tokens["curator"]).json()
        assert sorted(study["files"] for study in queue) == [1, 2]  # one file held back
        keep, drop = queue
        accepted = hub.api("POST", f"/api/v1/curation/{keep['id']}/accept", tokens["curator"])
        assert accepted.status_code == 200, accepted.text
        hub.cli("curate", "reject", str(drop["id"]), "--reason", "motion artefacts")
        rejections = eventually(lambda: rejections_at(node), node)
        assert "motion artefacts" in rejections

        hub.cli("export", PROJECT, str(tmp_path / "export"))
        zips = sorted(path.name for path in (tmp_path / "export").glob("*.zip"))
        assert zips == [f"{keep['subject_key']}_{keep['study_uid']}.zip"]
        assert "anonymize" in (tmp_path / "export" / "README.md").read_text()

        assert "release.approved" in {record.action for record in node_audit(node)}
        assert "release.approved" in hub_actions(hub, f"data request {request_id}")
    finally:
        node.stop()


def test_a_node_killed_mid_upload_resumes_without_resending_what_the_hub_holds(
    hub: Hub, tokens: dict[str, str], tmp_path: Path
) -> None:
    node = enrolled_node(hub, tokens["admin"], tmp_path, "st-kill", **SMALL_CHUNKS)
    uids = fill(node, 72, studies=1, instances=4, rows=128)  # ~33 chunks a file
    chunks = hub.folder / "storage" / "chunks"
    before = held_chunks(chunks)
    node.start()
    try:
        request_id = request_release(hub, tokens["researcher"], "st-kill", {"study_uids": uids})
        eventually(lambda: node_requests(node), node)
        node.cli("requests", "approve", str(request_id))
        kill_once_chunks_arrive(node, chunks, before + 20)
        at_kill = held_chunks(chunks) - before
        assert hub_state(hub, tokens["researcher"], request_id) != "released"

        node.start()
        eventually(lambda: hub_state(hub, tokens["researcher"], request_id) == "released", node)
        total = held_chunks(chunks) - before
        sent = chunks_sent(node)
        assert at_kill < total
        # Every chunk the hub holds was sent once; chunks whose count was lost with the
        # killed process (a batch per upload thread) are the only ones missing from the tally.
        assert total - UPLOAD_THREADS * MAX_BATCH_CHUNKS <= sent <= total
    finally:
        node.stop()


def kill_once_chunks_arrive(node: NodeProcess, folder: Path, count: int) -> None:
    """SIGKILL the node as soon as the hub holds ``count`` chunks: no clean stop, only the
    outbox in the node's database survives."""
    deadline = time.monotonic() + 30
    while held_chunks(folder) < count:
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.005)
    assert node.process is not None
    node.process.kill()
    node.process.wait()


def rejections_at(node: NodeProcess) -> str:
    engine = make_engine(load(None, data_dir=node.data_dir).database)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return "\n".join(r.reason for r in releases.rejections(session=session))
    finally:
        engine.dispose()


def held_chunks(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))


def chunks_sent(node: NodeProcess) -> int:
    engine = make_engine(load(None, data_dir=node.data_dir).database)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return int(session.execute(select(func.sum(OutboxItem.chunks_sent))).scalar_one())
    finally:
        engine.dispose()


def hub_actions(hub: Hub, subject: str) -> set[str]:
    engine = hub_engine(f"sqlite:///{hub.folder / 'hub.db'}")
    try:
        with hub_transaction(hub_sessions(engine)) as session:
            rows = session.execute(select(HubAudit.action).where(HubAudit.subject == subject))
            return set(rows.scalars())
    finally:
        engine.dispose()
