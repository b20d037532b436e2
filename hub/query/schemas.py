"""The network's answer to a cohort query, as the hub serves it."""

from __future__ import annotations

from pydantic import BaseModel


class NetworkFigure(BaseModel):
    """Published counts added up; ``at_least`` when some node withheld its count."""

    value: int
    at_least: bool
    withheld_by: int

    def display(self) -> str:
        return f">={self.value}" if self.at_least else str(self.value)


class GroupSummary(BaseModel):
    group: str
    n: int
    nodes: int
    mean: float | None
    sd: float | None
    median: float | None  # from the pooled histogram
    histogram: list[int]
    histogram_complete: bool  # False when a node withheld a bin


class WelchRead(BaseModel):
    groups: tuple[str, str]
    t: float
    df: float
    p: float  # two-sided
    mean_difference: float  # first group's mean minus the second's


class QueryResult(BaseModel):
    task_id: int
    # node -> pending, deferred, offline, answered, refused, expired, failed
    nodes: dict[str, str]
    answered: int
    # No answer is awaited any more: every node finished, or is offline (an offline node that
    # returns within the TTL still answers, and the figures grow).
    complete: bool
    patients: NetworkFigure
    studies: NetworkFigure
    series: NetworkFigure
    breakdowns: dict[str, dict[str, NetworkFigure]]
    bin_edges: list[float]
    groups: list[GroupSummary]
    welch: WelchRead | None
