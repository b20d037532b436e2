"""What the hub's user API accepts and returns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from hub.nodes.schemas import NAME_PATTERN
from hub.users.models import Role


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    role: Role


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    role: Role


class UserCreated(BaseModel):
    user: UserRead
    token: str = Field(description="Shown once; the hub keeps only its keyed hash.")


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str
