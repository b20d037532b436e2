"""Local approval (``query_auto_answer`` off): a query is held and the hub told it waits;
hospital IT reads it in words with the answer the node would give, approves — under the
budget and the differencing guard of that moment — or declines with a reason; all audited."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from common import audit
from common.crypto import SiteSecret
from common.schemas.channel import ResultStatus, TaskResult
from common.schemas.cohort import CohortCountRequest
from node.federation.exceptions import TaskDeferred, TaskRefused
from node.federation.handlers import HandlerContext
from node.query import approval as approvals
from node.query.disclosure import Policy
from node.query.exceptions import ApprovalClosed, InvalidReason
from node.query.handlers import handle_cohort_count
from node.query.models import ApprovalState
from node.query.schemas import QueryApprovalRead
from node.store.db import transaction
from node.store.models import AuditRecord
from tests.conftest import SECRET
from tests.unit.node.query.test_handler_and_seed_comparison import (
    DEMENTIA,
    OTHERS,
    PAYLOAD,
    hospital,
    task,
)

MR_ONLY = {"project": "seed-000", "cohort": {"inclusion": {"kind": "imaging", "modality": ["MR"]}}}
# The same cohort less the one patient whose brain volume is 27.5 (the others' are lower).
MR_LESS_ONE = {
    "project": "seed-000",
    "cohort": {
        "inclusion": {"kind": "imaging", "modality": ["MR"]},
        "exclusion": {"kind": "measurement", "concept": "LOINC:81243-3", "value_min": 27.4},
    },
}


@pytest.fixture
def node(tmp_path: Path, node_with_ontology: Path) -> HandlerContext:
    """30 patients (15 with dementia); answers only after approval, cells from 5, exact."""
    made = hospital(tmp_path, "a", DEMENTIA, OTHERS, node_with_ontology)
    held = made.settings.model_copy(update={"query_auto_answer": False})
    return HandlerContext(settings=held, sessions=made.sessions)


def arrive(node: HandlerContext, payload: dict[str, Any], task_id: int = 1) -> None:
    with pytest.raises(TaskDeferred, match="awaiting approval"):
        handle_cohort_count(task(payload).model_copy(update={"id": task_id}), node)


def reads(node: HandlerContext) -> list[QueryApprovalRead]:
    with transaction(node.sessions) as session:
        return [
            approvals.read(a, session=session, policy=policy(node), secret=SiteSecret(SECRET))
            for a in approvals.pending(session=session)
        ]


def policy(node: HandlerContext) -> Policy:
    return Policy.from_settings(node.settings)


def approve(node: HandlerContext, task_id: int) -> TaskResult:
    with transaction(node.sessions) as session:
        decided = approvals.approve(
            task_id,
            session=session,
            policy=policy(node),
            secret=SiteSecret(SECRET),
            actor="it-admin",
        )
        return TaskResult.model_validate(decided.result)


def actions(node: HandlerContext) -> list[tuple[str, str, dict[str, Any]]]:
    with transaction(node.sessions) as session:
        assert audit.verify(session, AuditRecord).ok
        records = session.execute(select(AuditRecord).order_by(AuditRecord.id)).scalars()
        return [(r.actor, r.action, json.loads(r.details)) for r in records]


def test_a_query_is_held_and_listed_in_words_with_the_answer_the_node_would_give(
    node: HandlerContext,
) -> None:
    arrive(node, {**PAYLOAD, "breakdowns": ["sex"]})

    [held] = reads(node)
    assert (held.task_id, held.project, held.requested_by) == (1, "seed-000", "researcher")
    assert held.state is ApprovalState.AWAITING
    assert held.cohort[:2] == ["patients with", "  an imaging series: modality MR"]
    assert "broken down by sex" in held.cohort
    assert held.answer is not None
    assert held.answer["patients"] == {"value": 30, "withheld": None}
    assert held.refusal == ""
    assert "SK" not in held.model_dump_json()  # no subject key, only aggregates
    assert [a for _, a, _ in actions(node)] == ["query.held"]  # a preview leaves no trace


def test_a_task_delivered_again_is_held_once(node: HandlerContext) -> None:
    arrive(node, MR_ONLY)
    arrive(node, MR_ONLY)
    assert len(reads(node)) == 1


def test_an_approved_query_is_answered_audited_and_counted_against_the_budget(
    node: HandlerContext,
) -> None:
    arrive(node, MR_ONLY)

    result = approve(node, 1)

    assert result.status is ResultStatus.ANSWERED
    assert result.payload["patients"]["value"] == 30
    assert reads(node) == []
    logged = actions(node)
    assert [(actor, action) for actor, action, _ in logged] == [
        ("hub:researcher", "query.held"),
        ("hub:researcher", "query.answered"),
        ("it-admin", "query.approved"),
    ]
    assert logged[-1][2]["answer"]["patients"]["value"] == 30


def test_the_budget_applies_when_a_query_is_approved(node: HandlerContext) -> None:
    node = HandlerContext(
        node.settings.model_copy(update={"query_budget_per_project": 1}), node.sessions
    )
    arrive(node, MR_ONLY, task_id=1)
    arrive(node, PAYLOAD, task_id=2)  # the budget is not spent yet when it arrives
    approve(node, 1)

    [second] = reads(node)
    assert "budget" in second.refusal  # hospital IT sees it coming
    result = approve(node, 2)
    assert (result.status, result.reason) == (
        ResultStatus.REFUSED,
        "the project's query budget at this node (1) is spent",
    )


def test_the_differencing_guard_applies_when_a_query_is_approved(node: HandlerContext) -> None:
    arrive(node, MR_ONLY, task_id=1)
    arrive(node, MR_LESS_ONE, task_id=2)
    approve(node, 1)

    result = approve(node, 2)

    assert result.status is ResultStatus.REFUSED
    assert "differ from an earlier answer" in result.reason
    with transaction(node.sessions) as session:
        assert approvals.require(session=session, task_id=2).state == ApprovalState.REFUSED


def test_a_declined_query_sends_its_reason_and_can_no_longer_be_approved(
    node: HandlerContext,
) -> None:
    arrive(node, MR_ONLY)
    with transaction(node.sessions) as session:
        approvals.decline(
            1, session=session, reason="  not within our ethics approval ", actor="it-admin"
        )

    with transaction(node.sessions) as session:
        declined = approvals.require(session=session, task_id=1)
        result = TaskResult.model_validate(declined.result)
    assert (result.status, result.reason) == (
        ResultStatus.REFUSED,
        "declined by the hospital: not within our ethics approval",
    )
    assert actions(node)[-1][:2] == ("it-admin", "query.declined")
    with pytest.raises(ApprovalClosed, match="declined"):
        approve(node, 1)


def test_a_decline_needs_a_reason(node: HandlerContext) -> None:
    arrive(node, MR_ONLY)
    with transaction(node.sessions) as session, pytest.raises(InvalidReason):
        approvals.decline(1, session=session, reason=" ", actor="it-admin")


def test_a_query_past_its_time_to_live_is_no_longer_listed_nor_approved(
    node: HandlerContext,
) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with transaction(node.sessions) as session:
        approvals.hold(
            CohortCountRequest.model_validate(MR_ONLY),
            task(MR_ONLY).model_copy(update={"expires": past}),
            session=session,
        )
    assert reads(node) == []
    with pytest.raises(ApprovalClosed, match="expired"):
        approve(node, 1)


def test_a_breakdown_the_policy_forbids_is_refused_at_once_not_held(
    node: HandlerContext,
) -> None:
    strict = HandlerContext(
        node.settings.model_copy(update={"query_breakdowns": ["sex"]}), node.sessions
    )
    with pytest.raises(TaskRefused, match="study_year"):
        handle_cohort_count(task({**MR_ONLY, "breakdowns": ["study_year"]}), strict)
    assert reads(node) == []
