"""A ``cohort.count`` task's answers, as researchers see them: each node's answer with the
hub's own threshold enforced again, and the network figures combined from them."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from common.schemas.cohort import CohortCountAnswer, CohortCountRequest
from hub.federation import service as federation
from hub.federation.models import AWAITED, OFFLINE_AFTER, TargetState, Task
from hub.query.combine import NetworkCount, combine, enforce, pooled_groups
from hub.query.schemas import GroupSummary, NetworkFigure, QueryResult, WelchRead
from hub.query.statistics import welch

HUB_MIN_CELL = 10


def present_answer(result: dict[str, Any]) -> dict[str, Any]:
    """A node's stored answer with every count below the hub's threshold withheld."""
    answer = CohortCountAnswer.model_validate(result)
    return enforce(answer, max(HUB_MIN_CELL, answer.min_cell)).model_dump(mode="json")


def _figure(count: NetworkCount) -> NetworkFigure:
    return NetworkFigure(value=count.value, at_least=count.at_least, withheld_by=count.withheld_by)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def result(
    task: Task,
    *,
    now: dt.datetime | None = None,
    offline_after: dt.timedelta = OFFLINE_AFTER,
) -> QueryResult:
    """The combined answer of the nodes that answered so far; complete when no node that
    was seen lately is still to answer."""
    request = CohortCountRequest.model_validate(task.payload)
    answers = [
        CohortCountAnswer.model_validate(present_answer(target.result))
        for target in task.targets
        if TargetState(target.state) is TargetState.ANSWERED and target.result is not None
    ]
    statuses = federation.statuses(task, now=now, offline_after=offline_after)
    totals = combine(answers)
    groups: list[GroupSummary] = []
    test: WelchRead | None = None
    statistics = [a.statistic for a in answers if a.statistic is not None]
    if request.statistic is not None and statistics:
        pooled = pooled_groups(statistics)
        groups = [
            GroupSummary(
                group=name,
                n=p.n,
                nodes=p.nodes,
                mean=_finite(p.mean) if p.n else None,
                sd=_finite(math.sqrt(p.variance)) if p.n > 1 else None,
                median=_finite(p.quantile(0.5)) if sum(p.histogram) else None,
                histogram=list(p.histogram),
                histogram_complete=p.histogram_complete,
            )
            for name, p in pooled.items()
        ]
        if len(pooled) == 2:
            first, second = pooled.values()
            try:
                found = welch(first, second)
            except ValueError:
                found = None
            if found is not None:
                names = list(pooled)
                test = WelchRead(
                    groups=(names[0], names[1]),
                    t=found.t,
                    df=found.df,
                    p=found.p,
                    mean_difference=found.mean_difference,
                )
    return QueryResult(
        task_id=task.id,
        nodes={name: status.value for name, status in statuses.items()},
        answered=len(answers),
        complete=not AWAITED.intersection(statuses.values()),
        patients=_figure(totals.patients),
        studies=_figure(totals.studies),
        series=_figure(totals.series),
        breakdowns={
            name: {value: _figure(count) for value, count in cells.items()}
            for name, cells in totals.breakdowns.items()
        },
        bin_edges=request.statistic.bin_edges if request.statistic is not None else [],
        groups=groups,
        welch=test,
    )
