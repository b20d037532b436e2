"""The true figures of a query, as the engine computes them. They never leave the node:
:mod:`node.query.disclosure` turns them into a ``CohortCountAnswer``."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.schemas.cohort import Breakdown


@dataclass(frozen=True)
class GroupValues:
    """One statistic group: who has a value in it, and those values."""

    members: frozenset[str]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Evaluation:
    patients: frozenset[str]
    studies: int
    series: int
    breakdowns: dict[Breakdown, dict[str, int]] = field(default_factory=dict)
    statistic: dict[str, GroupValues] | None = None
