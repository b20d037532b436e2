"""The task kinds the hub will send: who may create each, and what its payload and its
answers must look like. Later work (cohort queries, catalogue, releases) registers its kinds
here; the channel itself never changes.

Answers are validated against the kind's model before they are stored, so a node can never
slip a patient-level field into the hub by answering with more than the kind allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from common.schemas.channel import NODE_STATUS, NodeStatusAnswer
from common.schemas.cohort import COHORT_COUNT, CohortCountAnswer, CohortCountRequest
from common.schemas.release import (
    RELEASE_REJECTED,
    RELEASE_REQUEST,
    RejectionReceived,
    ReleaseReceived,
    ReleaseRejectedPayload,
    ReleaseRequestPayload,
)
from hub.query.service import present_answer
from hub.users.models import Role


class EmptyPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TaskKind:
    name: str
    payload: type[BaseModel]
    answer: type[BaseModel]
    # Roles that may create it; researchers only for projects they are members of.
    roles: frozenset[Role]
    # How a stored answer is shown (the hub's own disclosure control); as stored if None.
    present: Callable[[dict[str, Any]], dict[str, Any]] | None = None


_KINDS: dict[str, TaskKind] = {}


def register(kind: TaskKind) -> None:
    _KINDS[kind.name] = kind


def get(name: str) -> TaskKind | None:
    return _KINDS.get(name)


def names() -> list[str]:
    return sorted(_KINDS)


register(
    TaskKind(
        name=NODE_STATUS,
        payload=EmptyPayload,
        answer=NodeStatusAnswer,
        roles=frozenset({Role.RESEARCHER, Role.ADMIN}),
    )
)

register(
    TaskKind(
        name=COHORT_COUNT,
        payload=CohortCountRequest,
        answer=CohortCountAnswer,
        roles=frozenset({Role.RESEARCHER, Role.ADMIN}),
        present=present_answer,
    )
)

# Data release (hub/release): researchers file requests through /api/v1/requests, which
# creates this task; curators' rejections go back to the node as the second kind.
register(
    TaskKind(
        name=RELEASE_REQUEST,
        payload=ReleaseRequestPayload,
        answer=ReleaseReceived,
        roles=frozenset({Role.RESEARCHER, Role.ADMIN}),
    )
)

register(
    TaskKind(
        name=RELEASE_REJECTED,
        payload=ReleaseRejectedPayload,
        answer=RejectionReceived,
        roles=frozenset({Role.CURATOR, Role.ADMIN}),
    )
)
