"""Attacks on the node's disclosure control: none of them may learn a small count."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.crypto import SiteSecret
from common.schemas.cohort import CohortCountAnswer, CohortCountRequest, Withheld
from node.query import service
from node.query.concepts import Expander
from node.query.disclosure import Policy
from node.query.exceptions import QueryRefused
from node.store.db import transaction
from node.store.models import AuditRecord
from tests.unit.node.query.conftest import Store

D = dt.date
POLICY = Policy(min_cell=10, rounding=5)
ALL_IMAGED = {"inclusion": {"kind": "imaging"}}


def ask(
    sessions: sessionmaker[Session],
    expander: Expander,
    secret: SiteSecret,
    cohort: dict[str, Any],
    policy: Policy = POLICY,
    project: str = "p",
    **extra: object,
) -> CohortCountAnswer:
    request = CohortCountRequest.model_validate({"project": project, "cohort": cohort, **extra})
    with transaction(sessions) as session:
        return service.answer(
            request, session=session, policy=policy, secret=secret, actor="test", expander=expander
        )


def imaged(sessions: sessionmaker[Session], count: int, *, sex: str = "F") -> list[str]:
    with transaction(sessions) as session:
        store = Store(session)
        keys = [store.patient(sex=sex) for _ in range(count)]
        for key in keys:
            store.study(key, D(2021, 1, 1))
    return keys


def test_a_count_below_the_threshold_never_appears_in_the_answer(
    sessions: sessionmaker[Session], expander: Expander, secret: SiteSecret
) -> None:
    imaged(sessions, 7)
    answer = ask(sessions, expander, secret, ALL_IMAGED, breakdowns=["sex"])
    assert answer.patients.value is None
    assert answer.patients.withheld is Withheld.BELOW_THRESHOLD
    assert answer.patients.display(10) == "<10"
    text = answer.model_dump_json()
    assert '"value":7' not in text and answer.breakdowns == {}
    assert answer.studies.value is None and answer.series.value is None


def test_counts_are_rounded_to_the_policy_base(
    sessions: sessionmaker[Session], expander: Expander, secret: SiteSecret
) -> None:
    imaged(sessions, 23)
    assert ask(sessions, expander, secret, ALL_IMAGED).patients.value == 25


def test_repeating_a_noisy_query_returns_the_same_answer(
    sessions: sessionmaker[Session], expander: Expander, secret: SiteSecret
) -> None:
    imaged(sessions, 40)
    noisy = Policy(min_cell=10, rounding=1, noise=8.0)
    answers = {ask(sessions, expander, secret, ALL_IMAGED, noisy).patients.value for _ in range(5)}
    assert len(answers) == 1  # averaging repeats gives nothing new
    other_question = ask(sessions, expander, secret, {**ALL_IMAGED, "name": "renamed"}, noisy)
    assert other_question.patients.value in answers  # a new name is the same question
    seeds = {
        ask(
            sessions,
            expander,
            secret,
            {"inclusion": {"kind": "imaging", "modality": ["MR"]}},
            noisy,
        ).patients.value,
        ask(
            sessions,
            expander,
            SiteSecret(b"another-site-secret-0123456789abcdef"),
            ALL_IMAGED,
            noisy,
        ).patients.value,
    }
    assert answers | seeds != {40}  # the noise is real


def test_two_queries_differing_by_one_patient_the_second_is_refused(
    sessions: sessionmaker[Session], expander: Expander, secret: SiteSecret
) -> None:
    keys = imaged(sessions, 30)
    with transaction(sessions) as session:
        Store(session).condition(keys[0], "G30.9", D(2020, 1, 1))
    first = ask(sessions, expander, secret, ALL_IMAGED)
    assert first.patients.value == 30
    all_but_one = {**ALL_IMAGED, "exclusion": {"kind": "condition", "concept": "ICD10CM:G30"}}
    with pytest.raises(QueryRefused, match="fewer than 10"):
        ask(sessions, expander, secret, all_but_one)
    # Another project has its own history; the same question again is not a difference.
    assert ask(sessions, expander, secret, all_but_one, project="q").patients.value == 30
    assert ask(sessions, expander, secret, ALL_IMAGED).patients.value == 30


def test_a_breakdown_with_one_small_cell_does_not_reveal_it_by_subtraction(
    sessions: sessionmaker[Session], expander: Expander, secret: SiteSecret
) -> None:
    imaged(sessions, 30, sex="F")
    imaged(sessions, 20, sex="M")
    imaged(sessions, 3, sex="O")
    policy = Policy(min_cell=10, rounding=1)
    answer = ask(sessions, expander, secret, ALL_IMAGED, policy, breakdowns=["sex"])
    cells = {c.value: c.patients for c in answer.breakdowns["sex"]}
    assert answer.patients.value == 53
    assert cells["O"].withheld is Withheld.BELOW_THRESHOLD
    assert cells["M"].withheld is Withheld.COMPLEMENTARY  # the smallest other cell goes too
    published = sum(c.value for c in cells.values() if c.value is not None)
    assert answer.patients.value - published == 23  # only the sum of M and O: not 3


def test_the_budget_refuses_when_spent(
    sessions: sessionmaker[Session], expander: Expander, secret: SiteSecret
) -> None:
    imaged(sessions, 12)
    policy = Policy(min_cell=10, budget=2)
    for _ in range(2):
        ask(sessions, expander, secret, ALL_IMAGED, policy)
    with pytest.raises(QueryRefused, match="budget"):
        ask(sessions, expander, secret, ALL_IMAGED, policy)
    assert ask(sessions, expander, secret, ALL_IMAGED, policy, project="other").patients.value


def test_a_statistic_group_below_the_threshold_is_withheld(
    sessions: sessionmaker[Session], expander: Expander, secret: SiteSecret
) -> None:
    keys = imaged(sessions, 25)
    with transaction(sessions) as session:
        store = Store(session)
        for index, key in enumerate(keys):
            store.measurement(key, 1000.0 + index, D(2021, 1, 1))
            if index < 4:
                store.condition(key, "G30.9", D(2020, 1, 1))
    statistic = {
        "measurement": "LOINC:81243-3",
        "split": {"kind": "condition", "concept": "ICD10CM:G30"},
        "bin_edges": [900, 1010, 1100],
    }
    answer = ask(sessions, expander, secret, ALL_IMAGED, statistic=statistic)
    assert answer.statistic is not None
    groups = {g.group: g for g in answer.statistic.groups}
    assert groups["yes"].withheld is Withheld.BELOW_THRESHOLD and groups["yes"].n is None
    # The cohort total is known, so the other group goes too: n would reveal 4 by subtraction.
    assert groups["no"].withheld is Withheld.COMPLEMENTARY


def test_answers_and_refusals_are_audited_with_counts_only(
    sessions: sessionmaker[Session], expander: Expander, secret: SiteSecret
) -> None:
    keys = imaged(sessions, 7)
    answer = ask(sessions, expander, secret, ALL_IMAGED)
    assert answer.patients.value is None
    with transaction(sessions) as session:
        records = session.scalars(select(AuditRecord)).all()
    assert [r.action for r in records] == ["query.answered"]
    details = json.loads(records[0].details)
    assert details["patients"] == "<10"
    assert not any(key in records[0].details for key in keys)
