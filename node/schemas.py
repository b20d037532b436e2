"""What the node's API returns (and the one body it accepts), documented for hospital IT.

Every field holds a pseudonym, a stage-1 UID, a code, a count or a date kept by stage 1:
nothing here can carry a hospital identifier, and nothing reads the correspondence table.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from node.store.models import JobStatus


class HealthRead(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class StoreCountsRead(BaseModel):
    """How much the node holds."""

    patients: int
    studies: int
    series: int
    instances: int
    rejected: int = Field(description="Arrivals that were not stored (see their reasons).")
    queued_jobs: int


class DicomListenerRead(BaseModel):
    """Where the PACS and modalities send images (C-STORE)."""

    ae_title: str
    host: str
    port: int


class StatusRead(BaseModel):
    counts: StoreCountsRead
    ingest: dict[str, int] = Field(
        description="Counters of the stage-1 ingest pipeline since the node started."
    )
    dicom: DicomListenerRead


# -- jobs ------------------------------------------------------------------------------------


class RetrieveMethod(str, Enum):
    """How images come from the PACS."""

    # The PACS sends them to the node's own DICOM server (C-MOVE).
    MOVE = "move"
    # The PACS sends them on the node's own association (C-GET).
    GET = "get"


class RetrieveJobCreate(BaseModel):
    """Fetch from a PACS what matches: identifiers, a query, or both (all criteria apply).

    Patient IDs and accession numbers are hospital identifiers: the node keeps them
    encrypted and never returns them (a job shows how many there were, not which).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["retrieve"] = "retrieve"
    pacs: str | None = Field(
        default=None, description="Name of a PACS in the node's settings; the first if omitted."
    )
    method: RetrieveMethod = RetrieveMethod.MOVE
    patient_ids: list[str] = Field(default=[], max_length=100_000)
    accession_numbers: list[str] = Field(default=[], max_length=100_000)
    modality: str = Field(default="", max_length=16)
    study_description: str = Field(default="", max_length=64, description="Wildcards * and ?.")
    protocol_name: str = Field(default="", max_length=64)
    date_from: dt.date | None = None
    date_to: dt.date | None = None


class DeleteJobCreate(BaseModel):
    """Remove patients' data from the node's store; a restore job can fetch it again."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["delete"]
    subject_keys: list[str] = Field(min_length=1, max_length=100_000)
    project: str | None = None


class RestoreJobCreate(BaseModel):
    """Fetch again what a clean-up removed, with the same pseudonyms and UIDs."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["restore"]
    subject_keys: list[str] = Field(default=[], max_length=100_000)
    study_uids: list[str] = Field(default=[], max_length=100_000)
    restore_of: int | None = Field(default=None, description="A clean-up job to undo.")
    pacs: str | None = None
    method: RetrieveMethod = RetrieveMethod.MOVE


def _job_kind(value: object) -> str:
    """The kind of job a body asks for; a body without one is a retrieval."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return str(kind or "retrieve")


JobCreate = Annotated[
    Annotated[RetrieveJobCreate, Tag("retrieve")]
    | Annotated[DeleteJobCreate, Tag("delete")]
    | Annotated[RestoreJobCreate, Tag("restore")],
    Discriminator(_job_kind),
]


class RejectionRead(BaseModel):
    """Why instances of a job were not stored (PHI-free), and how many."""

    code: str
    reason: str
    count: int


class JobRead(BaseModel):
    """A job's progress and report (found / retrieved / stored / rejected)."""

    id: int
    kind: str
    status: JobStatus
    spec: dict[str, Any] = Field(description="The non-identifying part of the selection.")
    attempts: int
    total: int
    done_items: int
    found: int
    retrieved: int
    stored: int
    rejected: int
    report: dict[str, Any] = Field(description="Per-job report, with PHI-free reasons.")
    error: str
    created_at: dt.datetime
    updated_at: dt.datetime
    next_attempt_at: dt.datetime | None


class JobDetailRead(JobRead):
    rejections: list[RejectionRead] = Field(
        description="Why instances of this job were not stored, most frequent first."
    )


# -- the pseudonymized store ----------------------------------------------------------------


class StudyRead(BaseModel):
    """A study as stage 1 stored it: subject key and UIDs are pseudonyms."""

    study_uid: str
    subject_key: str
    study_date: dt.date | None
    description: str
    modalities: list[str]
    patient_age_years: int | None
    series_count: int
    instance_count: int


class SeriesRead(BaseModel):
    series_uid: str
    study_uid: str
    modality: str
    body_part: str
    description: str
    protocol_name: str
    manufacturer: str
    model: str
    field_strength: float | None
    slice_thickness: float | None
    series_date: dt.date | None
    instance_count: int


class InstanceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    size: int
    sha256: str
    transfer_syntax_uid: str
    received_at: dt.datetime


# -- the QA preview -------------------------------------------------------------------------


class AttributeRead(BaseModel):
    """One attribute: what stage 1 did to it, and what the stored file now holds."""

    path: str = Field(description='Keyword or tag, with sequence items: "Seq[0].Keyword".')
    action: str = Field(
        description="kept, removed, emptied, uid-mapped, cleaned, subject-key, set, …"
    )
    value: str | None = Field(
        description="The value in the stored (pseudonymized) file, where it may be shown."
    )
    withheld: bool = Field(
        description="True for identifiers: the action is shown, the value never is."
    )


class PreviewRead(BaseModel):
    """The attribute-by-attribute before/after of stage 1 for one instance."""

    sop_uid: str
    series_uid: str
    study_uid: str
    subject_key: str
    profile: str
    pixels: str = Field(description="What stage 1 decided on the pixels (accepted, blanked …).")
    burned_in_annotation: str | None = Field(
        description="The BurnedInAnnotation attribute of the stored file, if any."
    )
    transfer_syntax_uid: str
    summary: dict[str, int] = Field(description="How many attributes got each action.")
    attributes: list[AttributeRead]
