"""The query engine on SQLite: criteria, expansion, temporal windows, counts, breakdowns."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.cohort import CohortCountRequest, parse_cohort
from node.query import service
from node.query.concepts import Expander
from node.query.models import SeriesLabel
from node.query.schemas import Evaluation
from node.store.db import transaction
from tests.unit.node.query.conftest import Store

D = dt.date

MR_AFTER_FIRST_G30 = {
    "inclusion": {
        "all": [
            {"kind": "condition", "id": "dementia", "concept": "ICD10CM:G30"},
            {
                "kind": "imaging",
                "modality": ["MR"],
                "within": {"anchor": "dementia", "min_days": 0, "max_days": 90},
            },
        ]
    }
}


def evaluate(
    sessions: sessionmaker[Session], expander: Expander, cohort: dict[str, object], **extra: object
) -> Evaluation:
    request = CohortCountRequest.model_validate({"project": "p", "cohort": cohort, **extra})
    with transaction(sessions) as session:
        return service.evaluate(request, session=session, expander=expander)


def test_an_mr_within_90_days_after_the_first_g30_diagnosis_selects_the_hand_checked_patients(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        inside = store.patient()  # G30.1 (a descendant), MR 30 days later: in
        store.condition(inside, "G30.1", D(2020, 1, 10))
        store.study(inside, D(2020, 2, 9))
        on_the_day = store.patient()  # MR on the day of the diagnosis: in (0 days)
        store.condition(on_the_day, "G30.9", D(2021, 5, 1))
        store.study(on_the_day, D(2021, 5, 1))
        too_late = store.patient()  # MR 91 days after: out
        store.condition(too_late, "G30.0", D(2020, 1, 1))
        store.study(too_late, D(2020, 4, 1))
        before = store.patient()  # MR before the diagnosis only: out
        store.condition(before, "G30.9", D(2020, 6, 1))
        store.study(before, D(2020, 5, 1))
        second_diagnosis = store.patient()  # within 90 days of the second G30 only: out
        store.condition(second_diagnosis, "G30.9", D(2019, 1, 1))
        store.condition(second_diagnosis, "G30.9", D(2020, 1, 1))
        store.study(second_diagnosis, D(2020, 2, 1))
        ct_only = store.patient()  # a CT, not an MR: out
        store.condition(ct_only, "G30.9", D(2020, 1, 1))
        store.study(ct_only, D(2020, 1, 20), series=(("CT", "thorax"),))
        other_code = store.patient()  # F03 is not under G30: out
        store.condition(other_code, "F03.90", D(2020, 1, 1))
        store.study(other_code, D(2020, 1, 20))
    result = evaluate(sessions, expander, MR_AFTER_FIRST_G30)
    assert result.patients == {inside, on_the_day}
    assert (result.studies, result.series) == (2, 2)


def test_any_occurrence_measures_the_window_from_every_diagnosis(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        second_diagnosis = store.patient()
        store.condition(second_diagnosis, "G30.9", D(2019, 1, 1))
        store.condition(second_diagnosis, "G30.9", D(2020, 1, 1))
        store.study(second_diagnosis, D(2020, 2, 1))
    cohort = {
        "inclusion": {
            "all": [
                {"kind": "condition", "id": "dementia", "concept": "ICD10CM:G30"},
                {
                    "kind": "imaging",
                    "within": {"anchor": "dementia", "max_days": 90, "anchor_occurrence": "any"},
                },
            ]
        }
    }
    assert evaluate(sessions, expander, cohort).patients == {second_diagnosis}


def test_exclusion_sex_and_age_at_the_event_narrow_the_cohort(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        old_woman = store.patient(sex="F", birth_year=1940)
        store.study(old_woman, D(2020, 3, 1))
        young_woman = store.patient(sex="F", birth_year=1990)
        store.study(young_woman, D(2020, 3, 1))
        old_man = store.patient(sex="M", birth_year=1940)
        store.study(old_man, D(2020, 3, 1))
        excluded = store.patient(sex="F", birth_year=1940)
        store.study(excluded, D(2020, 3, 1))
        store.condition(excluded, "G30.9", D(2010, 1, 1))
    cohort = {
        "inclusion": {
            "all": [
                {"kind": "patient", "sex": ["F"]},
                {"kind": "imaging", "modality": ["MR"], "age_min": 65},
            ]
        },
        "exclusion": {"kind": "condition", "concept": "ICD10CM:G30"},
    }
    assert evaluate(sessions, expander, cohort).patients == {old_woman}


MR = {"kind": "imaging", "modality": ["MR"]}
CT = {"kind": "imaging", "modality": ["CT"]}
G30 = {"kind": "condition", "concept": "ICD10CM:G30"}
COMBINATIONS = [  # cohort, who is in it (of a: MR + G30, b: MR, c: CT + G30, d: G30)
    ({"inclusion": {"all": [MR, G30]}}, "a"),
    ({"inclusion": {"any": [MR, G30]}}, "abcd"),
    ({"inclusion": G30}, "acd"),
    ({"inclusion": {"all": [G30, {"not": MR}]}}, "cd"),
    ({"inclusion": {"not": MR}}, "cd"),
    ({"inclusion": MR, "exclusion": G30}, "b"),
    ({"inclusion": {"all": [{"any": [MR, CT]}, {"not": G30}]}}, "b"),
    ({"inclusion": {"all": [{"all": [G30, CT]}, {"kind": "patient", "sex": ["F"]}]}}, "c"),
]


@pytest.mark.parametrize(("cohort", "members"), COMBINATIONS)
def test_all_any_and_not_combine_criteria_over_known_patients_only(
    sessions: sessionmaker[Session], expander: Expander, cohort: dict[str, object], members: str
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        keys = {name: store.patient() for name in "abcd"}
        store.study(keys["a"], D(2020, 1, 1))
        store.study(keys["b"], D(2020, 1, 1))
        store.study(keys["c"], D(2020, 1, 1), series=(("CT", "head"),))
        for name in "acd":
            store.condition(keys[name], "G30.9", D(2019, 1, 1))
        store.condition("SK-NOT-ON-RECORD", "G30.9", D(2019, 1, 1))  # a fact, no patient
    found = evaluate(sessions, expander, cohort).patients
    assert found == {keys[name] for name in members}


def test_series_labels_are_derived_once_and_drive_sequence_type_criteria(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        flair = store.patient()
        store.study(flair, D(2021, 1, 1), series=(("MR", "Ax T2 FLAIR"), ("MR", "t1_mprage")))
        t1_only = store.patient()
        store.study(t1_only, D(2021, 1, 1))
    cohort = {"inclusion": {"kind": "imaging", "sequence_type": ["FLAIR"]}}
    result = evaluate(sessions, expander, cohort)
    assert result.patients == {flair}
    assert (result.studies, result.series) == (1, 1)  # only the matching series
    with transaction(sessions) as session:
        assert session.query(SeriesLabel).count() == 3
        assert service.label_new_series(session=session) == 0


def test_a_cohort_without_imaging_criteria_counts_all_studies_of_its_patients(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        key = store.patient()
        store.condition(key, "G30.9", D(2020, 1, 1))
        store.study(key, D(2020, 1, 1), series=(("MR", "t1"), ("MR", "t2")))
        store.study(key, D(2021, 1, 1), series=(("CT", "head"),))
    result = evaluate(
        sessions, expander, {"inclusion": {"kind": "condition", "concept": "ICD10CM:G30"}}
    )
    assert (len(result.patients), result.studies, result.series) == (1, 2, 3)


def test_breakdowns_count_patients_per_value(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        for sex, birth in (("F", 1950), ("F", 1990), ("M", 1950)):
            store.study(store.patient(sex=sex, birth_year=birth), D(2020, 6, 1))
    result = evaluate(
        sessions,
        expander,
        {"inclusion": {"kind": "imaging"}},
        breakdowns=["sex", "age_band", "study_year"],
    )
    assert result.breakdowns["sex"] == {"F": 2, "M": 1}
    assert result.breakdowns["age_band"] == {"60-79": 2, "18-39": 1}
    assert result.breakdowns["study_year"] == {"2020": 3}


def test_a_measurement_criterion_holds_for_values_in_its_range(
    sessions: sessionmaker[Session], expander: Expander
) -> None:
    with transaction(sessions) as session:
        store = Store(session)
        small, large = store.patient(), store.patient()
        store.measurement(small, 900.0, D(2020, 1, 1))
        store.measurement(large, 1300.0, D(2020, 1, 1))
    cohort = {
        "inclusion": {
            "kind": "measurement",
            "concept": "LOINC:81243-3",
            "value_max": 1000,
            "unit": "mL",
        }
    }
    assert evaluate(sessions, expander, cohort).patients == {small}


def test_parse_cohort_names_the_json_path_of_a_mistake_and_not_the_value() -> None:
    bad = {
        "inclusion": {
            "all": [{"kind": "imaging", "within": {"anchor": "x", "max_days": 1, "min_days": 9}}]
        }
    }
    try:
        parse_cohort(bad)
    except ValueError as error:
        assert "$.inclusion.all[0].within" in str(error)
        assert "min_days must not exceed max_days" in str(error)
    else:
        raise AssertionError("an inverted window was accepted")
