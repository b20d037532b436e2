"""What researchers send to request data, and what they read back."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from common.schemas.release import ReleaseState, Selection


class RequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(max_length=64)
    selection: Selection
    profile: str = Field(default="anonymize", pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)
    nodes: list[str] | None = Field(
        default=None, description="Node names; every enrolled node when omitted."
    )
    ttl_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)


class RequestTargetRead(BaseModel):
    node: str
    state: ReleaseState
    reason: str
    studies: int
    held: int
    updated_at: dt.datetime


class RequestRead(BaseModel):
    id: int
    project: str
    created_by: str
    profile: str
    task_id: int | None
    created_at: dt.datetime
    targets: list[RequestTargetRead]
