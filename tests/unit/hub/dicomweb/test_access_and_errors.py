"""Who may use a workspace's DICOMweb, and the PS3.18 status of each refusal."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hub.deps import Runtime
from hub.users.models import Role
from tests.unit.hub.conftest import add_user
from tests.unit.hub.dicomweb.conftest import ROOT, Workspace, get, released_ct


def test_no_token_is_401(client: TestClient, workspace: Workspace) -> None:
    response = client.get(f"{ROOT}/studies")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_researcher_outside_the_project_is_403(
    client: TestClient, runtime: Runtime, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))
    outsider = add_user(runtime, "eve", Role.RESEARCHER, "another-project")

    response = get(client, "/studies", outsider)

    assert response.status_code == 403
    assert "not a member" in response.json()["detail"]


def test_curators_and_admins_read_any_project(
    client: TestClient, curator: str, admin: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))

    assert len(get(client, "/studies", curator).json()) == 1
    assert len(get(client, "/studies", admin).json()) == 1


def test_an_unknown_project_is_404(client: TestClient, admin: str) -> None:
    response = client.get(
        "/dicom-web/projects/nope/studies", headers={"Authorization": f"Bearer {admin}"}
    )

    assert response.status_code == 404


def test_a_parameter_that_is_no_attribute_is_400_naming_it(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    response = get(client, "/studies?PatientIdd=BV-0001", researcher)

    assert response.status_code == 400
    assert "PatientIdd" in response.json()["detail"]


def test_a_malformed_date_range_limit_or_uid_list_is_400(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    for query in ("StudyDate=2021-03-10", "limit=ten", "limit=0", "StudyInstanceUID=abc"):
        response = get(client, f"/studies?{query}", researcher)
        assert response.status_code == 400, query
        assert query.split("=")[0] in response.json()["detail"]


def test_an_attribute_the_hub_does_not_match_on_is_ignored_with_a_warning(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))

    response = get(client, "/studies?PatientAge=076Y&fuzzymatching=true", researcher)

    assert response.status_code == 200
    assert len(response.json()) == 1
    warning = response.headers["warning"]
    assert warning.startswith("299 ")
    assert "PatientAge" in warning
    assert "fuzzymatching" in warning


def test_asking_for_xml_is_406(client: TestClient, researcher: str, workspace: Workspace) -> None:
    response = get(client, "/studies", researcher, accept="application/dicom+xml")

    assert response.status_code == 406


def test_asking_for_a_study_as_a_zip_is_406(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))

    response = get(client, "/studies/2.25.1", researcher, accept="application/zip")

    assert response.status_code == 406


def test_an_unknown_study_series_or_instance_is_404(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))

    for path in (
        "/studies/2.25.9",
        "/studies/2.25.1/series/2.25.9",
        "/studies/2.25.1/series/2.25.1.1/instances/2.25.9",
        "/studies/2.25.9/metadata",
    ):
        assert get(client, path, researcher).status_code == 404, path


def test_a_study_of_another_project_is_not_found_here(
    client: TestClient, runtime: Runtime, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))
    other = add_user(runtime, "bob", Role.RESEARCHER, "another-project")

    response = client.get(
        "/dicom-web/projects/another-project/studies/2.25.1",
        headers={"Authorization": f"Bearer {other}"},
    )

    assert response.status_code == 404
