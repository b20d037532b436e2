"""The hub-node channel: enrollment, tasks and their results (DESIGN.md, decisions 1 and 2).

The channel is generic over task kinds: a task is ``kind`` + ``payload``, a result is a
status + ``payload`` (+ a reason when refused or failed). Each kind defines its own payload
models (``node.status`` below); the channel never looks inside. ``version`` lets either
side refuse a message from a newer protocol it does not understand.

Every payload is aggregate or administrative by contract: no patient-level value travels
here.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CHANNEL_VERSION = 1
API_PREFIX = "/api/v1/channel"
NODE_STATUS = "node.status"

KIND_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1  # CHANNEL_VERSION


class EnrollRequest(_Message):
    """A node's first request: the one-time token and the public key it generated."""

    token: str = Field(min_length=16, max_length=128)
    public_key: str = Field(min_length=40, max_length=64, description="base64, 32 raw bytes")
    software_version: str = Field(default="", max_length=32)


class EnrollResponse(_Message):
    node_id: str
    name: str


class NodeIdentity(_Message):
    """Who the hub takes the signing node to be."""

    node_id: str
    name: str
    state: str
    key_rotated_at: dt.datetime | None = None


class KeyRotation(_Message):
    """A new public key, with a signature by the new key over the rotation statement
    (``common.signing.rotation_statement``); the request itself is signed with the old one."""

    public_key: str = Field(min_length=40, max_length=64)
    proof: str = Field(min_length=40, max_length=128)


class TaskRead(_Message):
    """A task as the node receives it."""

    id: int
    kind: str = Field(pattern=KIND_PATTERN, max_length=64)
    payload: dict[str, Any] = {}
    issued: dt.datetime
    expires: dt.datetime
    project: str | None = Field(default=None, description="The project the task serves.")
    requested_by: str = Field(default="", description="The hub user who created it.")


class TaskList(_Message):
    tasks: list[TaskRead] = []


class ResultStatus(str, Enum):
    """How a node finished a task."""

    # The node ran the task; the payload is its answer.
    ANSWERED = "answered"
    # The node will not run it (unknown kind, local policy); the reason says why.
    REFUSED = "refused"
    # The node tried and could not; the reason names the failure, never a value.
    FAILED = "failed"
    # The node holds the task and answers later (after local approval); the reason says
    # why. The task stays pending at the hub, which no longer hands it to the node.
    DEFERRED = "deferred"


class TaskResult(_Message):
    status: ResultStatus
    payload: dict[str, Any] = {}
    reason: str = Field(default="", max_length=500)


class ResultReceipt(_Message):
    task_id: int
    state: str


# -- the built-in kind: node.status -----------------------------------------------------------


class NodeStatusAnswer(_Message):
    """What ``node.status`` answers: the node's software and how much it holds (counts only)."""

    software_version: str = Field(max_length=32)
    studies: int = Field(ge=0)
    series: int = Field(ge=0)
    instances: int = Field(ge=0)
    policy: NodePolicy | None = None  # the disclosure policy it enforces on queries


class NodePolicy(_Message):
    """A node's disclosure policy for federated queries, as it publishes it to the hub."""

    min_cell: int = Field(ge=1)  # counts below this are never returned
    rounding: int = Field(ge=1)  # counts are multiples of this
    noise: bool  # seeded noise is added to counts
    breakdowns: list[str]  # the breakdowns it answers
    statistics: bool  # whether it answers aggregate statistics
    auto_answer: bool  # False: each query waits for the hospital's approval
    budget_per_project: int = Field(ge=0)  # queries each project may ask
