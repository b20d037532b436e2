"""QIDO-RS searches of a project's workspace: what they match and what they return."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from hub.curation.models import StudyState
from hub.db import transaction
from hub.deps import Runtime
from hub.dicomweb import index
from hub.dicomweb.models import IndexedStudy
from hub.users.models import Project
from tests.unit.hub.conftest import bearer
from tests.unit.hub.dicomweb.conftest import ROOT, Workspace, get, released_ct, value

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
PATIENT_ID = "00100020"
MODALITIES = "00080061"
STUDY_DESCRIPTION = "00081030"
RETRIEVE_URL = "00081190"


def study_uids(response_json: list[dict[str, object]]) -> list[str]:
    return [value(dataset, STUDY_UID) for dataset in response_json]  # type: ignore[arg-type]


def test_a_study_search_returns_each_accepted_study_as_dicom_json(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1, instance=1), released_ct("BV-0001", 1, instance=2))
    workspace.add(released_ct("BV-0002", 2, modality="MR"), released_ct("BV-0002", 2, series=2))

    response = get(client, "/studies", researcher)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    first, second = response.json()
    assert value(first, PATIENT_ID) == "BV-0001"
    assert value(first, "00201206") == 1  # NumberOfStudyRelatedSeries
    assert value(first, "00201208") == 2  # NumberOfStudyRelatedInstances
    assert second[MODALITIES]["Value"] == ["CT", "MR"]
    assert value(second, RETRIEVE_URL) == f"http://testserver{ROOT}/studies/2.25.2"
    assert value(second, STUDY_DESCRIPTION) == "CT HEAD 2"


def test_studies_awaiting_review_or_rejected_are_not_served(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))
    workspace.add(released_ct("BV-0002", 2), state=StudyState.AWAITING_REVIEW)
    workspace.add(released_ct("BV-0003", 3), state=StudyState.REJECTED)

    assert study_uids(get(client, "/studies", researcher).json()) == ["2.25.1"]


def test_a_study_accepted_after_a_search_is_found_by_the_next(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))
    assert len(get(client, "/studies", researcher).json()) == 1

    workspace.add(released_ct("BV-0002", 2))

    assert study_uids(get(client, "/studies", researcher).json()) == ["2.25.1", "2.25.2"]


def test_matching_on_patient_id_wildcards_dates_modalities_and_uids(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1, study_date="20190101"))
    workspace.add(released_ct("BV-0002", 2, study_date="20200615", modality="MR"))
    workspace.add(released_ct("XX-0003", 3, study_date="20211231"))

    def found(query: str) -> list[str]:
        response = get(client, f"/studies?{query}", researcher)
        assert response.status_code == 200, response.text
        return study_uids(response.json())

    assert found("PatientID=BV-*") == ["2.25.1", "2.25.2"]
    assert found("PatientID=BV-000?") == ["2.25.1", "2.25.2"]
    assert found("PatientID=bv-0001") == []  # literal matching is case-sensitive
    assert found("00100020=XX-0003") == ["2.25.3"]
    assert found("StudyDate=20200101-20211231") == ["2.25.2", "2.25.3"]
    assert found("StudyDate=-20200615") == ["2.25.1", "2.25.2"]
    assert found("StudyDate=20200616-") == ["2.25.3"]
    assert found("StudyDate=20190101") == ["2.25.1"]
    assert found("ModalitiesInStudy=MR") == ["2.25.2"]
    assert found("StudyInstanceUID=2.25.3,2.25.1") == ["2.25.1", "2.25.3"]
    assert found("PatientName=bv-000*") == ["2.25.1", "2.25.2"]  # names: any case
    assert found("StudyDescription=CT HEAD 2") == ["2.25.2"]


def test_limit_and_offset_page_through_results_and_say_more_exist(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    for study in range(1, 6):
        workspace.add(released_ct(f"BV-000{study}", study))

    first = get(client, "/studies?limit=2", researcher)
    last = get(client, "/studies?limit=2&offset=4", researcher)

    assert study_uids(first.json()) == ["2.25.1", "2.25.2"]
    assert "additional results" in first.headers["warning"]
    assert study_uids(last.json()) == ["2.25.5"]
    assert "warning" not in last.headers


def test_includefield_adds_attributes_and_all_returns_every_study_attribute(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))

    (plain,) = get(client, "/studies", researcher).json()
    (included,) = get(client, "/studies?includefield=PatientAge,00101030", researcher).json()
    (everything,) = get(client, "/studies?includefield=all", researcher).json()

    assert "00101010" not in plain
    assert value(included, "00101010") == "076Y"  # PatientAge
    assert value(included, "00101030") == 61.5  # PatientWeight
    assert value(everything, "00100040") == "F"
    assert "00280010" not in everything  # Rows: an instance attribute


def test_a_series_search_lists_a_studys_series_with_their_instance_counts(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(
        released_ct("BV-0001", 1, series=1),
        released_ct("BV-0001", 1, series=2, instance=1, modality="MR"),
        released_ct("BV-0001", 1, series=2, instance=2, modality="MR"),
    )

    response = get(client, "/studies/2.25.1/series", researcher)
    only_mr = get(client, "/studies/2.25.1/series?Modality=MR", researcher).json()

    first, second = response.json()
    assert (value(first, SERIES_UID), value(first, "00201209")) == ("2.25.1.1", 1)
    assert (value(second, "00080060"), value(second, "00201209")) == ("MR", 2)
    assert value(second, STUDY_UID) == "2.25.1"
    assert [value(series, SERIES_UID) for series in only_mr] == ["2.25.1.2"]


def test_an_instance_search_lists_a_series_instances_without_bulk_data(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(*(released_ct("BV-0001", 1, instance=n) for n in (1, 2, 3)))

    everything = get(client, "/studies/2.25.1/series/2.25.1.1/instances", researcher).json()
    second = get(
        client, "/studies/2.25.1/series/2.25.1.1/instances?InstanceNumber=2", researcher
    ).json()
    (all_fields,) = get(
        client, "/instances?SOPInstanceUID=2.25.1.1.3&includefield=all", researcher
    ).json()

    assert [value(i, SOP_UID) for i in everything] == ["2.25.1.1.1", "2.25.1.1.2", "2.25.1.1.3"]
    assert value(everything[0], "00280010") == 16  # Rows
    assert [value(i, SOP_UID) for i in second] == ["2.25.1.1.2"]
    assert value(all_fields, PATIENT_ID) == "BV-0001"  # across studies: the study's too
    assert "7FE00010" not in all_fields


def test_a_search_that_matches_nothing_is_an_empty_list(
    client: TestClient, researcher: str, workspace: Workspace
) -> None:
    workspace.add(released_ct("BV-0001", 1))

    response = get(client, "/studies?PatientID=NOBODY", researcher)

    assert (response.status_code, response.json()) == (200, [])


def test_a_study_is_indexed_when_a_curator_accepts_it_not_at_the_first_search(
    client: TestClient, researcher: str, curator: str, runtime: Runtime, workspace: Workspace
) -> None:
    study_id = workspace.add(released_ct("BV-0001", 1), state=StudyState.AWAITING_REVIEW)
    accepted = client.post(f"/api/v1/curation/{study_id}/accept", headers=bearer(curator))
    assert accepted.status_code == 200, accepted.text
    with transaction(runtime.sessions) as session:
        indexed = session.execute(select(IndexedStudy)).scalars().all()
        assert [(s.received_study_id, s.study_uid) for s in indexed] == [(study_id, "2.25.1")]
        project = session.get(Project, indexed[0].project_id)
        assert project is not None
        assert index.pending(session=session, project=project) == []

    assert study_uids(get(client, "/studies", researcher).json()) == ["2.25.1"]
