"""The node's store: pseudonymized patients, studies, series and instances, their
de-identification reports, rejected arrivals, jobs, the correspondence table and the audit log.

Every column here holds pseudonyms, new UIDs, codes, counts or hashes — never a hospital
identifier, except ``Correspondence.ciphertext``, which is encrypted (AES-GCM) under a key
that lives only in the node's settings.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from common.audit import AuditRecordMixin

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Patient(Base):
    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_key: Mapped[str] = mapped_column(String(64), unique=True)  # stage-1 pseudonym
    sex: Mapped[str] = mapped_column(String(16), default="")
    birth_year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    studies: Mapped[list[Study]] = relationship(
        back_populates="patient", cascade="all, delete-orphan"
    )


class Study(Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)  # stage-1 UID
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), index=True
    )
    study_date: Mapped[dt.date | None] = mapped_column(nullable=True)  # kept at stage 1
    description: Mapped[str] = mapped_column(String(128), default="")  # cleaned
    modalities: Mapped[str] = mapped_column(String(64), default="")  # "MR\\CT"
    patient_age_years: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(
        back_populates="study", cascade="all, delete-orphan"
    )


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    body_part: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(128), default="")  # cleaned
    protocol_name: Mapped[str] = mapped_column(String(128), default="")  # cleaned
    manufacturer: Mapped[str] = mapped_column(String(64), default="")
    model: Mapped[str] = mapped_column(String(64), default="")
    field_strength: Mapped[float | None] = mapped_column(Float, nullable=True)
    slice_thickness: Mapped[float | None] = mapped_column(Float, nullable=True)
    contrast_agent: Mapped[str] = mapped_column(String(64), default="")
    scanning_sequence: Mapped[str] = mapped_column(String(64), default="")
    sequence_variant: Mapped[str] = mapped_column(String(64), default="")
    repetition_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    echo_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    inversion_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    series_date: Mapped[dt.date | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(
        back_populates="series", cascade="all, delete-orphan"
    )


class Instance(Base):
    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    path: Mapped[str] = mapped_column(String(512))  # relative to the node's data folder
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")
    report: Mapped[DeidReport | None] = relationship(
        back_populates="instance", cascade="all, delete-orphan"
    )


class DeidReport(Base):
    """What stage 1 did to an instance: attribute paths and actions, never values."""

    __tablename__ = "deid_report"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("instance.id", ondelete="CASCADE"), unique=True
    )
    profile: Mapped[str] = mapped_column(String(64))
    pixels: Mapped[str] = mapped_column(String(128), default="accepted")
    actions: Mapped[dict[str, list[str]]] = mapped_column(JSON, default=dict)

    instance: Mapped[Instance] = relationship(back_populates="report")


class RejectedInstance(Base):
    """An arrival that was not stored, and why (the reason is PHI-free)."""

    __tablename__ = "rejected_instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    source: Mapped[str] = mapped_column(String(64), default="")  # "c-store from AE", job id
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("job.id", ondelete="SET NULL"), nullable=True, index=True
    )


class JobStatus(str, Enum):
    """Where a selection job stands."""

    # Waiting for the scheduler to pick it up.
    QUEUED = "queued"
    # Querying or retrieving now.
    RUNNING = "running"
    # A step failed and will be tried again after a pause.
    RETRYING = "retrying"
    # Every step finished; the report tells what was found, stored and rejected.
    DONE = "done"
    # Gave up after its retries; the report tells why.
    FAILED = "failed"
    # Stopped by hospital IT.
    CANCELLED = "cancelled"


class Job(Base):
    """A selection job: a PACS query or a list of accession numbers / patient IDs to fetch.

    ``spec`` holds what to fetch; identifiers in it (patient IDs, accession numbers) are
    encrypted like the correspondence table (``spec_ciphertext``), the plain ``spec`` keeps
    only the parts that are not identifying (modality, date range, method).
    """

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # find, retrieve, restore, delete
    status: Mapped[JobStatus] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    spec: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    spec_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    found: Mapped[int] = mapped_column(Integer, default=0)
    retrieved: Mapped[int] = mapped_column(Integer, default=0)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done_items: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )

    studies: Mapped[list[JobStudy]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="JobStudy.position",
    )


class JobStudy(Base):
    """Where one study of a retrieval job stands: one row each, so that recording a study
    writes a row, not the whole job's progress again. Keyed by the study's stage-1 UID (the
    hospital's UIDs stay in the job's encrypted plan)."""

    __tablename__ = "job_study"
    __table_args__ = (UniqueConstraint("job_id", "study_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # in the plan: the order of fetching
    study_key: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # node.jobs.runner.StudyState
    found: Mapped[int] = mapped_column(Integer, default=0)
    series: Mapped[int | None] = mapped_column(Integer, nullable=True)  # narrowed to N series
    retrieved: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")

    job: Mapped[Job] = relationship(back_populates="studies")


class Correspondence(Base):
    """Hospital identifier ↔ pseudonym. Never reachable from the network API.

    ``lookup`` is a keyed hash of the original (so it can be found without decrypting),
    ``ciphertext`` the original under AES-GCM; both use the correspondence key, and
    ``key_id`` names which one, so keys can be rotated.
    """

    __tablename__ = "correspondence"
    __table_args__ = (
        UniqueConstraint("kind", "lookup", name="uq_correspondence_kind_lookup"),
        Index("ix_correspondence_kind_pseudonym", "kind", "pseudonym"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # patient, accession, study, series, instance
    lookup: Mapped[str] = mapped_column(String(64))
    pseudonym: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRecord(AuditRecordMixin, Base):
    __tablename__ = "audit_record"
