"""The hub's side of a federated query: totals, enforcement, pooling, quantiles, Welch."""

from __future__ import annotations

import pytest

from common.schemas.cohort import (
    BreakdownCell,
    CohortCountAnswer,
    Count,
    GroupStatistic,
    Withheld,
)
from hub.query import combine
from hub.query.statistics import Pooled, histogram_quantile, pool, t_two_sided_p, welch

BELOW = Count(withheld=Withheld.BELOW_THRESHOLD)


def answer(patients: Count, sex: dict[str, Count] | None = None) -> CohortCountAnswer:
    return CohortCountAnswer(
        cohort_hash="h",
        min_cell=10,
        rounding=5,
        noisy=False,
        patients=patients,
        studies=patients,
        series=patients,
        breakdowns={"sex": [BreakdownCell(value=k, patients=v) for k, v in (sex or {}).items()]},
    )


def test_a_suppressed_node_count_makes_the_network_total_a_lower_bound_not_a_sum() -> None:
    totals = combine.combine([answer(Count(value=40)), answer(BELOW), answer(Count(value=15))])
    assert (totals.patients.value, totals.patients.at_least) == (55, True)
    assert totals.patients.display() == ">=55"


def test_a_breakdown_value_one_node_does_not_publish_stays_a_lower_bound() -> None:
    a = answer(Count(value=40), {"F": Count(value=25), "M": Count(value=15)})
    b = answer(Count(value=20), {"F": Count(value=20)})
    sex = combine.combine([a, b]).breakdowns["sex"]
    assert (sex["F"].value, sex["F"].at_least) == (45, False)
    assert (sex["M"].value, sex["M"].at_least) == (15, True)


def test_the_hub_withholds_any_count_below_its_own_threshold() -> None:
    lax = answer(Count(value=40), {"F": Count(value=37), "M": Count(value=3)})
    enforced = combine.enforce(lax, 10)
    cells = {c.value: c.patients for c in enforced.breakdowns["sex"]}
    assert cells["M"].value is None and cells["F"].value == 37
    assert combine.enforce(answer(Count(value=4)), 10).patients.value is None


def test_pooled_mean_and_variance_equal_those_of_the_values_together() -> None:
    left, right = [1.0, 2.0, 3.0, 4.0], [10.0, 12.0]
    groups = [
        GroupStatistic(group="g", n=len(v), sum=sum(v), sum_squares=sum(x * x for x in v))
        for v in (left, right)
    ]
    pooled = pool([*groups, GroupStatistic(group="g", withheld=Withheld.BELOW_THRESHOLD)], [0, 1])
    assert (pooled.n, pooled.mean) == (6, pytest.approx(32 / 6))
    values = left + right
    mean = sum(values) / 6
    assert pooled.variance == pytest.approx(sum((x - mean) ** 2 for x in values) / 5)


def test_the_median_of_a_histogram_interpolates_inside_its_bin() -> None:
    assert histogram_quantile([0, 10, 20, 30], [10, 20, 10], 0.5) == pytest.approx(15.0)
    assert histogram_quantile([0, 10, 20, 30], [10, 20, 10], 0.25) == pytest.approx(10.0)
    assert histogram_quantile([0, 10], [4], 0.5) == pytest.approx(5.0)


def test_student_t_two_sided_p_matches_the_tables() -> None:
    assert t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(1.96, 1e6) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)


def sample(values: list[float]) -> Pooled:
    return Pooled(
        n=len(values),
        total=sum(values),
        total_squares=sum(v * v for v in values),
        bin_edges=(),
        histogram=(),
        histogram_complete=True,
        nodes=1,
    )


def test_welch_reproduces_the_textbook_example() -> None:
    # Wikipedia, "Welch's t-test", example 1: t = -2.46, df = 25.0, p = 0.021.
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    test = welch(sample(a1), sample(a2))
    assert (round(test.t, 2), round(test.df, 1), round(test.p, 3)) == (-2.46, 25.0, 0.021)
