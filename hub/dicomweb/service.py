"""DICOMweb on a project's workspace: QIDO-RS searches over the index, WADO-RS metadata,
the files a retrieve streams, and bulk data.

Plain functions taking a keyword-only ``session``; none commits. Every query is confined
to one project's accepted studies. ``base_url`` is the project's DICOMweb root as the
client addressed it (``…/dicom-web/projects/NAME/``), for RetrieveURL and BulkDataURI.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydicom
from pydicom.uid import UID
from sqlalchemy import ColumnElement, Select, exists, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from hub.curation import service as curation
from hub.dicomweb.exceptions import NotAcceptable, ResourceNotFound
from hub.dicomweb.index import PIXEL_DATA, is_bulk
from hub.dicomweb.models import IndexedInstance, IndexedSeries, IndexedStudy
from hub.dicomweb.schemas import (
    ANY_TRANSFER_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    Level,
    Match,
    MatchKind,
    QidoQuery,
    tag_of,
    vr_of,
)
from hub.storage.service import Storage
from hub.users.models import Project, User

logger = logging.getLogger(__name__)


def require_reader(*, session: Session, user: User, project: str) -> Project:
    """Members read their project's workspace; curators and admins any project's."""
    return curation.require_reader(session=session, user=user, project=project)


# -- QIDO-RS --------------------------------------------------------------------------------

#: What each level returns without includefield (PS3.18 Tables 10.6.3-3 to -5).
STUDY_RETURNED = frozenset(
    tag_of(k)
    for k in (
        "SpecificCharacterSet",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    )
)
SERIES_RETURNED = frozenset(
    tag_of(k)
    for k in (
        "SpecificCharacterSet",
        "Modality",
        "TimezoneOffsetFromUTC",
        "SeriesDescription",
        "RetrieveURL",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RequestAttributesSequence",
    )
)
INSTANCE_RETURNED = frozenset(
    tag_of(k)
    for k in (
        "SpecificCharacterSet",
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceAvailability",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    )
)
_STUDY_UID = tag_of("StudyInstanceUID")
_SERIES_UID = tag_of("SeriesInstanceUID")


@dataclass(frozen=True)
class Scope:
    """The resource a search is under: ``studies/{study}/series/{series}/…`` or all."""

    study_uid: str | None = None
    series_uid: str | None = None


@dataclass
class SearchResult:
    datasets: list[dict[str, Any]]
    more: bool  # results beyond the limit exist (said in a Warning header)
    warnings: list[str] = field(default_factory=list)


_Column = InstrumentedAttribute[Any]
AnySelect = Select[*tuple[Any, ...]]
_S = TypeVar("_S", bound=AnySelect)

_COLUMNS: dict[str, _Column] = {
    "StudyInstanceUID": IndexedStudy.study_uid,
    "PatientID": IndexedStudy.patient_id,
    "PatientName": IndexedStudy.patient_name,
    "StudyDate": IndexedStudy.study_date,
    "StudyTime": IndexedStudy.study_time,
    "AccessionNumber": IndexedStudy.accession_number,
    "StudyID": IndexedStudy.study_id,
    "StudyDescription": IndexedStudy.study_description,
    "SeriesInstanceUID": IndexedSeries.series_uid,
    "Modality": IndexedSeries.modality,
    "SeriesNumber": IndexedSeries.series_number,
    "SeriesDescription": IndexedSeries.series_description,
    "SOPInstanceUID": IndexedInstance.sop_uid,
    "SOPClassUID": IndexedInstance.sop_class_uid,
    "InstanceNumber": IndexedInstance.instance_number,
}


def search(
    *, session: Session, project: Project, query: QidoQuery, scope: Scope, base_url: str
) -> SearchResult:
    if query.level == Level.STUDY:
        return _search_studies(session, project, query, base_url)
    if query.level == Level.SERIES:
        return _search_series(session, project, query, scope, base_url)
    return _search_instances(session, project, query, scope, base_url)


def _search_studies(
    session: Session, project: Project, query: QidoQuery, base_url: str
) -> SearchResult:
    statement = _filtered(select(IndexedStudy), project, query, Scope())
    studies, more = _page(session, statement.order_by(IndexedStudy.id), query)
    counts = _study_counts(session, [study.id for study in studies])
    datasets = []
    for study in studies:
        series, instances, modalities = counts.get(study.id, (0, 0, []))
        computed = {
            "ModalitiesInStudy": _element("ModalitiesInStudy", modalities),
            "NumberOfStudyRelatedSeries": _element("NumberOfStudyRelatedSeries", [series]),
            "NumberOfStudyRelatedInstances": _element("NumberOfStudyRelatedInstances", [instances]),
            "RetrieveURL": _element("RetrieveURL", [f"{base_url}studies/{study.study_uid}"]),
        }
        wanted = set(STUDY_RETURNED) | query.include
        if query.include_all:
            wanted |= set(study.header)
        datasets.append(_dataset(wanted, computed, study.header))
    return SearchResult(datasets, more)


def _search_series(
    session: Session, project: Project, query: QidoQuery, scope: Scope, base_url: str
) -> SearchResult:
    statement = select(IndexedSeries, IndexedStudy).join(
        IndexedStudy, IndexedSeries.study_pk == IndexedStudy.id
    )
    statement = _filtered(statement, project, query, scope)
    rows, more = _page_rows(session, statement.order_by(IndexedSeries.id), query)
    counts = _series_counts(session, [series.id for series, _ in rows])
    datasets = []
    for series, study in rows:
        url = f"{base_url}studies/{study.study_uid}/series/{series.series_uid}"
        computed = {
            "NumberOfSeriesRelatedInstances": _element(
                "NumberOfSeriesRelatedInstances", [counts.get(series.id, 0)]
            ),
            "RetrieveURL": _element("RetrieveURL", [url]),
        }
        wanted = set(SERIES_RETURNED) | query.include | {_STUDY_UID}
        if scope.study_uid is None:  # across studies: each result says which study
            wanted |= STUDY_RETURNED & set(study.header)
        if query.include_all:
            wanted |= set(series.header) | set(study.header)
        datasets.append(_dataset(wanted, computed, series.header, study.header))
    return SearchResult(datasets, more)


def _search_instances(
    session: Session, project: Project, query: QidoQuery, scope: Scope, base_url: str
) -> SearchResult:
    statement = (
        select(IndexedInstance, IndexedSeries, IndexedStudy)
        .join(IndexedSeries, IndexedInstance.series_pk == IndexedSeries.id)
        .join(IndexedStudy, IndexedSeries.study_pk == IndexedStudy.id)
    )
    statement = _filtered(statement, project, query, scope)
    rows, more = _page_rows(session, statement.order_by(IndexedInstance.id), query)
    datasets = []
    for instance, series, study in rows:
        url = (
            f"{base_url}studies/{study.study_uid}/series/{series.series_uid}"
            f"/instances/{instance.sop_uid}"
        )
        computed = {"RetrieveURL": _element("RetrieveURL", [url])}
        wanted = set(INSTANCE_RETURNED) | query.include | {_STUDY_UID, _SERIES_UID}
        if scope.study_uid is None:
            wanted |= STUDY_RETURNED & set(study.header)
        if scope.series_uid is None:
            wanted |= SERIES_RETURNED & set(series.header)
        inline = _inline(instance.header)
        if query.include_all:
            wanted |= set(inline)
        wanted -= set(instance.header) - set(inline)  # bulk data: never in search results
        datasets.append(_dataset(wanted, computed, inline, series.header, study.header))
    return SearchResult(datasets, more)


def _filtered(statement: _S, project: Project, query: QidoQuery, scope: Scope) -> _S:
    statement = statement.where(IndexedStudy.project_id == project.id)
    if scope.study_uid is not None:
        statement = statement.where(IndexedStudy.study_uid == scope.study_uid)
    if scope.series_uid is not None:
        statement = statement.where(IndexedSeries.series_uid == scope.series_uid)
    for match in query.matches:
        statement = statement.where(_condition(match))
    return statement


def _condition(match: Match) -> ColumnElement[bool]:
    if match.keyword == "ModalitiesInStudy":
        return exists().where(
            IndexedSeries.study_pk == IndexedStudy.id, IndexedSeries.modality.in_(match.values)
        )
    column = _COLUMNS[match.keyword]
    if match.kind in {MatchKind.UIDS, MatchKind.CODES}:
        return column.in_(match.values)
    if match.kind == MatchKind.NUMBER:
        return column == int(match.values[0])
    if match.kind in {MatchKind.DATE, MatchKind.TIME}:
        condition = column != ""
        if match.low:
            condition &= column >= match.low
        if match.high:
            condition &= column <= match.high
        return condition
    value = match.values[0]
    compared: ColumnElement[Any] = column.expression
    if match.kind == MatchKind.NAME:
        compared, value = func.lower(column), value.lower()
    if match.has_wildcards:
        return compared.regexp_match(_wildcard_regex(value))
    return compared == value


def _wildcard_regex(pattern: str) -> str:
    """DICOM wildcards (* any run, ? one character) as an anchored regular expression."""
    parts = re.split(r"([*?])", pattern)
    translated = {"*": ".*", "?": "."}
    return "^" + "".join(translated.get(part) or re.escape(part) for part in parts) + "$"


def _page(session: Session, statement: AnySelect, query: QidoQuery) -> tuple[list[Any], bool]:
    found = list(session.execute(statement.offset(query.offset).limit(query.limit + 1)).scalars())
    return found[: query.limit], len(found) > query.limit


def _page_rows(session: Session, statement: AnySelect, query: QidoQuery) -> tuple[list[Any], bool]:
    found = list(session.execute(statement.offset(query.offset).limit(query.limit + 1)).all())
    return found[: query.limit], len(found) > query.limit


def _study_counts(session: Session, study_ids: list[int]) -> dict[int, tuple[int, int, list[str]]]:
    """Per study: its series, its instances and its modalities (sorted)."""
    if not study_ids:
        return {}
    rows = session.execute(
        select(IndexedSeries.study_pk, IndexedSeries.modality, func.count(IndexedInstance.id))
        .outerjoin(IndexedInstance, IndexedInstance.series_pk == IndexedSeries.id)
        .where(IndexedSeries.study_pk.in_(study_ids))
        .group_by(IndexedSeries.id, IndexedSeries.study_pk, IndexedSeries.modality)
    )
    series: dict[int, int] = {}
    instances: dict[int, int] = {}
    modalities: dict[int, set[str]] = {}
    for study_pk, modality, count in rows:
        series[study_pk] = series.get(study_pk, 0) + 1
        instances[study_pk] = instances.get(study_pk, 0) + count
        if modality:
            modalities.setdefault(study_pk, set()).add(modality)
    return {pk: (series[pk], instances[pk], sorted(modalities.get(pk, set()))) for pk in series}


def _series_counts(session: Session, series_ids: list[int]) -> dict[int, int]:
    if not series_ids:
        return {}
    rows = session.execute(
        select(IndexedInstance.series_pk, func.count(IndexedInstance.id))
        .where(IndexedInstance.series_pk.in_(series_ids))
        .group_by(IndexedInstance.series_pk)
    )
    return {series_pk: count for series_pk, count in rows}


def _element(keyword: str, values: Iterable[Any]) -> dict[str, Any]:
    tag = tag_of(keyword)
    found = list(values)
    element: dict[str, Any] = {"vr": vr_of(tag)}
    if found:
        element["Value"] = found
    return element


def _dataset(
    wanted: set[str], computed: dict[str, dict[str, Any]], *headers: dict[str, Any]
) -> dict[str, Any]:
    """The wanted attributes, computed first, then from the headers in order; a wanted
    attribute found nowhere is returned empty (as C-FIND returns a key it has no value for)."""
    by_tag = {tag_of(keyword): element for keyword, element in computed.items()}
    by_tag.setdefault(tag_of("InstanceAvailability"), _element("InstanceAvailability", ["ONLINE"]))
    dataset: dict[str, Any] = {}
    for tag in sorted(wanted):
        if tag in by_tag:
            dataset[tag] = by_tag[tag]
            continue
        found = next((header[tag] for header in headers if tag in header), None)
        if found is not None:
            dataset[tag] = found
        elif (vr := vr_of(tag)) is not None:
            dataset[tag] = {"vr": vr}
    return dataset


def _inline(header: dict[str, Any]) -> dict[str, Any]:
    """A header without its bulk data references (search results never carry bulk data)."""
    return {tag: element for tag, element in header.items() if "BulkDataURI" not in element}


# -- WADO-RS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredInstance:
    """A file a retrieve sends: where it is and how it is encoded."""

    storage_key: str
    transfer_syntax_uid: str


def _instances(
    session: Session, project: Project, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> list[tuple[IndexedInstance, IndexedSeries]]:
    statement = (
        select(IndexedInstance, IndexedSeries)
        .join(IndexedSeries, IndexedInstance.series_pk == IndexedSeries.id)
        .join(IndexedStudy, IndexedSeries.study_pk == IndexedStudy.id)
        .where(IndexedStudy.project_id == project.id, IndexedStudy.study_uid == study_uid)
    )
    if series_uid is not None:
        statement = statement.where(IndexedSeries.series_uid == series_uid)
    if sop_uid is not None:
        statement = statement.where(IndexedInstance.sop_uid == sop_uid)
    statement = statement.order_by(
        IndexedSeries.series_number, IndexedSeries.id, IndexedInstance.instance_number
    )
    found = [(instance, series) for instance, series in session.execute(statement).all()]
    if not found:
        level = "instance" if sop_uid else "series" if series_uid else "study"
        raise ResourceNotFound(level)
    return found


def retrieve(
    *,
    session: Session,
    project: Project,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    transfer_syntax: str = ANY_TRANSFER_SYNTAX,
) -> list[StoredInstance]:
    """The files to send, in series and instance order; 406 when the transfer syntax asked
    for is one the hub cannot give every file in."""
    found = _instances(session, project, study_uid, series_uid, sop_uid)
    files = [StoredInstance(i.storage_key, i.transfer_syntax_uid) for i, _ in found]
    if transfer_syntax != ANY_TRANSFER_SYNTAX:
        for stored in files:
            if not can_send_as(stored.transfer_syntax_uid, transfer_syntax):
                raise NotAcceptable(
                    f"transfer syntax {transfer_syntax}: the hub sends files as released "
                    "(ask transfer-syntax=*) or uncompressed ones as Explicit VR Little Endian"
                )
    return files


def can_send_as(stored: str, wanted: str) -> bool:
    if stored == wanted:
        return True
    syntax = UID(stored)
    return (
        wanted == EXPLICIT_VR_LITTLE_ENDIAN
        and syntax.is_transfer_syntax
        and not syntax.is_compressed
        and syntax.is_little_endian
    )


def metadata(
    *,
    session: Session,
    project: Project,
    base_url: str,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[dict[str, Any]]:
    """Each instance's header; bulk data as absolute BulkDataURIs."""
    found = _instances(session, project, study_uid, series_uid, sop_uid)
    return [
        _absolute_bulk_uris(
            instance.header,
            f"{base_url}studies/{study_uid}/series/{series.series_uid}"
            f"/instances/{instance.sop_uid}/",
        )
        for instance, series in found
    ]


