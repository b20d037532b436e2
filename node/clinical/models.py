"""The clinical fact store: normalized, pseudonymized facts the federated query engine reads.

Every table is on the node's ``Base`` (one database and one Alembic history with the
images) and is written only by :mod:`node.clinical.service`. No column holds a hospital
identifier: patients appear by their stage-1 **subject key**, the same key their DICOM
studies carry in ``patient.subject_key``; ids from the source are keyed hashes.

Tables
------

``person``  one row per patient with clinical data
    ``subject_key`` (unique), ``sex`` (``M``, ``F``, ``O``, ``U`` or empty), ``birth_year``,
    ``death_date``.

``condition``, ``drug``, ``measurement``, ``observation``, ``procedure``, ``visit``  facts
    Shared columns:

    - ``subject_key``: the patient (join ``person.subject_key`` and
      ``patient.subject_key`` of the imaging store);
    - ``system`` + ``code`` (+ ``display``): the coded concept, with standard system URIs:
      ``http://snomed.info/sct``, ``http://loinc.org``,
      ``http://www.nlm.nih.gov/research/umls/rxnorm``, ``http://hl7.org/fhir/sid/icd-10-cm``,
      ``https://ohdsi.org/omop/concept`` (OMOP concept ids, as text). A FHIR concept with
      several codings gives one row per coding, so a query on any of its systems finds it;
    - ``date`` (start) and, where the source has one, ``end_date``. Stage 1 keeps the real
      dates (DESIGN decision 3: "retain longitudinal full dates"), as for the images; the
      per-patient shift is applied at release (stage 2);
    - ``source``: where the fact came from, for idempotent re-imports
      (``fhir:Observation/<keyed hash of the resource id>#<part>`` or
      ``omop:measurement/<keyed hash of the row id>#<part>``), unique per table.

    Extra columns: ``measurement.value_as_number`` and ``unit`` (UCUM where the source says);
    ``observation.value_as_number``, ``value_as_string`` (coded or short values only, never
    free text), ``value_system`` + ``value_code`` and ``unit``.

    Which table a source record lands in: FHIR Condition → condition; MedicationRequest and
    MedicationStatement → drug; Observation with a quantity (or a component with one: one
    row per component) → measurement, any other Observation and DiagnosticReport →
    observation; Procedure → procedure; Encounter → visit. OMOP tables map by name
    (condition_occurrence, drug_exposure, measurement, observation, procedure_occurrence,
    visit_occurrence); OMOP ``death`` and FHIR ``Patient.deceasedDateTime`` set
    ``person.death_date``.

``imaging_study``  FHIR ImagingStudy, linked to the DICOM store
    ``study_uid`` is the stage-1 Study Instance UID, mapped exactly as the DICOM engine maps
    it, so ``imaging_study.study_uid = study.study_uid`` joins the study once its images
    are stored (they may arrive before or after the record). Also ``subject_key``,
    ``date`` (started), ``modalities`` (``MR\\CT``), ``source``.

Indexes serve "patients with code X (and descendants) within N days of Y":
``(system, code, date)`` and ``(subject_key, date)`` on every fact table.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Date, DateTime, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from node.store.models import Base, utcnow

SYSTEM_LENGTH, CODE_LENGTH, DISPLAY_LENGTH, SOURCE_LENGTH = 128, 64, 256, 160


class Person(Base):
    __tablename__ = "person"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_key: Mapped[str] = mapped_column(String(64), unique=True)
    sex: Mapped[str] = mapped_column(String(16), default="")
    birth_year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    death_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class _Fact:
    """The columns every fact table shares."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_key: Mapped[str] = mapped_column(String(64))
    system: Mapped[str] = mapped_column(String(SYSTEM_LENGTH), default="")
    code: Mapped[str] = mapped_column(String(CODE_LENGTH), default="")
    display: Mapped[str] = mapped_column(String(DISPLAY_LENGTH), default="")
    date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH), unique=True)

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Index, ...]:
        name = cls.__tablename__  # type: ignore[attr-defined]
        return (
            Index(f"ix_{name}_system_code_date", "system", "code", "date"),
            Index(f"ix_{name}_subject_key_date", "subject_key", "date"),
        )


class Condition(_Fact, Base):
    __tablename__ = "condition"

    end_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)


class Drug(_Fact, Base):
    __tablename__ = "drug"

    end_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)


class Measurement(_Fact, Base):
    __tablename__ = "measurement"

    value_as_number: Mapped[float | None] = mapped_column(Float, nullable=True)
    unit: Mapped[str] = mapped_column(String(64), default="")


class Observation(_Fact, Base):
    __tablename__ = "observation"

    value_as_number: Mapped[float | None] = mapped_column(Float, nullable=True)
    value_as_string: Mapped[str] = mapped_column(String(DISPLAY_LENGTH), default="")
    value_system: Mapped[str] = mapped_column(String(SYSTEM_LENGTH), default="")
    value_code: Mapped[str] = mapped_column(String(CODE_LENGTH), default="")
    unit: Mapped[str] = mapped_column(String(64), default="")


class Procedure(_Fact, Base):
    __tablename__ = "procedure"

    end_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)


class Visit(_Fact, Base):
    __tablename__ = "visit"

    end_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)


class ImagingStudy(Base):
    __tablename__ = "imaging_study"
    __table_args__ = (Index("ix_imaging_study_subject_key_date", "subject_key", "date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_key: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    modalities: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(SOURCE_LENGTH), unique=True)


FACT_TABLES: dict[str, type[Any]] = {  # the tables share columns, not a base class
    "condition": Condition,
    "drug": Drug,
    "measurement": Measurement,
    "observation": Observation,
    "procedure": Procedure,
    "visit": Visit,
    "imaging_study": ImagingStudy,
}
