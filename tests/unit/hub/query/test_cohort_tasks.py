"""cohort.count tasks at the hub: what a node receives is what the researcher asked."""

from __future__ import annotations

from fastapi.testclient import TestClient

from common.schemas.cohort import COHORT_COUNT, CohortCountRequest
from tests.unit.hub.conftest import PROJECT, SigningNode, bearer

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
