"""Federated tasks: who may create them, how nodes receive and answer them, per-node states
(pending, deferred, offline, answered, refused, expired, failed), the long poll, and the
audit log."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from common import audit
from hub.audit import AuditRecord
from hub.db import transaction
from hub.deps import Runtime
from hub.nodes import service as nodes
from hub.users.models import Role
from tests.unit.hub.conftest import (
    PROJECT,
    STATUS_ANSWER,
    SigningNode,
    add_user,
    bearer,
    enroll,
)


def create(client: TestClient, token: str, **body: Any) -> Any:
    return client.post("/api/v1/tasks", json={"kind": "node.status", **body}, headers=bearer(token))


def states(client: TestClient, token: str, task_id: int) -> dict[str, str]:
    task = client.get(f"/api/v1/tasks/{task_id}", headers=bearer(token)).json()
    return {target["node"]: target["state"] for target in task["targets"]}


# -- who may create what --------------------------------------------------------------------


def test_a_researcher_sends_a_status_task_to_every_enrolled_node(
    client: TestClient, runtime: Runtime, researcher: str, node: SigningNode
) -> None:
    other = enroll(client, runtime, "other-hospital")
    response = create(client, researcher, project=PROJECT)
    assert response.status_code == 201
    assert states(client, researcher, response.json()["id"]) == {
        node.name: "pending",
        other.name: "pending",
    }


def test_a_researcher_outside_the_project_is_refused(
    client: TestClient, runtime: Runtime, researcher: str, node: SigningNode
) -> None:
    outsider = add_user(runtime, "eve", Role.RESEARCHER, "another-project")
    response = create(client, outsider, project=PROJECT)
    assert response.status_code == 403
    assert PROJECT in response.json()["detail"]


def test_a_curator_may_not_send_tasks(
    client: TestClient, runtime: Runtime, node: SigningNode
) -> None:
    curator = add_user(runtime, "cura", Role.CURATOR, PROJECT)
    assert create(client, curator, project=PROJECT).status_code == 403


def test_a_researchers_task_must_name_a_project(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    response = create(client, researcher)
    assert response.status_code == 422
    assert "project" in response.json()["detail"]


def test_an_unknown_kind_or_payload_field_is_refused_without_echoing_values(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    unknown = create(client, researcher, project=PROJECT, kind="cohort.nonsense")
    assert unknown.status_code == 422
    extra = create(client, researcher, project=PROJECT, payload={"patient": "SMITH^JOHN"})
    assert extra.status_code == 422
    assert "payload.patient" in extra.json()["detail"]
    assert "SMITH" not in extra.text


def test_a_task_for_a_node_that_is_not_enrolled_is_refused(
    client: TestClient, runtime: Runtime, admin: str, node: SigningNode
) -> None:
    client.post("/api/v1/nodes", json={"name": "not-yet"}, headers=bearer(admin))
    response = create(client, admin, nodes=["not-yet"])
    assert response.status_code == 422
    assert "not-yet" in response.json()["detail"]


# -- delivery and results -------------------------------------------------------------------


def test_a_node_receives_its_pending_task_and_its_answer_is_shown(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    task_id = create(client, researcher, project=PROJECT).json()["id"]
    [task] = node.poll()
    assert (task["id"], task["kind"], task["project"], task["requested_by"]) == (
        task_id,
        "node.status",
        PROJECT,
        "ada",
    )

    receipt = node.answer(task_id, STATUS_ANSWER)
    assert receipt.json()["state"] == "answered"
    shown = client.get(f"/api/v1/tasks/{task_id}", headers=bearer(researcher)).json()
    assert shown["targets"][0]["result"]["instances"] == 210
    assert node.poll() == []


def test_an_answer_that_does_not_fit_the_kind_is_stored_as_failed(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    task_id = create(client, researcher, project=PROJECT).json()["id"]
    leaky = {"status": "answered", "payload": {**STATUS_ANSWER["payload"], "names": ["DOE^J"]}}

    assert node.answer(task_id, leaky).json()["state"] == "failed"
    shown = client.get(f"/api/v1/tasks/{task_id}", headers=bearer(researcher)).json()
    assert shown["targets"][0]["result"] is None
    assert "answer.names" in shown["targets"][0]["reason"]
    assert "DOE" not in json.dumps(shown)


def test_a_refusal_is_shown_with_its_reason(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    task_id = create(client, researcher, project=PROJECT).json()["id"]
    node.answer(task_id, {"status": "refused", "reason": "waits for local approval"})
    shown = client.get(f"/api/v1/tasks/{task_id}", headers=bearer(researcher)).json()
    assert (shown["targets"][0]["state"], shown["targets"][0]["reason"]) == (
        "refused",
        "waits for local approval",
    )


def test_a_second_result_for_the_same_task_is_refused(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    task_id = create(client, researcher, project=PROJECT).json()["id"]
    assert node.answer(task_id, STATUS_ANSWER).status_code == 200
    again = node.answer(task_id, {"status": "failed", "reason": "x"})
    assert again.status_code == 409
    assert states(client, researcher, task_id) == {node.name: "answered"}


def test_a_node_cannot_answer_a_task_that_was_not_sent_to_it(
    client: TestClient, runtime: Runtime, researcher: str, node: SigningNode
) -> None:
    other = enroll(client, runtime, "other-hospital")
    task_id = create(client, researcher, project=PROJECT, nodes=[node.name]).json()["id"]
    assert other.answer(task_id, STATUS_ANSWER).status_code == 404


def test_a_task_past_its_time_to_live_expires_and_is_no_longer_delivered(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    task_id = create(client, researcher, project=PROJECT, ttl_seconds=1).json()["id"]
    time.sleep(1.1)
    assert node.poll() == []
    assert states(client, researcher, task_id) == {node.name: "expired"}
    assert node.answer(task_id, STATUS_ANSWER).status_code == 409


def test_researchers_see_only_their_projects_tasks(
    client: TestClient, runtime: Runtime, researcher: str, admin: str, node: SigningNode
) -> None:
    other = add_user(runtime, "bob", Role.RESEARCHER, "another-project")
    mine = create(client, researcher, project=PROJECT).json()["id"]
    theirs = create(client, other, project="another-project").json()["id"]

    listed = client.get("/api/v1/tasks", headers=bearer(researcher)).json()
    assert [task["id"] for task in listed] == [mine]
    assert client.get(f"/api/v1/tasks/{theirs}", headers=bearer(researcher)).status_code == 404
    everything = client.get("/api/v1/tasks", headers=bearer(admin)).json()
    assert [task["id"] for task in everything] == [theirs, mine]


def test_a_deferred_task_stays_pending_is_not_handed_out_again_and_takes_the_later_answer(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    task_id = create(client, researcher, project=PROJECT).json()["id"]
    [_] = node.poll()
    deferral = {"status": "deferred", "reason": "awaiting approval by the hospital"}

    assert node.answer(task_id, deferral).json()["state"] == "pending"
    shown = client.get(f"/api/v1/tasks/{task_id}", headers=bearer(researcher)).json()
    assert (shown["targets"][0]["state"], shown["targets"][0]["reason"]) == (
        "deferred",
        "awaiting approval by the hospital",
    )
    assert shown["states"] == {"deferred": 1}
    assert node.poll() == []  # held at the node: not handed out again

    assert node.answer(task_id, STATUS_ANSWER).json()["state"] == "answered"
    assert states(client, researcher, task_id) == {node.name: "answered"}


def test_a_deferred_task_still_expires_after_its_time_to_live(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    task_id = create(client, researcher, project=PROJECT, ttl_seconds=1).json()["id"]
    node.answer(task_id, {"status": "deferred", "reason": "awaiting approval"})
    time.sleep(1.1)
    assert states(client, researcher, task_id) == {node.name: "expired"}
    assert node.answer(task_id, STATUS_ANSWER).status_code == 409


def last_seen(runtime: Runtime, name: str, ago: dt.timedelta) -> None:
    with transaction(runtime.sessions) as session:
        found = nodes.require(session=session, name=name)
        found.last_seen_at = dt.datetime.now(dt.UTC) - ago


def test_a_node_not_seen_lately_shows_offline_at_once_and_answers_when_it_returns(
    client: TestClient, runtime: Runtime, researcher: str, node: SigningNode
) -> None:
    away = enroll(client, runtime, "away-hospital")
    last_seen(runtime, away.name, dt.timedelta(minutes=10))  # the default limit is 3 minutes
    task_id = create(client, researcher, project=PROJECT).json()["id"]

    assert states(client, researcher, task_id) == {node.name: "pending", away.name: "offline"}
    listed = client.get("/api/v1/tasks", headers=bearer(researcher)).json()
    assert listed[0]["states"] == {"offline": 1, "pending": 1}

    [task] = away.poll()  # back: seen again, and the task is still its to answer
    assert states(client, researcher, task_id)[away.name] == "pending"
    away.answer(task["id"], STATUS_ANSWER)
    assert states(client, researcher, task_id)[away.name] == "answered"


# -- the long poll ----------------------------------------------------------------------------


def test_an_empty_poll_is_held_for_the_wait_asked(node: SigningNode) -> None:
    started = time.monotonic()
    assert node.poll(wait=0.5) == []
    assert 0.45 <= time.monotonic() - started < 3


def test_a_held_poll_returns_as_soon_as_a_task_arrives(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    received: list[tuple[float, list[dict[str, Any]]]] = []
    waiter = threading.Thread(target=lambda: received.append((time.monotonic(), node.poll(4))))
    waiter.start()
    time.sleep(0.3)
    created_at = time.monotonic()
    task_id = create(client, researcher, project=PROJECT).json()["id"]
    waiter.join(timeout=10)

    [(returned_at, tasks)] = received
    assert [task["id"] for task in tasks] == [task_id]
    assert returned_at - created_at < 1.5


# -- the audit log ----------------------------------------------------------------------------


def test_every_task_created_and_every_answer_is_in_the_hub_audit_log(
    client: TestClient, runtime: Runtime, researcher: str, node: SigningNode
) -> None:
    task_id = create(client, researcher, project=PROJECT).json()["id"]
    node.answer(task_id, STATUS_ANSWER)

    with transaction(runtime.sessions) as session:
        records = session.execute(
            select(AuditRecord).where(AuditRecord.subject == f"task {task_id}")
        ).scalars()
        logged = [(r.actor, r.action, json.loads(r.details)) for r in records]
        assert audit.verify(session, AuditRecord).ok
    assert logged == [
        (
            "user:ada",
            "task.create",
            {"kind": "node.status", "nodes": [node.name], "project": PROJECT, "ttl_seconds": 86400},
        ),
        (
            f"node:{node.name}",
            "task.answer",
            {"kind": "node.status", "state": "answered", "status": "answered"},
        ),
    ]
