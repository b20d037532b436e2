"""A real hub and real nodes (separate processes on loopback, each with its own database):
enrollment, a `node.status` task across nodes, a node that was offline, a revoked node, a
replayed request, a task past its time-to-live, key rotation — and the hub on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from common import audit, signing
from common.schemas.channel import API_PREFIX
from hub.audit import AuditRecord as HubAudit
from node.federation import enroll as enrolling
from node.federation import enrollment as enrollments
from node.federation import keys
from node.settings import load
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from node.store.models import AuditRecord, Instance, Patient, Series, Study
from ontology import loader
from tests.integration.hubs import Hub, NodeProcess, havenet
from tests.unit.node.query.conftest import Store
from tests.unit.node.query.test_handler_and_seed_comparison import DEMENTIA, OTHERS, PAYLOAD

pytestmark = pytest.mark.slow
PROJECT = "dementia-mri"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    server = Hub(tmp_path_factory.mktemp("hub")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(hub: Hub) -> str:
    return hub.cli("user", "add", "hub-admin", "--role", "admin")


@pytest.fixture(scope="module")
def researcher(hub: Hub, admin: str) -> str:
    created = hub.api("POST", "/api/v1/users", admin, json={"name": "ada", "role": "researcher"})
    assert created.status_code == 201, created.text
    assert hub.api("POST", "/api/v1/projects", admin, json={"name": PROJECT}).status_code == 201
    member = hub.api("POST", f"/api/v1/projects/{PROJECT}/members", admin, json={"user": "ada"})
    assert member.status_code == 201
    token: str = created.json()["token"]
    return token


NodeFactory = Callable[..., NodeProcess]


@pytest.fixture
def enrolled(hub: Hub, admin: str, tmp_path: Path) -> Iterator[NodeFactory]:
    """Nodes created at the hub and enrolled (not started); all stopped after the test."""
    made: list[NodeProcess] = []

    def make(*, with_cli: bool = False) -> NodeProcess:
        name = f"hospital-{next(_names)}-{tmp_path.name[-6:]}"
        created = hub.api("POST", "/api/v1/nodes", admin, json={"name": name})
        assert created.status_code == 201, created.text
        token = created.json()["enrollment_token"]
        node = NodeProcess(tmp_path / name)
        made.append(node)
        if with_cli:
            node.enroll(hub, token)
        else:
            enroll_in_process(node, hub, token)
        return node

    try:
        yield make
    finally:
        for node in made:
            node.stop()


def enroll_in_process(node: NodeProcess, hub: Hub, token: str) -> None:
    settings = load(None, data_dir=node.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        enrolling.enroll(
            settings=settings,
            sessions=make_sessionmaker(engine),
            hub_url=hub.url,
            token=token,
            actor="test",
        )
    finally:
        engine.dispose()


def fill_store(data_dir: Path, *, studies: int, series_per_study: int, instances: int) -> None:
    """Rows in the node's store as stage 1 leaves them (pseudonyms only)."""
    settings = load(None, data_dir=data_dir)
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            for s in range(studies):
                patient = Patient(subject_key=f"SK{s:04d}", sex="F", birth_year=1950)
                study = Study(study_uid=f"2.25.1{s}", patient=patient)
                for r in range(series_per_study):
                    series = Series(series_uid=f"2.25.2{s}{r}", study=study, modality="MR")
                    for i in range(instances):
                        series.instances.append(
                            Instance(
                                sop_uid=f"2.25.3{s}{r}{i}",
                                sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                                path=f"store/x/{s}{r}{i}.dcm",
                                size=1,
                                sha256="0" * 64,
                                transfer_syntax_uid="1.2.840.10008.1.2.1",
                            )
                        )
                session.add(patient)
    finally:
        engine.dispose()


def name_of(node: NodeProcess) -> str:
    return enrollments.load(node.data_dir).name


