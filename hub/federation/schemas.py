"""What researchers send to create a task, and what they read back."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.schemas.channel import KIND_PATTERN
from hub.federation.models import TargetStatus


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern=KIND_PATTERN, max_length=64)
    payload: dict[str, Any] = {}
    project: str | None = Field(
        default=None, description="Required for researchers: a project they are a member of."
    )
    nodes: list[str] | None = Field(
        default=None, description="Node names; every enrolled node when omitted."
    )
    ttl_seconds: int | None = Field(
        default=None, ge=1, le=30 * 24 * 3600, description="The hub's default when omitted."
    )


class TargetRead(BaseModel):
    node: str
    state: TargetStatus = Field(
        description="pending, deferred (the node answers after local approval), offline "
        "(pending at a node not seen lately), answered, refused, expired or failed."
    )
    result: dict[str, Any] | None
    reason: str
    finished_at: dt.datetime | None


class TaskSummaryRead(BaseModel):
    id: int
    kind: str
    project: str | None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    states: dict[str, int] = Field(description="How many nodes are in each state.")


class TaskDetailRead(TaskSummaryRead):
    payload: dict[str, Any]
    targets: list[TargetRead]
