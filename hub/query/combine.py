"""Node answers to ``cohort.count`` → network figures, with the hub's own enforcement.

A withheld count is not a number: a node that says "<10" may hold 0 or 9 patients, and a
complementarily withheld cell may hold more. So a network total is the sum of the published
counts and, when any node withheld its count, a *lower bound* (``at_least``), never a sum
with a guessed value.

:func:`enforce` is the hub's second line (DESIGN.md, decision 7): whatever a node's policy
says, a published count below the hub's minimum cell size is dropped before anyone sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common.schemas.cohort import (
    BreakdownCell,
    CohortCountAnswer,
    Count,
    GroupStatistic,
    StatisticAnswer,
    Withheld,
)
from hub.query.statistics import Pooled, pool

logger = logging.getLogger(__name__)


def _enforced(count: Count, min_cell: int) -> Count:
    if count.value is not None and count.value < min_cell:
        return Count(withheld=Withheld.BELOW_THRESHOLD)
    return count


def _enforced_group(group: GroupStatistic, min_cell: int) -> GroupStatistic:
    if group.withheld is not None:
        return group
    if group.n is None or group.n < min_cell:
        return GroupStatistic(group=group.group, withheld=Withheld.BELOW_THRESHOLD)
    return group.model_copy(
        update={
            "histogram": [_enforced(c, min_cell) for c in group.histogram],
            "below": _enforced(group.below, min_cell) if group.below else None,
            "above": _enforced(group.above, min_cell) if group.above else None,
        }
    )


def enforce(answer: CohortCountAnswer, min_cell: int) -> CohortCountAnswer:
    """``answer`` with every count below ``min_cell`` withheld (the hub's own check)."""
    patients = _enforced(answer.patients, min_cell)
    if patients.value is None:
        hidden = Count(withheld=Withheld.BELOW_THRESHOLD)
        return answer.model_copy(
            update={
                "patients": patients,
                "studies": hidden,
                "series": hidden,
                "breakdowns": {},
                "statistic": None,
            }
        )
    breakdowns = {
        name: [
            BreakdownCell(value=cell.value, patients=_enforced(cell.patients, min_cell))
            for cell in cells
        ]
        for name, cells in answer.breakdowns.items()
    }
    statistic = answer.statistic
    if statistic is not None:
        statistic = statistic.model_copy(
            update={"groups": [_enforced_group(g, min_cell) for g in statistic.groups]}
        )
    return answer.model_copy(
        update={
            "patients": patients,
            "studies": _enforced(answer.studies, min_cell),
            "series": _enforced(answer.series, min_cell),
            "breakdowns": breakdowns,
            "statistic": statistic,
        }
    )


@dataclass(frozen=True)
class NetworkCount:
    """The sum of the published counts; ``at_least`` when some node withheld its count."""

    value: int
    at_least: bool
    withheld_by: int  # how many answers withheld this count

    def display(self) -> str:
        return f">={self.value}" if self.at_least else str(self.value)


def total(counts: Iterable[Count]) -> NetworkCount:
    published = 0
    withheld = 0
    for count in counts:
        if count.value is None:
            withheld += 1
        else:
            published += count.value
    return NetworkCount(value=published, at_least=withheld > 0, withheld_by=withheld)


@dataclass(frozen=True)
class NetworkTotals:
    patients: NetworkCount
    studies: NetworkCount
    series: NetworkCount
    breakdowns: dict[str, dict[str, NetworkCount]]


def combine(answers: Iterable[CohortCountAnswer]) -> NetworkTotals:
    """Network totals and breakdowns; a value missing from a node's breakdown counts as
    withheld there when the node published its total (it may hide in a suppressed cell)."""
    listed = list(answers)
    names = sorted({name for a in listed for name in a.breakdowns})
    breakdowns: dict[str, dict[str, NetworkCount]] = {}
    for name in names:
        values = sorted({c.value for a in listed for c in a.breakdowns.get(name, [])})
        per_value: dict[str, list[Count]] = {v: [] for v in values}
        for a in listed:
            cells = {c.value: c.patients for c in a.breakdowns.get(name, [])}
            for value in values:
                per_value[value].append(cells.get(value, Count(withheld=Withheld.BELOW_THRESHOLD)))
        breakdowns[name] = {v: total(per_value[v]) for v in values}
    return NetworkTotals(
        patients=total(a.patients for a in listed),
        studies=total(a.studies for a in listed),
        series=total(a.series for a in listed),
        breakdowns=breakdowns,
    )


def pooled_groups(statistics: Iterable[StatisticAnswer]) -> dict[str, Pooled]:
    """Per group, the nodes' sufficient statistics added up (withheld groups left out)."""
    by_group: dict[str, list[GroupStatistic]] = {}
    edges: list[float] | None = None
    for answer in statistics:
        if edges is None:
            edges = answer.bin_edges
        elif answer.bin_edges != edges:
            raise ValueError("the answers were computed on different bin edges")
        for group in answer.groups:
            by_group.setdefault(group.group, []).append(group)
    return {
        name: pool(groups, edges or [])
        for name, groups in sorted(by_group.items())
        if any(g.withheld is None for g in groups)
    }


def group_counts(pooled: Mapping[str, Pooled]) -> dict[str, int]:
    return {name: p.n for name, p in pooled.items()}
