"""The true figures of a query, as the engine computes them — they never leave the node:
:mod:`node.query.disclosure` turns them into a ``CohortCountAnswer`` — and what hospital IT
reads of the queries that wait for its approval."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.schemas.cohort import Breakdown
from node.query.models import ApprovalState


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


class QueryApprovalRead(BaseModel):
    """A query held for approval: what it asks, in words, and what the node answers."""

    task_id: int = Field(description="The hub's task number.")
    project: str
    requested_by: str = Field(description="The hub user who asked.")
    received_at: dt.datetime
    expires_at: dt.datetime = Field(description="No answer is taken after this.")
    state: ApprovalState
    question_hash: str
    cohort: list[str] = Field(description="The request in words, one line per criterion.")
    request: dict[str, Any] = Field(description="The cohort.count payload as asked.")
    answer: dict[str, Any] | None = Field(
        description="Awaiting: the answer the node would give now (disclosure-controlled, "
        "as it would leave); approved: the answer sent."
    )
    refusal: str = Field(
        description="Awaiting: why disclosure control would refuse it now (budget, "
        "differencing); refused or declined: the reason sent."
    )
    decided_by: str
    decided_at: dt.datetime | None
    sent_at: dt.datetime | None = Field(description="When the hub took the decision.")
    hub_reply: str = Field(description="What the hub said of it (its state, or why not).")


class Decline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=400, description="Sent to the hub: no patient data."
    )
