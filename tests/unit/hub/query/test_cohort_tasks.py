"""cohort.count tasks at the hub: what a node receives is what the researcher asked, and the
combined answer is complete when every node seen lately has answered."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from common.schemas.cohort import COHORT_COUNT, CohortCountAnswer, CohortCountRequest, Count
from hub.db import transaction
from hub.deps import Runtime
from hub.nodes import service as nodes
from hub.settings import HubSettings
from tests.unit.hub.conftest import PROJECT, SigningNode, bearer, enroll

NOT_DEMENTIA = {
    "all": [
        {"kind": "imaging", "modality": ["MR"]},
        {"not": {"kind": "condition", "concept": "ICD10CM:G30"}},
    ]
}


def test_a_cohort_with_a_not_reaches_the_node_intact(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    payload = {"project": PROJECT, "cohort": {"version": 1, "inclusion": NOT_DEMENTIA}}
    created = client.post(
        "/api/v1/tasks",
        json={"kind": COHORT_COUNT, "project": PROJECT, "payload": payload},
        headers=bearer(researcher),
    )
    assert created.status_code == 201, created.text
    (task,) = node.poll()
    received = CohortCountRequest.model_validate(task["payload"])
    assert received == CohortCountRequest.model_validate(payload)


def test_an_invalid_cohort_is_refused_at_the_hub_naming_the_field(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    payload = {"project": PROJECT, "cohort": {"inclusion": {"kind": "imaging", "contrast": 3}}}
    created = client.post(
        "/api/v1/tasks",
        json={"kind": COHORT_COUNT, "project": PROJECT, "payload": payload},
        headers=bearer(researcher),
    )
    assert created.status_code == 422
    assert "contrast" in created.text
    assert node.poll() == []


# -- when the combined answer is complete ------------------------------------------------------


@pytest.fixture
def hub_settings(hub_settings: HubSettings) -> HubSettings:
    """A hub that stops waiting for a node after a minute without a word from it."""
    return hub_settings.model_copy(update={"node_offline_after_seconds": 60})


def answer(patients: int) -> dict[str, Any]:
    count = Count(value=patients)
    result = CohortCountAnswer(
        cohort_hash="0" * 64,
        min_cell=10,
        rounding=5,
        noisy=False,
        patients=count,
        studies=count,
        series=count,
    )
    return {"status": "answered", "payload": result.model_dump(mode="json")}


def ask(client: TestClient, researcher: str) -> int:
    payload = {"project": PROJECT, "cohort": {"inclusion": NOT_DEMENTIA}}
    created = client.post(
        "/api/v1/tasks",
        json={"kind": COHORT_COUNT, "project": PROJECT, "payload": payload},
        headers=bearer(researcher),
    )
    assert created.status_code == 201, created.text
    task_id: int = created.json()["id"]
    return task_id


def combined(client: TestClient, researcher: str, task_id: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/tasks/{task_id}/cohort", headers=bearer(researcher))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def not_seen_for(runtime: Runtime, name: str, ago: dt.timedelta) -> None:
    with transaction(runtime.sessions) as session:
        nodes.require(session=session, name=name).last_seen_at = dt.datetime.now(dt.UTC) - ago


def test_the_result_is_complete_once_every_node_seen_lately_has_answered(
    client: TestClient, runtime: Runtime, researcher: str, node: SigningNode
) -> None:
    away = enroll(client, runtime, "away-hospital")
    not_seen_for(runtime, away.name, dt.timedelta(minutes=2))  # over the hub's minute
    task_id = ask(client, researcher)

    waiting = combined(client, researcher, task_id)
    assert (waiting["nodes"], waiting["complete"]) == (
        {node.name: "pending", away.name: "offline"},
        False,
    )
    node.answer(task_id, answer(40))
    done = combined(client, researcher, task_id)
    assert (done["nodes"][node.name], done["complete"]) == ("answered", True)
    assert done["patients"] == {"value": 40, "at_least": False, "withheld_by": 0}


def test_an_offline_node_that_returns_within_the_ttl_still_adds_its_answer(
    client: TestClient, runtime: Runtime, researcher: str, node: SigningNode
) -> None:
    away = enroll(client, runtime, "away-hospital")
    not_seen_for(runtime, away.name, dt.timedelta(minutes=2))
    task_id = ask(client, researcher)
    node.answer(task_id, answer(40))

    [_] = away.poll()
    away.answer(task_id, answer(25))
    done = combined(client, researcher, task_id)
    assert (done["complete"], done["answered"], done["patients"]["value"]) == (True, 2, 65)


def test_a_node_waiting_for_local_approval_keeps_the_result_incomplete(
    client: TestClient, researcher: str, node: SigningNode
) -> None:
    task_id = ask(client, researcher)
    node.answer(task_id, {"status": "deferred", "reason": "awaiting approval by the hospital"})
    waiting = combined(client, researcher, task_id)
    assert (waiting["nodes"], waiting["complete"]) == ({node.name: "deferred"}, False)
