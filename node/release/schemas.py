"""What hospital IT reads of data requests, and sends to decide one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.schemas.release import ReleaseState


class HeldFileRead(BaseModel):
    sop_uid: str
    code: str
    reason: str


class SelectionCount(BaseModel):
    """What a request selects on this node, in counts only (no identifier): enough for
    hospital IT to judge it before approving."""

    patients: int
    studies: int
    instances: int
    megabytes: float
    patients_with_records: int = Field(description="Patients whose clinical records go too.")


class ReleaseRequestRead(BaseModel):
    id: int = Field(description="The hub's number for the request.")
    project: str
    profile: str
    requested_by: str
    selection: dict[str, Any]
    state: ReleaseState
    reason: str
    decided_by: str
    studies: int
    held: list[HeldFileRead]
    created_at: dt.datetime
    selects: SelectionCount | None = Field(
        default=None, description="What the selection selects here today (when asked for)."
    )


class Decline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class RejectionRead(BaseModel):
    request_id: int
    study_uid: str
    reason: str
    requested_by: str
    received_at: dt.datetime
