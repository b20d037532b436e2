"""The cohort builder's form becomes the cohort.count payload a node answers: AND/OR/NOT,
exclusion, time windows, breakdowns and a statistic; problems name the row and the field."""

from __future__ import annotations

import json

import pytest
from starlette.datastructures import ImmutableMultiDict

from common.schemas.cohort import CohortCountRequest
from hub.web.cohort_form import CohortForm, FormProblems, payload


def form(**fields: str | list[str]) -> CohortForm:
    pairs: list[tuple[str, str]] = []
    for name, value in fields.items():
        for single in value if isinstance(value, list) else [value]:
            pairs.append((name, single))
    return CohortForm.from_form(ImmutableMultiDict(pairs))


def test_included_rows_are_combined_with_all_and_a_negated_row_with_not() -> None:
    built = payload(
        form(
            project="dementia-mri",
            rows="3",
            c0_kind="condition",
            c0_concept="icd10cm:G30",
            c1_kind="imaging",
            c1_modality="mr, ct",
            c2_kind="medication",
            c2_role="include_not",
            c2_concept="ATC:N06DA02",
        )
    )
    assert built["cohort"]["inclusion"] == {
        "all": [
            {"kind": "condition", "concept": "icd10cm:G30"},
            {"kind": "imaging", "modality": ["MR", "CT"]},
            {"not": {"kind": "medication", "concept": "ATC:N06DA02"}},
        ]
    }
    CohortCountRequest.model_validate(built)  # what the hub's task creation checks again


def test_any_combines_with_or_and_an_excluding_row_becomes_the_exclusion() -> None:
    built = payload(
        form(
            project="p",
            combine="any",
            rows="3",
            c0_kind="patient",
            c0_sex="F",
            c1_kind="imaging",
            c1_modality="MR",
            c2_kind="condition",
            c2_role="exclude",
            c2_concept="ICD10CM:F03",
        )
    )
    assert built["cohort"]["inclusion"] == {
        "any": [{"kind": "patient", "sex": ["F"]}, {"kind": "imaging", "modality": ["MR"]}]
    }
    assert built["cohort"]["exclusion"] == {"kind": "condition", "concept": "ICD10CM:F03"}


def test_a_row_is_placed_in_time_relative_to_a_named_row() -> None:
    built = payload(
        form(
            project="p",
            rows="2",
            c0_kind="condition",
            c0_concept="ICD10CM:G30",
            c0_id="dementia",
            c1_kind="imaging",
            c1_modality="MR",
            c1_anchor="dementia",
            c1_min_days="0",
            c1_max_days="90",
            c1_occurrence="any",
            c1_age_min="60",
        )
    )
    imaging = built["cohort"]["inclusion"]["all"][1]
    assert imaging["within"] == {
        "anchor": "dementia",
        "min_days": 0,
        "max_days": 90,
        "anchor_occurrence": "any",
    }
    assert imaging["age_min"] == 60


def test_breakdowns_and_a_statistic_split_by_a_condition_are_asked() -> None:
    built = payload(
        form(
            project="p",
            c0_kind="imaging",
            c0_modality="MR",
            breakdown=["sex", "age_band", "nonsense"],
            stat_measurement="LOINC:81243-3",
            stat_bins="15, 20, 25, 30",
            stat_by="split",
            stat_split="ICD10CM:G30",
        )
    )
    assert built["breakdowns"] == ["age_band", "sex"]
    assert built["statistic"] == {
        "measurement": "LOINC:81243-3",
        "bin_edges": [15.0, 20.0, 25.0, 30.0],
        "split": {"kind": "condition", "concept": "ICD10CM:G30"},
    }


def test_problems_name_the_row_and_the_field() -> None:
    with pytest.raises(FormProblems) as raised:
        payload(
            form(
                project="p",
                rows="3",
                c0_kind="condition",
                c1_kind="measurement",
                c1_concept="LOINC:1-8",
                c1_value_min="lots",
                c2_kind="imaging",
                c2_anchor="nowhere",
                c2_max_days="30",
            )
        )
    problems = raised.value.problems
    assert "criterion 1: concept: write SYSTEM:CODE, e.g. ICD10CM:G30" in problems
    assert "criterion 2: value min must be a number" in problems
    assert not any("lots" in problem for problem in problems)  # never echoes the input


def test_a_window_on_a_name_no_row_has_is_refused_for_the_whole_cohort() -> None:
    with pytest.raises(FormProblems) as raised:
        payload(form(project="p", c0_kind="imaging", c0_anchor="nowhere", c0_max_days="30"))
    assert any("'nowhere' names no criterion" in problem for problem in raised.value.problems)


def test_an_empty_form_asks_for_a_criterion_and_a_project() -> None:
    with pytest.raises(FormProblems, match="project"):
        payload(form())
    with pytest.raises(FormProblems, match="at least one criterion"):
        payload(form(project="p"))


def test_a_pasted_definition_is_used_instead_of_the_rows() -> None:
    nested = {
        "inclusion": {
            "all": [
                {"kind": "imaging", "modality": ["MR"]},
                {
                    "any": [
                        {"kind": "condition", "concept": "ICD10CM:G30"},
                        {"kind": "patient", "sex": ["F"]},
                    ]
                },
            ]
        }
    }
    built = payload(form(project="p", c0_kind="imaging", definition=json.dumps(nested)))
    assert built["cohort"] == nested


def test_a_pasted_definition_that_is_not_a_cohort_names_its_path() -> None:
    with pytest.raises(FormProblems) as raised:
        payload(form(project="p", definition='{"inclusion": {"kind": "imaging", "age_min": -1}}'))
    assert raised.value.problems[0].startswith("definition: $.inclusion.age_min")
    with pytest.raises(FormProblems, match="not JSON"):
        payload(form(project="p", definition="{inclusion"))


def test_another_row_is_added_up_to_a_limit() -> None:
    grown = form(rows="3").with_another_row()
    assert len(grown.rows) == 4
    assert len(form(rows="500").rows) == 20
