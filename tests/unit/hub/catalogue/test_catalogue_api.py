"""The catalogue over HTTP: a signed node publishes, a researcher searches."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from common.schemas.catalogue import (
    CataloguePublication,
    CubeCell,
    MarginalCell,
    MarginalDimension,
)
from common.schemas.channel import API_PREFIX
from hub.audit import AuditRecord
from hub.db import transaction
from hub.deps import Runtime
from ontology import loader
from tests.unit.hub.conftest import SigningNode, bearer

PUBLICATION = CataloguePublication(
    generated_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    threshold=10,
    rounding=5,
    cells=[
        CubeCell(
            view="sequence",
            modality="MR",
            body_part="BRAIN",
            sequence_type="T1w",
            contrast=False,
            slice_band="0-1",
            patients=20,
            studies=20,
            series=45,
        ),
        CubeCell(
            view="sequence",
            modality="MR",
            body_part="BRAIN",
            sequence_type="FLAIR",
            contrast=False,
            slice_band="3-5",
            patients=15,
            studies=15,
            series=15,
        ),
    ],
    marginals=[
        MarginalCell(
            dimension=MarginalDimension.CONDITION, system="ICD10CM", code="G30.1", patients=15
        )
    ],
    suppressed_cells=3,
    suppressed_marginals=0,
)


def publish(node: SigningNode) -> Any:
    response = node.request("POST", f"{API_PREFIX}/catalogue", PUBLICATION.model_dump(mode="json"))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_node_publishes_and_a_researcher_finds_its_series(
    client: TestClient, node: SigningNode, researcher: str, runtime: Runtime
) -> None:
    assert publish(node) == {"cells": 2, "marginals": 1}
    response = client.post(
        "/api/v1/catalogue/search",
        json={"modality": ["MR"], "slice_thickness_max": 1.5},
        headers=bearer(researcher),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["total"]["series"] == 45
    assert result["nodes"] == [{"node": node.name, "patients": 20, "studies": 20, "series": 45}]
    with transaction(runtime.sessions) as session:
        actions = set(session.execute(select(AuditRecord.action)).scalars())
    assert {"catalogue.published", "catalogue.searched"} <= actions


def test_an_unsigned_publication_is_refused(client: TestClient) -> None:
    response = client.post(f"{API_PREFIX}/catalogue", json=PUBLICATION.model_dump(mode="json"))
    assert response.status_code == 401


def test_searching_needs_a_user_token(client: TestClient) -> None:
    assert client.post("/api/v1/catalogue/search", json={}).status_code == 401


def test_a_concept_expands_through_the_ontology_and_names_complete_as_you_type(
    client: TestClient, node: SigningNode, researcher: str, runtime: Runtime
) -> None:
    loader.load(runtime.engine, icd_roots=("G30",))
    publish(node)
    response = client.post(
        "/api/v1/catalogue/search",
        json={"concepts": ["ICD10CM:G30"]},
        headers=bearer(researcher),
    )
    (availability,) = response.json()["concepts"]
    assert availability["nodes"] == {node.name: 15}  # G30.1 is under G30
    assert availability["codes"] > 5  # G30's subtree, with the SNOMED concepts mapped in
    hits = client.get(
        "/api/v1/catalogue/concepts", params={"q": "alzheimer"}, headers=bearer(researcher)
    ).json()
    assert any(hit["code"].startswith("G30") for hit in hits)
