"""Building the DICOMweb index of a project's workspace from central storage.

An accepted study is indexed the first time a DICOMweb request reaches its project (no hook
in curation): each of its files is read from storage once, one at a time, and its header
kept as DICOM JSON with bulk data left as references. A study whose files changed since
(its content digest differs) is indexed again.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import ImplicitVRLittleEndian
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hub.curation import service as curation
from hub.curation.models import ReceivedStudy, StudyState
from hub.dicomweb.models import IndexedInstance, IndexedSeries, IndexedStudy
from hub.dicomweb.schemas import tag_of
from hub.storage.exceptions import ObjectNotFound
from hub.storage.service import Storage
from hub.users.models import Project

logger = logging.getLogger(__name__)

PIXEL_DATA = 0x7FE00010
#: Binary values longer than this are left out of headers and served as bulk data.
BULK_DATA_THRESHOLD = 1024
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Larger than any value: nested binary values stay inline (their BulkDataURI would need a
# path into the sequence, which the bulkdata route does not take).
_INLINE_EVERYTHING = 1 << 62

#: Patient and study attributes kept with the study (what study searches can return).
STUDY_ATTRIBUTES = frozenset(
    tag_of(keyword)
    for keyword in (
        "SpecificCharacterSet",
        "TimezoneOffsetFromUTC",
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "EthnicGroup",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
        "LongitudinalTemporalInformationModified",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "ProcedureCodeSequence",
        "ClinicalTrialSponsorName",
        "ClinicalTrialProtocolID",
        "ClinicalTrialProtocolName",
        "ClinicalTrialSiteID",
        "ClinicalTrialSubjectID",
        "ClinicalTrialTimePointID",
    )
)

#: Series attributes kept with the series.
SERIES_ATTRIBUTES = frozenset(
    tag_of(keyword)
    for keyword in (
        "SpecificCharacterSet",
        "TimezoneOffsetFromUTC",
        "Modality",
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "ProtocolName",
        "Laterality",
        "Manufacturer",
        "ManufacturerModelName",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RequestAttributesSequence",
    )
)


def pending(*, session: Session, project: Project) -> list[int]:
    """Accepted studies of the project that are not indexed, or were indexed from other files."""
    rows = session.execute(
        select(ReceivedStudy.id)
        .outerjoin(IndexedStudy, IndexedStudy.received_study_id == ReceivedStudy.id)
        .where(
            ReceivedStudy.project_id == project.id,
            ReceivedStudy.state == StudyState.ACCEPTED,
            (IndexedStudy.id.is_(None))
            | (IndexedStudy.content_sha256 != ReceivedStudy.content_sha256),
        )
        .order_by(ReceivedStudy.id)
    )
    return list(rows.scalars())


def index_study(*, session: Session, storage: Storage, received_study_id: int) -> IndexedStudy:
    """Read the study's files from the workspace and (re)build its index rows."""
    received = curation.require(session=session, study_id=received_study_id)
    project = session.get(Project, received.project_id)
    assert project is not None  # the foreign key cascades
    session.execute(delete(IndexedStudy).where(IndexedStudy.received_study_id == received.id))
    study = IndexedStudy(
        received_study_id=received.id,
        project_id=project.id,
        content_sha256=received.content_sha256,
        study_uid=received.study_uid,
        header={},
    )
    prefix = curation.workspace_prefix(project.name, received.subject_key, received.study_uid)
    series: dict[str, IndexedSeries] = {}
    files = sorted(received.manifest.get("files", []), key=lambda entry: entry["path"])
    unreadable = 0
    for entry in files:
        key = f"{prefix}/{entry['path']}"
        ds = _read(storage, key)
        if ds is None:
            unreadable += 1
            continue
        header = header_json(ds)
        if not study.header:
            _describe_study(study, ds, header)
        series_uid = text(ds, "SeriesInstanceUID")
        if series_uid not in series:
            series[series_uid] = _new_series(ds, header)
            study.series.append(series[series_uid])
        series[series_uid].instances.append(_new_instance(ds, header, key, entry["size"]))
    if unreadable:
        logger.error(
            "received study %d: %d of %d files could not be read from storage; "
            "they are left out of DICOMweb",
            received.id,
            unreadable,
            len(files),
        )
    session.add(study)
    session.flush()
    logger.info("received study %d indexed for DICOMweb (%d files)", received.id, len(files))
    return study


def _read(storage: Storage, key: str) -> Dataset | None:
    try:
        return pydicom.dcmread(io.BytesIO(storage.get(key)))
    except ObjectNotFound:
        return None
    except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
        logger.warning("a workspace file could not be parsed (%s)", type(exc).__name__)
        return None


def _describe_study(study: IndexedStudy, ds: Dataset, header: dict[str, Any]) -> None:
    study.patient_id = text(ds, "PatientID")
    study.patient_name = text(ds, "PatientName")
    study.study_date = text(ds, "StudyDate")
    study.study_time = text(ds, "StudyTime")
    study.accession_number = text(ds, "AccessionNumber")
    study.study_id = text(ds, "StudyID")
    study.study_description = text(ds, "StudyDescription")
    study.header = _subset(header, STUDY_ATTRIBUTES)


def _new_series(ds: Dataset, header: dict[str, Any]) -> IndexedSeries:
    return IndexedSeries(
        series_uid=text(ds, "SeriesInstanceUID"),
        modality=text(ds, "Modality"),
        series_number=number(ds, "SeriesNumber"),
        series_description=text(ds, "SeriesDescription"),
        header=_subset(header, SERIES_ATTRIBUTES),
    )


def _new_instance(ds: Dataset, header: dict[str, Any], key: str, size: int) -> IndexedInstance:
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or ImplicitVRLittleEndian)
    return IndexedInstance(
        sop_uid=text(ds, "SOPInstanceUID"),
        sop_class_uid=text(ds, "SOPClassUID"),
        instance_number=number(ds, "InstanceNumber"),
        transfer_syntax_uid=syntax,
        storage_key=key,
        size=size,
        header=header,
    )


def _subset(header: dict[str, Any], tags: frozenset[str]) -> dict[str, Any]:
    return {tag: value for tag, value in header.items() if tag in tags}


def header_json(ds: Dataset) -> dict[str, Any]:
    """The dataset in DICOM JSON (PS3.18 F.2), top-level bulk data as relative references."""
    header: dict[str, Any] = {}
    for element in ds:
        tag = f"{element.tag:08X}"
        if is_bulk(element):
            header[tag] = {"vr": element.VR, "BulkDataURI": f"bulkdata/{tag}"}
            continue
        try:
            header[tag] = element.to_json_dict(None, _INLINE_EVERYTHING)
        except (ValueError, TypeError, OverflowError):  # an invalid value: the element only
            logger.warning("attribute %s left out of a header: its value is invalid", tag)
    return header


def is_bulk(element: DataElement) -> bool:
    if element.VR not in _BULK_VRS:
        return False
    if element.tag == PIXEL_DATA:
        return True
    return element.value is not None and len(element.value) > BULK_DATA_THRESHOLD


def text(ds: Dataset, keyword: str) -> str:
    """An attribute's value as DICOM writes it (``\\`` between values); "" when absent."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value)
    return str(value)


def number(ds: Dataset, keyword: str) -> int | None:
    value = str(ds.get(keyword, "")).strip()
    try:
        return int(value) if value else None
    except ValueError:
        return None
