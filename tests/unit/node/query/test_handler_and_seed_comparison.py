"""``cohort.count`` end to end: node handlers answer, the hub combines, Welch's test compares.

Seed 000 compares brain volume between patients with and without a dementia diagnosis. The
values are the two samples of Welch's t-test's first worked example (Wikipedia, "Welch's
t-test"): t = -2.46, df = 25.0, p = 0.021; here they are split over two hospitals.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.channel import TaskRead
from common.schemas.cohort import COHORT_COUNT, CohortCountAnswer
from hub.query import combine
from hub.query.statistics import welch
from node.federation.exceptions import TaskRefused
from node.federation.handlers import HandlerContext
from node.query.handlers import handle_cohort_count
from node.settings import NodeSettings
from node.store.db import transaction
from tests.conftest import SECRET
from tests.unit.node.query.conftest import Store, sqlite_sessions

DEMENTIA = [
    27.5,
    21.0,
    19.0,
    23.6,
    17.0,
    17.9,
    16.9,
    20.1,
    21.9,
    22.6,
    23.1,
    19.6,
    19.0,
    21.7,
    21.4,
]
OTHERS = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]

PAYLOAD = {
    "project": "seed-000",
    "cohort": {"inclusion": {"kind": "imaging", "modality": ["MR"]}},
    "statistic": {
        "measurement": "LOINC:81243-3",
        "split": {"kind": "condition", "concept": "ICD10CM:G30"},
        "bin_edges": [15, 20, 25, 30],
    },
}


def task(payload: dict[str, object], project: str = "seed-000") -> TaskRead:
    now = dt.datetime.now(dt.UTC)
    return TaskRead(
        id=1,
        kind=COHORT_COUNT,
        payload=payload,
        issued=now,
        expires=now + dt.timedelta(hours=1),
        project=project,
        requested_by="researcher",
    )


def hospital(
    tmp_path: Path, name: str, dementia: list[float], others: list[float], template: Path
) -> HandlerContext:
    settings = NodeSettings(
        data_dir=tmp_path / name,
        site_secret=SECRET.decode(),
        query_min_cell=5,
        query_rounding=1,
    )
    shutil.copyfile(template, tmp_path / f"{name}.db")  # with the ontology: G30 covers G30.1
    sessions: sessionmaker[Session] = sqlite_sessions(tmp_path / f"{name}.db")
    with transaction(sessions) as session:
        store = Store(session)
        for values, demented in ((dementia, True), (others, False)):
            for value in values:
                key = store.patient()
                store.study(key, dt.date(2022, 3, 1))
                store.measurement(key, value - 1.0, dt.date(2020, 1, 1))  # an older value
                store.measurement(key, value, dt.date(2022, 3, 1))  # the latest one counts
                if demented:
                    store.condition(key, "G30.1", dt.date(2021, 6, 1))
    return HandlerContext(settings=settings, sessions=sessions)


def test_two_hospitals_answer_and_the_hub_reproduces_the_textbook_welch_test(
    tmp_path: Path, node_with_ontology: Path
) -> None:
    nodes = [
        hospital(tmp_path, "a", DEMENTIA[:8], OTHERS[:7], node_with_ontology),
        hospital(tmp_path, "b", DEMENTIA[8:], OTHERS[7:], node_with_ontology),
    ]
    answers = [
        combine.enforce(CohortCountAnswer.model_validate(handle_cohort_count(task(PAYLOAD), n)), 5)
        for n in nodes
    ]
    totals = combine.combine(answers)
    assert (totals.patients.value, totals.patients.at_least) == (30, False)
    pooled = combine.pooled_groups(a.statistic for a in answers if a.statistic is not None)
    assert (pooled["yes"].n, pooled["no"].n) == (15, 15)
    assert pooled["yes"].mean == pytest.approx(sum(DEMENTIA) / 15)
    test = welch(pooled["yes"], pooled["no"])
    assert test.t == pytest.approx(-2.46, abs=0.005)
    assert test.df == pytest.approx(25.0, abs=0.05)
    assert test.p == pytest.approx(0.021, abs=0.0005)


def test_a_node_refuses_a_breakdown_its_policy_does_not_allow(
    tmp_path: Path, node_with_ontology: Path
) -> None:
    node = hospital(tmp_path, "a", DEMENTIA, OTHERS, node_with_ontology)
    strict = node.settings.model_copy(update={"query_breakdowns": ["sex"]})
    context = HandlerContext(settings=strict, sessions=node.sessions)
    with pytest.raises(TaskRefused, match="study_year"):
        handle_cohort_count(task({**PAYLOAD, "breakdowns": ["study_year"]}), context)


def test_a_malformed_payload_is_refused_naming_the_field(
    tmp_path: Path, node_with_ontology: Path
) -> None:
    node = hospital(tmp_path, "a", [], [], node_with_ontology)
    payload = {**PAYLOAD, "cohort": {"inclusion": {"kind": "imaging", "contrast": "perhaps"}}}
    with pytest.raises(TaskRefused, match="contrast"):
        handle_cohort_count(task(payload), node)