def _absolute_bulk_uris(header: dict[str, Any], instance_url: str) -> dict[str, Any]:
    return {
        tag: (
            {**element, "BulkDataURI": instance_url + element["BulkDataURI"]}
            if "BulkDataURI" in element
            else element
        )
        for tag, element in header.items()
    }


def bulk_data(
    *,
    session: Session,
    storage: Storage,
    project: Project,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    tag: str,
) -> bytes:
    """The value of a top-level bulk data attribute, little endian (PS3.18 8.7.3.3.2)."""
    instance, _ = _instances(session, project, study_uid, series_uid, sop_uid)[0]
    if instance.header.get(tag, {}).get("BulkDataURI") is None:
        raise ResourceNotFound("bulk data")
    ds = pydicom.dcmread(io.BytesIO(storage.get(instance.storage_key)))
    element = ds.get(int(tag, 16))
    if element is None or not is_bulk(element):
        raise ResourceNotFound("bulk data")
    syntax = UID(instance.transfer_syntax_uid)
    if element.tag == PIXEL_DATA and syntax.is_compressed:
        raise NotAcceptable(
            "compressed Pixel Data is served with its instance only: retrieve the instance"
        )
    if not syntax.is_little_endian:
        raise NotAcceptable("big endian bulk data is served with its instance only")
    value: bytes = element.value
    return value
