"""The node's API: token-protected, pseudonymized views, QA previews, jobs, and no way in to
the correspondence table."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from common import audit
from node import api
from node.exceptions import NotFound
from node.main import create_app
from node.settings import NodeSettings, load
from node.store import correspondence
from node.store.db import transaction
from node.store.models import AuditRecord, Instance
from tests.conftest import ACCESSION, BIRTH_DATE, PATIENT_ID, PATIENT_NAME, ct_dataset
from tests.unit.node.test_qa import store_instance

TOKEN = "api-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDENTIFIERS = (PATIENT_ID, ACCESSION, BIRTH_DATE, *PATIENT_NAME.split("^"))
UNKNOWN_UID = "2.25.4242"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def node_settings(data_dir: Path) -> NodeSettings:
    return load(
        None,
        data_dir=data_dir,
        site_secret="site-secret-for-tests-0123456789abcdef",
        correspondence_key=correspondence.new_key(),
        api_token=TOKEN,
        dicom_port=free_port(),
        api_port=free_port(),
        workers=1,
    )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Instance]]:
    """One running node for the module, holding one stage-1 CT instance."""
    settings = node_settings(tmp_path_factory.mktemp("node"))
    with TestClient(create_app(settings)) as client:
        runtime: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
        runtime.scheduler.pause()  # no PACS here: jobs stay where the tests put them
        with transaction(runtime.sessions) as session:
            instance = store_instance(session, settings.data_dir)
            correspondence.record(
                session=session,
                keyring=runtime.keyring,
                kind="patient",
                original=PATIENT_ID,
                pseudonym=instance.series.study.patient.subject_key,
            )
            session.expunge_all()
        yield client, instance


@pytest.fixture
def client(node: tuple[TestClient, Instance]) -> TestClient:
    return node[0]


@pytest.fixture
def instance(node: tuple[TestClient, Instance]) -> Instance:
    return node[1]


def study_uid(instance: Instance) -> str:
    return instance.series.study.study_uid


def get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(path, headers=AUTH, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def api_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """Every route with its full path (FastAPI keeps included routers as nodes)."""
    return [
        (context.path or "", context.original_route)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]


# -- authentication -------------------------------------------------------------------------


def test_health_answers_without_a_token(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"X": "y"}])
def test_every_other_route_refuses_a_request_without_the_token(
    client: TestClient, headers: dict[str, str]
) -> None:
    routes = [
        (p, r)
        for p, r in api_routes(client.app)  # type: ignore[arg-type]
        if p != "/health" and not p.startswith("/ui/")  # the pages log in with a form
    ]
    assert len(routes) >= 12
    for template, route in routes:
        path = template.replace("{job_id}", "1").replace("{study_uid}", "1.2")
        path = path.replace("{series_uid}", "1.2").replace("{sop_uid}", "1.2")
        for method in route.methods:
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"] == "Bearer"


def test_a_token_with_another_scheme_is_refused(client: TestClient) -> None:
    response = client.get("/status", headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status_code == 401


# -- the correspondence table stays out of reach ---------------------------------------------


def test_no_route_reads_or_writes_the_correspondence_table(client: TestClient) -> None:
    forbidden = ("correspondence", "reidentif", "re-identif", "original", "keyring")
    routes = api_routes(client.app)  # type: ignore[arg-type]
    assert len(routes) >= 13
    for path, route in routes:
        text = f"{path} {route.name} {route.endpoint.__module__} {route.summary}".lower()
        assert not any(word in text for word in forbidden), text
        fields = [f.name for f in route.dependant.body_params + route.dependant.query_params]
        assert not any(word in name.lower() for name in fields for word in forbidden)


def test_the_openapi_schema_exposes_no_correspondence_or_reidentification(
    client: TestClient,
) -> None:
    schema = client.get("/openapi.json").json()
    forbidden = ("correspondence", "reidentif", "re-identif", "original", "keyring")
    for path, operations in schema["paths"].items():
        assert not any(word in path.lower() for word in forbidden), path
        for operation in operations.values():
            assert not any(word in operation["operationId"].lower() for word in forbidden)
            assert not any(word in operation["summary"].lower() for word in forbidden)
    names = " ".join(
        [*schema["components"]["schemas"]]
        + [p for s in schema["components"]["schemas"].values() for p in s.get("properties", {})]
    ).lower()
    assert not any(word in names for word in forbidden)


def test_no_response_carries_an_identifier_held_in_the_correspondence_table(
    client: TestClient, instance: Instance
) -> None:
    paths = [
        "/status",
        "/studies",
        f"/studies/{study_uid(instance)}",
        f"/studies/{study_uid(instance)}/series",
        f"/series/{instance.series.series_uid}",
        f"/series/{instance.series.series_uid}/instances",
        f"/instances/{instance.sop_uid}/preview",
        "/openapi.json",
    ]
    for path in paths:
        text = client.get(path, headers=AUTH).text
        assert [n for n in IDENTIFIERS if n in text] == [], path


# -- OpenAPI ----------------------------------------------------------------------------------


def test_every_operation_is_documented_with_a_summary_and_a_response_model(
    client: TestClient,
) -> None:
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
            ok = operation["responses"].get("200") or operation["responses"].get("201")
            assert ok is not None and ok.get("content"), (method, path)
    assert "node API token" in schema["components"]["securitySchemes"]


# -- status and the store -------------------------------------------------------------------


def test_status_counts_what_the_node_holds_and_where_it_listens(
    client: TestClient, instance: Instance
) -> None:
    body = get(client, "/status")
    runtime: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
    assert body["counts"]["patients"] == 1
    assert body["counts"]["studies"] == 1
    assert body["counts"]["instances"] == 1
    assert set(body["counts"]) == {
        "patients",
        "studies",
        "series",
        "instances",
        "rejected",
        "queued_jobs",
    }
    assert body["dicom"] == {
        "ae_title": "HAVENET",
        "host": "127.0.0.1",
        "port": runtime.settings.dicom_port,
    }
    assert isinstance(body["ingest"], dict)


def test_studies_are_listed_in_pseudonyms(client: TestClient, instance: Instance) -> None:
    (study,) = get(client, "/studies")
    assert study["study_uid"] == study_uid(instance)
    assert study["subject_key"].startswith("PS")
    assert study["modalities"] == ["CT"]
    assert study["study_date"] == "2023-04-15"
    assert (study["series_count"], study["instance_count"]) == (1, 1)


def test_studies_can_be_filtered(client: TestClient, instance: Instance) -> None:
    subject_key = instance.series.study.patient.subject_key
    assert len(get(client, "/studies", modality="ct")) == 1
    assert get(client, "/studies", modality="MR") == []
    assert len(get(client, "/studies", subject_key=subject_key)) == 1
    assert get(client, "/studies", subject_key="PSNOBODY") == []
    assert get(client, "/studies", date_from="2024-01-01") == []
    assert len(get(client, "/studies", date_from="2023-01-01", date_to="2023-12-31")) == 1


def test_one_study_and_its_series(client: TestClient, instance: Instance) -> None:
    assert get(client, f"/studies/{study_uid(instance)}")["study_uid"] == study_uid(instance)
    (series,) = get(client, f"/studies/{study_uid(instance)}/series")
    assert series["series_uid"] == instance.series.series_uid
    assert series["study_uid"] == study_uid(instance)
    assert series["modality"] == "CT"
    assert series["body_part"] == "HEAD"
    assert (series["manufacturer"], series["model"]) == ("ACME Medical", "Scanner 9000")
    assert series["slice_thickness"] == 5.0
    assert series["field_strength"] is None
    assert series["instance_count"] == 1
    assert get(client, f"/series/{instance.series.series_uid}") == series


def test_the_instances_of_a_series(client: TestClient, instance: Instance) -> None:
    (listed,) = get(client, f"/series/{instance.series.series_uid}/instances")
    assert listed["sop_uid"] == instance.sop_uid
    assert listed["sha256"] == instance.sha256


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/studies/{uid}", "study"),
        ("/studies/{uid}/series", "study"),
        ("/series/{uid}", "series"),
        ("/series/{uid}/instances", "series"),
        ("/instances/{uid}/preview", "instance"),
        ("/instances/{uid}/preview.png", "instance"),
    ],
)
def test_an_unknown_uid_is_a_404_that_does_not_echo_it(
    client: TestClient, path: str, kind: str
) -> None:
    """A caller may paste a hospital UID by mistake: the answer must not repeat it."""
    response = client.get(path.format(uid=UNKNOWN_UID), headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"detail": f"no such {kind} on this node"}


# -- the QA preview -------------------------------------------------------------------------


def test_the_preview_shows_actions_and_withholds_identifier_values(
    client: TestClient, instance: Instance
) -> None:
    body = get(client, f"/instances/{instance.sop_uid}/preview")
    table = {row["path"]: row for row in body["attributes"]}
    assert table["PatientName"] == {
        "path": "PatientName",
        "action": "subject-key",
        "value": None,
        "withheld": True,
    }
    assert table["Modality"]["value"] == "CT"
    assert body["subject_key"] == instance.series.study.patient.subject_key
    assert body["summary"]["removed"] >= 4


def test_the_preview_png_is_an_image(client: TestClient, instance: Instance) -> None:
    response = client.get(f"/instances/{instance.sop_uid}/preview.png", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-store"
    assert response.content.startswith(b"\x89PNG")


# -- jobs -----------------------------------------------------------------------------------


def create_job(client: TestClient, **body: Any) -> Any:
    response = client.post("/jobs", headers=AUTH, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_retrieval_job_is_queued_without_its_identifiers(client: TestClient) -> None:
    job = create_job(client, patient_ids=[PATIENT_ID], accession_numbers=[ACCESSION], modality="CT")
    assert (job["kind"], job["status"]) == ("retrieve", "queued")
    assert job["spec"]["patient_ids"] == 1
    assert job["spec"]["accession_numbers"] == 1
    assert job["spec"]["modality"] == "CT"
    for path in ("/jobs", f"/jobs/{job['id']}"):
        text = client.get(path, headers=AUTH).text
        assert PATIENT_ID not in text
        assert ACCESSION not in text


def test_jobs_are_listed_newest_first_and_read_one_by_one(client: TestClient) -> None:
    first = create_job(client, modality="MR")
    second = create_job(client, modality="CT")
    ids = [job["id"] for job in get(client, "/jobs")]
    assert ids.index(second["id"]) < ids.index(first["id"])
    one = get(client, f"/jobs/{first['id']}")
    assert one["id"] == first["id"]
    assert one["rejections"] == []
    assert first["id"] in [job["id"] for job in get(client, "/jobs", status="queued")]


def test_a_job_is_cancelled_once(client: TestClient) -> None:
    job = create_job(client, modality="CT")
    response = client.post(f"/jobs/{job['id']}/cancel", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    again = client.post(f"/jobs/{job['id']}/cancel", headers=AUTH)
    assert again.status_code == 409
    assert str(job["id"]) in again.json()["detail"]


def test_an_unknown_job_is_a_404(client: TestClient) -> None:
    for response in (
        client.get("/jobs/999999", headers=AUTH),
        client.post("/jobs/999999/cancel", headers=AUTH),
    ):
        assert response.status_code == 404
        assert "999999" in response.json()["detail"]


def test_a_selection_without_criteria_is_refused_with_the_reason(client: TestClient) -> None:
    response = client.post("/jobs", headers=AUTH, json={"kind": "retrieve"})
    assert response.status_code == 422
    assert "at least one criterion" in response.json()["detail"]


def test_a_malformed_job_is_refused_without_echoing_what_was_sent(client: TestClient) -> None:
    response = client.post(
        "/jobs", headers=AUTH, json={"patient_ids": PATIENT_ID, "date_from": ACCESSION}
    )
    assert response.status_code == 422
    assert PATIENT_ID not in response.text
    assert ACCESSION not in response.text
    fields = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert ("body", "retrieve", "patient_ids") in fields


def test_creating_a_job_is_audited(client: TestClient) -> None:
    runtime: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
    job = create_job(client, modality="CT")
    with transaction(runtime.sessions) as session:
        record = session.execute(
            select(AuditRecord).where(AuditRecord.subject == f"job {job['id']}")
        ).scalar_one()
    assert record.action == "job.retrieve"
    assert record.actor.startswith("api@")


def test_clean_up_and_restore_jobs_can_be_queued(client: TestClient, instance: Instance) -> None:
    subject_key = instance.series.study.patient.subject_key
    delete = create_job(client, kind="delete", subject_keys=[subject_key])
    assert (delete["kind"], delete["spec"]["subject_keys"]) == ("delete", [subject_key])
    restore = create_job(client, kind="restore", subject_keys=[subject_key], method="get")
    assert (restore["kind"], restore["spec"]["method"]) == ("restore", "get")
    assert restore["spec"]["subject_keys"] == [subject_key]
    client.post(f"/jobs/{delete['id']}/cancel", headers=AUTH)
    client.post(f"/jobs/{restore['id']}/cancel", headers=AUTH)


# -- one unit of work per request, and errors that say nothing they should not --------------


def audit_count(runtime: api.Runtime) -> int:
    with transaction(runtime.sessions) as session:
        return int(session.execute(select(func.count(AuditRecord.id))).scalar_one())


def test_a_request_commits_its_work_once_or_not_at_all(tmp_path: Path) -> None:
    app = create_app(node_settings(tmp_path))

    @app.post("/test/write", dependencies=[])
    def write(session: api.SessionDep, fail: bool = False) -> dict[str, str]:
        audit.append(session, AuditRecord, actor="test", action="test.write")
        if fail:
            raise NotFound("instance", UNKNOWN_UID)
        return {"written": "yes"}

    with TestClient(app) as client:
        runtime: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
        before = audit_count(runtime)
        assert client.post("/test/write").status_code == 200
        assert audit_count(runtime) == before + 1
        assert client.post("/test/write", params={"fail": True}).status_code == 404
        assert audit_count(runtime) == before + 1  # rolled back


def test_an_unexpected_error_is_a_500_that_leaks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(node_settings(tmp_path))

    @app.get("/test/crash")
    def crash() -> None:
        raise ValueError(f"bad value {PATIENT_ID}")

    with TestClient(app) as client, caplog.at_level(logging.ERROR):
        response = client.get("/test/crash")
    assert response.status_code == 500
    assert PATIENT_ID not in response.text
    assert "ValueError" in caplog.text
    assert PATIENT_ID not in caplog.text


def test_the_node_stops_what_it_started(tmp_path: Path) -> None:
    settings = node_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        runtime: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
        assert runtime.scheduler.running
        with socket.create_connection(("127.0.0.1", settings.dicom_port), timeout=2):
            pass
    assert not runtime.scheduler.running
    with (
        pytest.raises(OSError),
        socket.create_connection(("127.0.0.1", settings.dicom_port), timeout=2),
    ):
        pass


def test_an_instance_taken_in_by_the_ingest_can_be_previewed(tmp_path: Path) -> None:
    settings = node_settings(tmp_path)
    buffer = io.BytesIO()
    ct_dataset(sop_uid="1.2.826.0.1.3680043.10.1.1.1.77").save_as(buffer, enforce_file_format=True)
    with TestClient(create_app(settings)) as client:
        runtime: api.Runtime = client.app.state.node  # type: ignore[attr-defined]
        runtime.ingest.accept(buffer.getvalue(), source="test")
        runtime.ingest.drain(30)
        (study,) = get(client, "/studies")
        (series,) = get(client, f"/studies/{study['study_uid']}/series")
        (stored,) = get(client, f"/series/{series['series_uid']}/instances")
        preview = get(client, f"/instances/{stored['sop_uid']}/preview")
        image = client.get(f"/instances/{stored['sop_uid']}/preview.png", headers=AUTH)
    table = {row["path"]: row for row in preview["attributes"]}
    assert table["PatientID"]["action"] == "subject-key"
    assert table["PatientID"]["value"] is None
    assert image.headers["content-type"] == "image/png"
    assert [n for n in IDENTIFIERS if n in json.dumps(preview)] == []
