"""What the hub's node-registry API returns and accepts."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class NodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)


class NodeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    node_id: str
    name: str
    state: str
    software_version: str
    created_at: dt.datetime
    enrolled_at: dt.datetime | None
    key_rotated_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_seen_at: dt.datetime | None


class NodeCreated(BaseModel):
    node: NodeRead
    enrollment_token: str = Field(description="Shown once: give it to the node's IT.")
    expires_at: dt.datetime