def create_task(hub: Hub, token: str, **body: Any) -> dict[str, Any]:
    response = hub.api("POST", "/api/v1/tasks", token, json={"kind": "node.status", **body})
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def wait_for(
    hub: Hub,
    token: str,
    task_id: int,
    done: Callable[[dict[str, str]], bool],
    nodes: list[NodeProcess],
    timeout: float = 30.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = hub.api("GET", f"/api/v1/tasks/{task_id}", token).json()
        states = {target["node"]: target["state"] for target in task["targets"]}
        if done(states):
            return task
        if time.monotonic() > deadline:
            logs = "\n".join(node.log() for node in nodes)
            raise AssertionError(f"task {task_id} stayed {states}:\n{logs}")
        time.sleep(0.1)


def signed_get(node: NodeProcess, hub: Hub, path: str, **overrides: Any) -> httpx.Response:
    enrollment = enrollments.load(node.data_dir)
    key = keys.read_private_key(keys.key_path(node.data_dir))
    headers = signing.sign_request(
        key, node_id=enrollment.node_id, method="GET", target=path, **overrides
    )
    return httpx.get(f"{hub.url}{path}", headers=headers.as_dict(), timeout=10)


def node_audit(node: NodeProcess) -> list[AuditRecord]:
    engine = make_engine(load(None, data_dir=node.data_dir).database)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return list(session.execute(select(AuditRecord).order_by(AuditRecord.id)).scalars())
    finally:
        engine.dispose()


# -- the channel across several nodes ----------------------------------------------------------


def test_a_status_task_is_answered_by_every_node_and_audited_at_the_hub_and_each_node(
    hub: Hub, researcher: str, enrolled: NodeFactory
) -> None:
    nodes = [enrolled(with_cli=True), enrolled(), enrolled()]
    fill_store(nodes[0].data_dir, studies=2, series_per_study=3, instances=4)
    fill_store(nodes[1].data_dir, studies=1, series_per_study=1, instances=2)
    for node in nodes:
        node.start()
    names = [name_of(node) for node in nodes]

    task = create_task(hub, researcher, project=PROJECT, nodes=names)
    done = wait_for(hub, researcher, task["id"], lambda s: set(s.values()) == {"answered"}, nodes)

    results = {target["node"]: target["result"] for target in done["targets"]}
    counts = {name: (r["studies"], r["series"], r["instances"]) for name, r in results.items()}
    assert counts == {names[0]: (2, 6, 24), names[1]: (1, 1, 2), names[2]: (0, 0, 0)}
    assert {r["software_version"] for r in results.values()} == {"0.1.0"}
    assert {r["policy"]["min_cell"] for r in results.values()} == {10}  # published policies
    hub_records = hub_audit(hub, f"task {task['id']}")
    assert hub_records[0] == ("user:ada", "task.create")
    assert sorted(hub_records[1:]) == [(f"node:{name}", "task.answer") for name in sorted(names)]
    for node in nodes:
        [answer] = [r for r in node_audit(node) if r.subject == f"task {task['id']}"]
        assert answer.action == "federation.answer"
        assert json.loads(answer.details)["requested_by"] == "ada"
    assert "audit log intact" in nodes[0].cli("audit", "verify").stdout


def hub_audit(hub: Hub, subject: str) -> list[tuple[str, str]]:
    engine = make_engine(f"sqlite:///{hub.folder / 'hub.db'}")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            assert audit.verify(session, HubAudit).ok
            records = session.execute(
                select(HubAudit).where(HubAudit.subject == subject).order_by(HubAudit.id)
            ).scalars()
            return [(r.actor, r.action) for r in records]
    finally:
        engine.dispose()


def test_a_node_that_was_offline_picks_up_its_pending_task_when_it_returns(
    hub: Hub, researcher: str, enrolled: NodeFactory
) -> None:
    offline = enrolled()
    task = create_task(hub, researcher, project=PROJECT, nodes=[name_of(offline)])
    time.sleep(1)
    assert [
        t["state"]
        for t in hub.api("GET", f"/api/v1/tasks/{task['id']}", researcher).json()["targets"]
    ] == ["pending"]

    offline.start()
    wait_for(hub, researcher, task["id"], lambda s: set(s.values()) == {"answered"}, [offline])


def test_a_task_past_its_time_to_live_shows_expired(
    hub: Hub, researcher: str, enrolled: NodeFactory
) -> None:
    away = enrolled()
    task = create_task(hub, researcher, project=PROJECT, nodes=[name_of(away)], ttl_seconds=1)
    time.sleep(1.2)

    shown = hub.api("GET", f"/api/v1/tasks/{task['id']}", researcher).json()
    assert [t["state"] for t in shown["targets"]] == ["expired"]
    assert signed_get(away, hub, f"{API_PREFIX}/tasks").json()["tasks"] == []
    listed = json.loads(hub.cli("task", "list", "--json"))
    assert next(t for t in listed if t["id"] == task["id"])["states"] == {"expired": 1}


def test_a_node_keeps_trying_while_the_hub_is_down_and_answers_once_it_is_back(
    tmp_path: Path,
) -> None:
    hub = Hub(tmp_path / "restarting-hub").start()
    node = NodeProcess(tmp_path / "patient-node")
    try:
        admin = hub.cli("user", "add", "admin", "--role", "admin")
        created = hub.api("POST", "/api/v1/nodes", admin, json={"name": "patient-node"}).json()
        enroll_in_process(node, hub, created["enrollment_token"])
        hub.stop()
        node.start()
        deadline = time.monotonic() + 30
        while "cannot be reached" not in node.log():
            assert time.monotonic() < deadline, node.log()
            time.sleep(0.1)

        hub.start()
        task = create_task(hub, admin, nodes=["patient-node"])
        wait_for(hub, admin, task["id"], lambda s: s["patient-node"] == "answered", [node])
    finally:
        node.stop()
        hub.stop()


# -- refusals ---------------------------------------------------------------------------------


def test_a_revoked_node_is_refused_and_gets_no_more_tasks(
    hub: Hub, researcher: str, enrolled: NodeFactory
) -> None:
    node = enrolled()
    assert signed_get(node, hub, f"{API_PREFIX}/me").status_code == 200
    hub.cli("node", "revoke", name_of(node))

    refused = signed_get(node, hub, f"{API_PREFIX}/tasks")
    assert refused.status_code == 403
    assert "revoked" in refused.json()["detail"]
    aimed = hub.api(
        "POST",
        "/api/v1/tasks",
        researcher,
        json={"kind": "node.status", "project": PROJECT, "nodes": [name_of(node)]},
    )
    assert aimed.status_code == 422
    everyone = create_task(hub, researcher, project=PROJECT)
    assert name_of(node) not in {t["node"] for t in everyone["targets"]}


def test_a_replayed_signed_request_is_refused(hub: Hub, enrolled: NodeFactory) -> None:
    node = enrolled()
    enrollment = enrollments.load(node.data_dir)
    key = keys.read_private_key(keys.key_path(node.data_dir))
    path = f"{API_PREFIX}/me"
    headers = signing.sign_request(key, node_id=enrollment.node_id, method="GET", target=path)

    first = httpx.get(f"{hub.url}{path}", headers=headers.as_dict(), timeout=10)
    again = httpx.get(f"{hub.url}{path}", headers=headers.as_dict(), timeout=10)

    assert first.status_code == 200
    assert again.status_code == 401
    assert "already used" in again.json()["detail"]


def test_a_request_signed_long_ago_is_refused(hub: Hub, enrolled: NodeFactory) -> None:
    node = enrolled()
    old = int(time.time()) - 3600
    refused = signed_get(node, hub, f"{API_PREFIX}/me", timestamp=old)
    assert refused.status_code == 401
    assert "X-Havenet-Timestamp" in refused.json()["detail"]


def test_after_a_key_rotation_the_old_key_is_refused(hub: Hub, enrolled: NodeFactory) -> None:
    node = enrolled()
    old_key = keys.read_private_key(keys.key_path(node.data_dir))

    node.cli("federation", "rotate-key")

    assert json.loads(node.cli("federation", "status", "--json").stdout)["ok"] is True
    enrollment = enrollments.load(node.data_dir)
    path = f"{API_PREFIX}/me"
    stale = signing.sign_request(old_key, node_id=enrollment.node_id, method="GET", target=path)
    refused = httpx.get(f"{hub.url}{path}", headers=stale.as_dict(), timeout=10)
    assert refused.status_code == 401
    assert "does not verify" in refused.json()["detail"]


# -- the hub on PostgreSQL --------------------------------------------------------------------


def test_the_hub_runs_the_channel_on_postgresql(postgres_database_url: str, tmp_path: Path) -> None:
    hub = Hub(tmp_path / "pg-hub", database_url=postgres_database_url).start()
    node = NodeProcess(tmp_path / "pg-node")  # enrolled, its requests signed here
    try:
        admin = hub.cli("user", "add", "pg-admin", "--role", "admin")
        created = hub.api("POST", "/api/v1/nodes", admin, json={"name": "pg-node"}).json()
        enroll_in_process(node, hub, created["enrollment_token"])
        enrollment = enrollments.load(node.data_dir)
        key = keys.read_private_key(keys.key_path(node.data_dir))
        path = f"{API_PREFIX}/me"
        once = signing.sign_request(key, node_id=enrollment.node_id, method="GET", target=path)
        assert httpx.get(f"{hub.url}{path}", headers=once.as_dict()).status_code == 200
        assert httpx.get(f"{hub.url}{path}", headers=once.as_dict()).status_code == 401

        task = create_task(hub, admin, nodes=["pg-node"])
        [delivered] = signed_get(node, hub, f"{API_PREFIX}/tasks?wait=1").json()["tasks"]
        result_path = f"{API_PREFIX}/tasks/{task['id']}/result"
        body = json.dumps(
            {
                "status": "answered",
                "payload": {"software_version": "0.1.0", "studies": 1, "series": 2, "instances": 3},
            }
        ).encode()
        signed = signing.sign_request(
            key, node_id=enrollment.node_id, method="POST", target=result_path, body=body
        )
        posted = httpx.post(
            f"{hub.url}{result_path}",
            content=body,
            headers={**signed.as_dict(), "Content-Type": "application/json"},
        )

        assert delivered["id"] == task["id"]
        assert posted.json()["state"] == "answered"
        shown = hub.api("GET", f"/api/v1/tasks/{task['id']}", admin).json()
        assert shown["targets"][0]["result"]["instances"] == 3
        assert dt.datetime.fromisoformat(shown["expires_at"]) > dt.datetime.now(dt.UTC)
    finally:
        hub.stop()


def test_nodes_publish_their_catalogue_and_a_researcher_searches_it(
    hub: Hub, researcher: str, enrolled: NodeFactory
) -> None:
    large, small = enrolled(), enrolled()
    fill_store(large.data_dir, studies=12, series_per_study=2, instances=1)
    fill_store(small.data_dir, studies=3, series_per_study=1, instances=1)
    for node in (large, small):
        done = node.cli("catalogue", "publish")
        assert "published" in done.stdout
    response = hub.api("POST", "/api/v1/catalogue/search", researcher, json={"modality": ["MR"]})
    assert response.status_code == 200, response.text
    result = response.json()
    # 12 patients (24 series) at one node; the other's 3 patients are withheld there.
    assert result["nodes"] == [
        {"node": name_of(large), "patients": 10, "studies": 10, "series": 25}
    ]
    assert "SK0" not in response.text
    searched = subprocess.run(
        [*havenet(), "hub", "search", "--modality", "MR", "--hub", hub.url, "--json"],
        env={**os.environ, "HAVENET_HUB_TOKEN": researcher},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(searched.stdout)["total"]["series"] == 25
    [record] = [r for r in node_audit(small) if r.action == "catalogue.published"]
    assert json.loads(record.details)["cells"] == 0


def test_a_federated_cohort_query_is_combined_and_compared_across_nodes(
    hub: Hub, researcher: str, enrolled: NodeFactory, tmp_path: Path
) -> None:
    """Seed 000: brain volume with and without a dementia diagnosis, asked of two hospitals
    with `havenet hub query`; one is too small to answer with numbers."""
    large, small = enrolled(), enrolled()
    fill_seed_comparison(large.data_dir, DEMENTIA, OTHERS)
    fill_seed_comparison(small.data_dir, DEMENTIA[:2], OTHERS[:2])
    for node in (large, small):
        node.start()
    cohort = tmp_path / "cohort.json"
    cohort.write_text(json.dumps(PAYLOAD["cohort"]))
    split = tmp_path / "dementia.json"
    split.write_text(json.dumps({"kind": "condition", "concept": "ICD10CM:G30"}))
    command = [
        *havenet(), "hub", "query", str(cohort), "--project", PROJECT, "--hub", hub.url,
        "--stat", "LOINC:81243-3", "--by", f"@{split}", "--bins", "15,20,25,30",
        "--breakdown", "sex", "--wait", "60", "--json",
        "--nodes", f"{name_of(large)},{name_of(small)}",  # the module's other nodes are gone
    ]  # fmt: skip
    done = subprocess.run(
        command,
        env={**os.environ, "HAVENET_HUB_TOKEN": researcher},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["nodes"].values()) == {"answered"}
    # 30 patients at one node; the other's 4 are withheld, so 30 is a lower bound.
    assert result["patients"] == {"value": 30, "at_least": True, "withheld_by": 1}
    assert result["welch"]["groups"] == ["no", "yes"]  # no dementia minus dementia
    assert result["welch"]["t"] == pytest.approx(2.46, abs=0.005)  # Welch's textbook example
    assert result["welch"]["p"] == pytest.approx(0.021, abs=0.0005)
    assert {g["group"]: g["n"] for g in result["groups"]} == {"yes": 15, "no": 15}
    for node in (large, small):
        [answer] = [r for r in node_audit(node) if r.action == "federation.answer"]
        assert "SK" not in answer.details  # counts only, no subject key


def fill_seed_comparison(data_dir: Path, dementia: list[float], others: list[float]) -> None:
    settings = load(None, data_dir=data_dir)
    migrate(settings.database)
    engine = make_engine(settings.database)
    loader.load(engine, icd_roots=("G30",))
    try:
        with transaction(make_sessionmaker(engine)) as session:
            store = Store(session)
            for values, demented in ((dementia, True), (others, False)):
                for value in values:
                    key = store.patient()
                    store.study(key, dt.date(2022, 3, 1))
                    store.measurement(key, value, dt.date(2022, 3, 1))
                    if demented:
                        store.condition(key, "G30.1", dt.date(2021, 6, 1))
    finally:
        engine.dispose()


# -- local approval and offline nodes ------------------------------------------------------------

MR_COHORT = {"inclusion": {"kind": "imaging", "modality": ["MR"]}}


def ask_cohort(hub: Hub, token: str, nodes: list[NodeProcess]) -> int:
    body = {
        "kind": "cohort.count",
        "project": PROJECT,
        "nodes": [name_of(node) for node in nodes],
        "payload": {"project": PROJECT, "cohort": MR_COHORT},
    }
    response = hub.api("POST", "/api/v1/tasks", token, json=body)
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


def test_a_node_that_waits_for_local_approval_answers_once_hospital_it_decides(
    hub: Hub, researcher: str, enrolled: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAVENET_NODE_QUERY_AUTO_ANSWER", "false")
    monkeypatch.setenv("HAVENET_NODE_ONTOLOGY_AT_START", "false")  # not asked: spare the CPU
    node = enrolled()
    fill_store(node.data_dir, studies=12, series_per_study=1, instances=1)
    node.start()
    name = name_of(node)
    approved, declined = ask_cohort(hub, researcher, [node]), ask_cohort(hub, researcher, [node])
    for task_id in (approved, declined):
        held = wait_for(hub, researcher, task_id, lambda s: s[name] != "pending", [node])
        assert held["targets"][0]["state"] == "deferred"  # not refused, and waited for

    listed = json.loads(node.cli("queries", "list", "--json").stdout)
    assert [(q["task_id"], q["answer"]["patients"]["value"]) for q in listed] == [
        (approved, 10),  # 12 patients, rounded to 5
        (declined, 10),
    ]
    assert listed[0]["cohort"][1] == "  an imaging series: modality MR"
    node.cli("queries", "approve", str(approved))
    node.cli("queries", "decline", str(declined), "--reason", "outside our agreement")

    done = wait_for(hub, researcher, approved, lambda s: s[name] == "answered", [node])
    assert done["targets"][0]["result"]["patients"]["value"] == 10
    refused = wait_for(hub, researcher, declined, lambda s: s[name] == "refused", [node])
    assert refused["targets"][0]["reason"] == "declined by the hospital: outside our agreement"
    actions = [r.action for r in node_audit(node) if r.subject == f"task {approved}"]
    assert actions == ["query.held", "federation.answer", "query.approved"]


def test_a_query_does_not_wait_for_a_node_that_is_offline_which_answers_when_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One node runs, the other is stopped (enrolled, not seen for longer than the hub's
    two seconds): the query is complete with the first node's answer, and the second still
    answers when it is started within the TTL."""
    monkeypatch.setenv("HAVENET_HUB_NODE_OFFLINE_AFTER_SECONDS", "2")
    monkeypatch.setenv("HAVENET_NODE_ONTOLOGY_AT_START", "false")
    hub = Hub(tmp_path / "offline-hub").start()
    here, away = NodeProcess(tmp_path / "here"), NodeProcess(tmp_path / "away")
    try:
        admin = hub.cli("user", "add", "admin", "--role", "admin")
        hub.api("POST", "/api/v1/projects", admin, json={"name": PROJECT})
        for node in (here, away):
            created = hub.api("POST", "/api/v1/nodes", admin, json={"name": node.data_dir.name})
            enroll_in_process(node, hub, created.json()["enrollment_token"])
            fill_store(node.data_dir, studies=15, series_per_study=1, instances=1)
        here.start()
        time.sleep(2.5)  # away, enrolled and stopped, is not seen for longer than 2 s

        task_id = ask_cohort(hub, admin, [here, away])
        first = hub.api("GET", f"/api/v1/tasks/{task_id}/cohort", admin).json()
        assert first["nodes"]["away"] == "offline"  # at once, not after the TTL
        wait_for(hub, admin, task_id, lambda s: s["here"] == "answered", [here])
        result = hub.api("GET", f"/api/v1/tasks/{task_id}/cohort", admin).json()
        assert (result["complete"], result["nodes"]) == (
            True,
            {"here": "answered", "away": "offline"},
        )
        assert result["patients"]["value"] == 15

        away.start()  # back within the TTL: it still answers
        wait_for(hub, admin, task_id, lambda s: s["away"] == "answered", [away])
        result = hub.api("GET", f"/api/v1/tasks/{task_id}/cohort", admin).json()
        assert (result["complete"], result["patients"]["value"]) == (True, 30)
    finally:
        for node in (here, away):
            node.stop()
        hub.stop()
