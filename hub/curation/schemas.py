"""What curators and researchers read of received studies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hub.curation.models import StudyState


class StudySummaryRead(BaseModel):
    id: int
    project: str
    node: str
    request_id: int
    subject_key: str
    study_uid: str
    state: StudyState
    files: int
    records: int = Field(default=0, description="Clinical records files (FHIR, OMOP).")
    findings: int
    received_at: dt.datetime


class StudyDetailRead(StudySummaryRead):
    summary: dict[str, Any]
    report: dict[str, Any] = Field(description="The node's de-identification report (PHI-free).")
    scan_findings: list[str]
    reason: str
    reviewed_by: str


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)


class ExportRead(BaseModel):
    project: str
    studies: list[dict[str, Any]]
