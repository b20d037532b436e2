"""The DICOMweb index of a project's workspace: the header attributes that searches match
and return, per study, series and instance, built from the accepted studies' files.

Text columns rather than VR-sized strings: the values come from released files, and an
over-long value must not stop a study from being served.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hub.db import Base, utcnow


class IndexedStudy(Base):
    """An accepted study as DICOMweb serves it; rebuilt when its files' digest changes."""

    __tablename__ = "dicomweb_study"
    __table_args__ = (
        UniqueConstraint("project_id", "study_uid", name="uq_dicomweb_study_project_study"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_study_id: Mapped[int] = mapped_column(
        ForeignKey("received_study.id", ondelete="CASCADE"), unique=True
    )
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    content_sha256: Mapped[str] = mapped_column(Text)  # of the files this index was read from
    study_uid: Mapped[str] = mapped_column(Text)
    patient_id: Mapped[str] = mapped_column(Text, default="")  # the project's subject key
    patient_name: Mapped[str] = mapped_column(Text, default="")
    study_date: Mapped[str] = mapped_column(Text, default="")  # YYYYMMDD: ranges compare text
    study_time: Mapped[str] = mapped_column(Text, default="")
    accession_number: Mapped[str] = mapped_column(Text, default="")
    study_id: Mapped[str] = mapped_column(Text, default="")  # the StudyID attribute
    study_description: Mapped[str] = mapped_column(Text, default="")
    header: Mapped[dict[str, Any]] = mapped_column(JSON)  # patient and study attributes
    indexed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    series: Mapped[list[IndexedSeries]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True
    )


class IndexedSeries(Base):
    __tablename__ = "dicomweb_series"
    __table_args__ = (
        UniqueConstraint("study_pk", "series_uid", name="uq_dicomweb_series_study_series"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("dicomweb_study.id", ondelete="CASCADE"))
    series_uid: Mapped[str] = mapped_column(Text)
    modality: Mapped[str] = mapped_column(Text, default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(Text, default="")
    header: Mapped[dict[str, Any]] = mapped_column(JSON)  # series attributes

    study: Mapped[IndexedStudy] = relationship(back_populates="series")
    instances: Mapped[list[IndexedInstance]] = relationship(
        back_populates="series", cascade="all, delete-orphan", passive_deletes=True
    )


class IndexedInstance(Base):
    __tablename__ = "dicomweb_instance"
    __table_args__ = (
        UniqueConstraint("series_pk", "sop_uid", name="uq_dicomweb_instance_series_sop"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("dicomweb_series.id", ondelete="CASCADE"))
    sop_uid: Mapped[str] = mapped_column(Text)
    sop_class_uid: Mapped[str] = mapped_column(Text, default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(Text)
    storage_key: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    # Every attribute in DICOM JSON, bulk data as relative BulkDataURIs ("bulkdata/7FE00010").
    header: Mapped[dict[str, Any]] = mapped_column(JSON)

    series: Mapped[IndexedSeries] = relationship(back_populates="instances")
