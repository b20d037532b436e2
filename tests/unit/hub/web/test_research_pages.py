"""The researcher's pages in process: the cohort builder posts a cohort.count task, the answer
page shows each node's answer with its suppression marks and reloads itself while a node is
pending; data requests are listed without the stage-1 UIDs they may name; accepted studies
are listed and downloaded."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from common.schemas.release import Selection
from hub.deps import Runtime
from hub.users.models import Role
from tests.unit.hub.conftest import PROJECT, SigningNode, add_user, bearer, enroll
from tests.unit.hub.web.test_pages import log_in


def answer(patients: int | None, *, sex: dict[str, int | None] | None = None) -> dict[str, Any]:
    def count(value: int | None) -> dict[str, Any]:
        return {"value": value} if value is not None else {"withheld": "below_threshold"}

    return {
        "status": "answered",
        "payload": {
            "cohort_hash": "0" * 64,
            "min_cell": 10,
            "rounding": 5,
            "noisy": False,
            "patients": count(patients),
            "studies": count(patients and patients + 5),
            "series": count(patients and patients * 2),
            "breakdowns": {
                "sex": [{"value": v, "patients": count(n)} for v, n in (sex or {}).items()]
            },
        },
    }


def run_query(client: TestClient, **extra: str) -> int:
    fields = {
        "project": PROJECT,
        "name": "dementia with MRI",
        "rows": "2",
        "c0_kind": "condition",
        "c0_concept": "ICD10CM:G30",
        "c1_kind": "imaging",
        "c1_modality": "MR",
        "breakdown": "sex",
        "action": "run",
        **extra,
    }
    response = client.post("/ui/cohort", data=fields, follow_redirects=False)
    assert response.status_code == 303, response.text
    found = re.fullmatch(r"/ui/queries/(\d+)", response.headers["location"])
    assert found is not None
    return int(found.group(1))


def test_the_builder_offers_the_researchers_projects_and_labels_every_control(
    client: TestClient, researcher: str
) -> None:
    log_in(client, researcher)
    page = client.get("/ui/cohort").text
    assert f'<option value="{PROJECT}" selected>' in page
    ids = set(re.findall(r'<(?:input|select|textarea)[^>]* id="([^"]+)"', page))
    labelled = set(re.findall(r'<label for="([^"]+)"', page))
    assert ids and ids <= labelled  # every visible control has a label


def test_checking_shows_the_query_the_nodes_will_get(client: TestClient, researcher: str) -> None:
    log_in(client, researcher)
    page = client.post(
        "/ui/cohort",
        data={"project": PROJECT, "c0_kind": "imaging", "c0_modality": "mr", "action": "check"},
    )
    assert page.status_code == 200
    assert "The query, as the nodes will get it" in page.text
    assert re.search(r"&#34;modality&#34;: \[\s+&#34;MR&#34;", page.text)  # upper-cased


def test_a_form_with_problems_is_shown_again_with_them(client: TestClient, researcher: str) -> None:
    log_in(client, researcher)
    page = client.post(
        "/ui/cohort", data={"project": PROJECT, "c0_kind": "condition", "action": "run"}
    )
    assert page.status_code == 422
    assert "criterion 1: concept: write SYSTEM:CODE" in page.text
    assert 'value="condition" selected' in page.text  # what was typed is kept


def test_the_answer_page_reloads_while_a_node_is_pending_and_marks_withheld_counts(
    client: TestClient, runtime: Runtime, node: SigningNode, researcher: str
) -> None:
    small = enroll(client, runtime, "st-small")
    log_in(client, researcher)
    task_id = run_query(client)
    pending = client.get(f"/ui/queries/{task_id}").text
    assert 'http-equiv="refresh"' in pending
    assert "pending" in pending

    [task] = node.poll()
    assert task["payload"]["cohort"]["inclusion"]["all"][0]["concept"] == "ICD10CM:G30"
    node.answer(task_id, answer(30, sex={"F": 20, "M": None}))
    small.poll()
    small.answer(task_id, answer(None))
    page = client.get(f"/ui/queries/{task_id}").text
    assert 'http-equiv="refresh"' not in page
    assert "≥30 patients" in page  # one node withheld its count: a lower bound
    assert re.search(r"<td>st-small</td>.*?<td>&lt;10</td>", page, re.DOTALL)
    assert re.search(r"<td>st-elsewhere</td>.*?<td>30</td>", page, re.DOTALL)
    assert 'aria-label="Patients by sex"' in page
    assert ">≥20</text>" in page  # F: 20 published here, withheld at the other node
    assert 'aria-label="Patients per node"' in page


def test_a_refused_node_shows_its_reason(
    client: TestClient, node: SigningNode, researcher: str
) -> None:
    log_in(client, researcher)
    task_id = run_query(client)
    node.poll()
    node.answer(task_id, {"status": "refused", "reason": "the differencing guard"})
    page = client.get(f"/ui/queries/{task_id}").text
    assert "refused: the differencing guard" in page


def test_queries_of_other_projects_stay_hidden(
    client: TestClient, runtime: Runtime, node: SigningNode, researcher: str
) -> None:
    log_in(client, researcher)
    task_id = run_query(client)
    outsider = add_user(runtime, "eve", Role.RESEARCHER)
    client.cookies.clear()
    log_in(client, outsider)
    assert client.get(f"/ui/queries/{task_id}").status_code == 404
    assert f"/ui/queries/{task_id}" not in client.get("/ui/queries").text


def test_a_curator_does_not_build_cohorts(client: TestClient, runtime: Runtime) -> None:
    log_in(client, add_user(runtime, "cora", Role.CURATOR))
    assert client.get("/ui/cohort").status_code == 403


def test_the_requests_page_counts_a_selection_without_showing_its_uids(
    client: TestClient, node: SigningNode, researcher: str
) -> None:
    uid = "1.2.826.0.1.3680043.10.1.1"
    filed = client.post(
        "/api/v1/requests",
        json={"project": PROJECT, "selection": {"study_uids": [uid]}},
        headers=bearer(researcher),
    )
    assert filed.status_code == 201, filed.text
    log_in(client, researcher)
    page = client.get("/ui/requests").text
    assert "1 study by key" in page
    assert 'st-elsewhere: <span class="state state-requested">requested' in page
    assert uid not in page


@pytest.mark.skipif(
    "cohort" not in Selection.model_fields, reason="selection.cohort is not in this tree yet"
)
def test_a_request_is_filed_for_the_cohort_of_a_query(
    client: TestClient, node: SigningNode, researcher: str
) -> None:
    log_in(client, researcher)
    task_id = run_query(client)
    node.poll()
    node.answer(task_id, answer(30))
    filed = client.post(
        "/ui/requests", data={"task": str(task_id), "node": "st-elsewhere"}, follow_redirects=False
    )
    assert filed.status_code == 303, filed.text
    listed = client.get(filed.headers["location"]).text
    assert "the cohort &#39;dementia with MRI&#39;" in listed
    [request] = client.get("/api/v1/requests", headers=bearer(researcher)).json()
    delivered = [t for t in node.poll() if t["kind"] == "release.request"]
    assert delivered[0]["payload"]["request_id"] == request["id"]


def test_a_statistics_histogram_marks_the_bins_a_node_withheld(
    client: TestClient, node: SigningNode, researcher: str
) -> None:
    log_in(client, researcher)
    task_id = run_query(client, stat_measurement="LOINC:81243-3", stat_bins="15,20,25")
    node.poll()
    answered = answer(40)
    answered["payload"]["statistic"] = {
        "measurement": "LOINC:81243-3",
        "unit": None,
        "by": "all",
        "bin_edges": [15, 20, 25],
        "groups": [
            {
                "group": "all",
                "n": 40,
                "sum": 880.0,
                "sum_squares": 19520.0,
                "histogram": [{"value": 31}, {"withheld": "below_threshold"}],
            }
        ],
    }
    assert node.answer(task_id, answered).json()["state"] == "answered"
    page = client.get(f"/ui/queries/{task_id}").text
    assert 'aria-label="Group all: histogram"' in page
    assert ">15 to 20</text>" in page and ">31</text>" in page
    assert ">20 to 25</text>" in page and ">withheld</text>" in page
    assert "<td>22.00</td>" in page  # the mean, from the sufficient statistics
