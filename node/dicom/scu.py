"""The node as a PACS client: C-FIND at study and series level, C-MOVE to the node's own
DICOM server, and C-GET straight into the ingest.

Everything that comes back is a plain dataclass. Hospital identifiers (patient IDs, accession
numbers, original UIDs) pass through this module, so it never logs them, never puts them in an
exception message, and keeps them out of the dataclasses' ``repr``. pynetdicom logs request and
response identifiers at INFO by default; importing this module turns that off.

Each operation opens its own association and releases it, so a PACS restart between two
studies costs one retry, not a stuck job. Association problems raise :class:`PacsUnavailable`
(retryable); refusals that retrying cannot fix raise :class:`PacsRefused`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import itertools
import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, StoragePresentationContexts, _config, build_role, evt
from pynetdicom.association import Association

from common.errors import PermanentError, RetryableError
from node.settings import Pacs

logger = logging.getLogger(__name__)

# pynetdicom dumps every C-FIND/C-GET/C-MOVE identifier at INFO unless told not to.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
# At DEBUG its handlers print original SOP Instance UIDs: off here as in the server.
_config.LOG_HANDLER_LEVEL = "none"

# pynetdicom builds its SOP class names at run time, out of mypy's sight; the UIDs are stable.
Verification = UID("1.2.840.10008.1.1")
StudyRootQueryRetrieveInformationModelFind = UID("1.2.840.10008.5.1.4.1.2.2.1")
StudyRootQueryRetrieveInformationModelMove = UID("1.2.840.10008.5.1.4.1.2.2.2")
StudyRootQueryRetrieveInformationModelGet = UID("1.2.840.10008.5.1.4.1.2.2.3")

_PENDING = (0xFF00, 0xFF01)
_SUCCESS = 0x0000
_WARNING = 0xB000
_CANCELLED = 0xFE00
_MOVE_DESTINATION_UNKNOWN = 0xA801
_STORE_OUT_OF_RESOURCES = 0xA700

# What the node accepts over C-GET: uncompressed first (every PACS can send it), then the
# compressed families stage 1 can read, so a PACS may send stored JPEG data without
# transcoding.
GET_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)


class PacsUnavailable(RetryableError):
    """The PACS could not be reached, refused the association or stopped answering."""


class PacsRefused(PermanentError):
    """The PACS answered with a refusal that retrying will not change (says what to fix)."""


# -- queries and matches ------------------------------------------------------------------


def parse_date(text: str, *, name: str = "date") -> dt.date:
    """``YYYYMMDD`` or ``YYYY-MM-DD``; a wrong value names the option and the format."""
    cleaned = text.strip().replace("-", "")
    try:
        return dt.datetime.strptime(cleaned, "%Y%m%d").date()
    except ValueError:
        raise ValueError(
            f"{name}: expected a date as YYYYMMDD or YYYY-MM-DD, got {text!r}"
        ) from None


@dataclass(frozen=True)
class StudyQuery:
    """Study-level matching keys; empty fields match everything.

    ``modality`` matches ModalitiesInStudy; ``study_description`` takes DICOM wildcards
    (``*``, ``?``), e.g. ``*BRAIN*``.
    """

    patient_id: str = field(default="", repr=False)
    accession_number: str = field(default="", repr=False)
    study_uid: str = field(default="", repr=False)
    modality: str = ""
    study_description: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None

    def __post_init__(self) -> None:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("the date range ends before it starts")

    @property
    def date_range(self) -> str:
        """The DICOM range ``YYYYMMDD-YYYYMMDD`` (either end may be open), or ``""``."""
        if self.date_from is None and self.date_to is None:
            return ""
        start = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        end = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return f"{start}-{end}"

    def identifier(self) -> Dataset:
        ds = Dataset()
        values = [
            self.patient_id,
            self.accession_number,
            self.modality,
            self.study_description,
        ]
        if any(not v.isascii() for v in values):
            ds.SpecificCharacterSet = "ISO_IR 192"
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = self.study_uid
        ds.PatientID = self.patient_id
        ds.AccessionNumber = self.accession_number
        ds.StudyDate = self.date_range
        ds.StudyTime = ""
        ds.StudyDescription = self.study_description
        ds.ModalitiesInStudy = self.modality
        ds.NumberOfStudyRelatedSeries = None
        ds.NumberOfStudyRelatedInstances = None
        return ds


@dataclass(frozen=True)
class StudyMatch:
    """One study the PACS reported; identifiers stay out of ``repr``."""

    study_uid: str = field(repr=False)
    patient_id: str = field(repr=False)
    accession_number: str = field(repr=False)
    study_date: str
    description: str = field(repr=False)
    modalities: tuple[str, ...]
    series_count: int | None
    instance_count: int | None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> StudyMatch:
        return cls(
            study_uid=_text(ds, "StudyInstanceUID"),
            patient_id=_text(ds, "PatientID"),
            accession_number=_text(ds, "AccessionNumber"),
            study_date=_text(ds, "StudyDate"),
            description=_text(ds, "StudyDescription"),
            modalities=_multi(ds, "ModalitiesInStudy"),
            series_count=_count(ds, "NumberOfStudyRelatedSeries"),
            instance_count=_count(ds, "NumberOfStudyRelatedInstances"),
        )

    def matches(self, query: StudyQuery) -> bool:
        """Check the query again on the answer: a PACS may ignore optional keys (PS3.4 C.2.2)."""
        checks = (
            not query.patient_id or not self.patient_id or self.patient_id == query.patient_id,
            not query.accession_number
            or not self.accession_number
            or self.accession_number == query.accession_number,
            not query.study_uid or self.study_uid == query.study_uid,
            not query.modality
            or not self.modalities
            or query.modality.upper() in (m.upper() for m in self.modalities),
            not query.study_description
            or wildcard_match(query.study_description, self.description),
            _in_range(self.study_date, query.date_from, query.date_to),
        )
        return all(checks)


@dataclass(frozen=True)
class SeriesQuery:
    """Series-level keys within one study; ``description`` and ``protocol_name`` take wildcards."""

    study_uid: str = field(repr=False)
    modality: str = ""
    description: str = ""
    protocol_name: str = ""

    def identifier(self) -> Dataset:
        ds = Dataset()
        if any(not v.isascii() for v in (self.modality, self.description, self.protocol_name)):
            ds.SpecificCharacterSet = "ISO_IR 192"
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = self.study_uid
        ds.SeriesInstanceUID = ""
        ds.Modality = self.modality
        ds.SeriesDescription = self.description
        ds.ProtocolName = self.protocol_name
        ds.SeriesNumber = None
        ds.NumberOfSeriesRelatedInstances = None
        return ds


@dataclass(frozen=True)
class SeriesMatch:
    study_uid: str = field(repr=False)
    series_uid: str = field(repr=False)
    modality: str
    description: str = field(repr=False)
    protocol_name: str = field(repr=False)
    series_number: int | None
    instance_count: int | None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> SeriesMatch:
        return cls(
            study_uid=_text(ds, "StudyInstanceUID"),
            series_uid=_text(ds, "SeriesInstanceUID"),
            modality=_text(ds, "Modality"),
            description=_text(ds, "SeriesDescription"),
            protocol_name=_text(ds, "ProtocolName"),
            series_number=_count(ds, "SeriesNumber"),
            instance_count=_count(ds, "NumberOfSeriesRelatedInstances"),
        )

    def matches(self, query: SeriesQuery) -> bool:
        return all(
            (
                not query.modality or self.modality.upper() == query.modality.upper(),
                not query.description or wildcard_match(query.description, self.description),
                not query.protocol_name or wildcard_match(query.protocol_name, self.protocol_name),
            )
        )


def wildcard_match(pattern: str, value: str) -> bool:
    """DICOM wildcard matching (``*`` any run, ``?`` one character), ignoring case.

    Case is ignored because PACS differ on it; ignoring it keeps every match a
    case-sensitive PACS would give.
    """
    translated = "".join("[[]" if c == "[" else c for c in pattern.upper())
    return fnmatch.fnmatchcase(value.upper().strip(), translated.strip())


# -- retrieval ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrieveTarget:
    """A study, or some of its series, to fetch."""

    study_uid: str = field(repr=False)
    series_uids: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Progress:
    """Sub-operation counts as the PACS reports them while a C-MOVE/C-GET runs."""

    remaining: int
    completed: int
    failed: int
    warning: int

    @property
    def total(self) -> int:
        return self.remaining + self.completed + self.failed + self.warning


@dataclass(frozen=True)
class RetrieveResult:
    """How one C-MOVE/C-GET ended: the final status and its sub-operation counts."""

    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    total: int = 0  # sub-operations the PACS announced (0 when it never said)
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        """Every sub-operation succeeded (warnings count as stored: PS3.4 C.4.2.1.4)."""
        return self.status in (_SUCCESS, _WARNING) and self.failed == 0 and not self.cancelled

    @property
    def nothing_sent(self) -> bool:
        """The PACS refused the whole retrieval before any sub-operation (Orthanc answers an
        unknown move destination so, with 0xC000 rather than 0xA801)."""
        failed = self.status not in (_SUCCESS, _WARNING, _CANCELLED)
        return failed and self.completed + self.failed + self.warning == 0

    def __add__(self, other: RetrieveResult) -> RetrieveResult:
        status = other.status if self.status in (_SUCCESS, _WARNING) else self.status
        return RetrieveResult(
            status=status,
            completed=self.completed + other.completed,
            failed=self.failed + other.failed,
            warning=self.warning + other.warning,
            total=self.total + other.total,
            cancelled=self.cancelled or other.cancelled,
        )


EMPTY_RESULT = RetrieveResult(status=_SUCCESS)

StoreInstance = Callable[[bytes], None]
ShouldCancel = Callable[[], bool]
OnProgress = Callable[[Progress], None]


class MoveOriginators:
    """Which job asked for the C-STOREs a C-MOVE sends back (PS3.7 C.4.2.1.4.1).

    A PACS carries the C-MOVE's AE title and message ID into each C-STORE sub-operation as
    Move Originator AE Title / Message ID. The node's storage server asks :meth:`job_for`
    so that an instance moved for job N reaches ``Ingest.accept(..., job_id=N)``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, int], int] = {}
        self._ids = itertools.count(random.randint(1, 30000))  # noqa: S311 (not a secret)

    def next_message_id(self) -> int:
        with self._lock:
            return next(self._ids) % 65535 + 1

    @contextmanager
    def registered(self, ae_title: str, message_id: int, job_id: int | None) -> Iterator[None]:
        key = (ae_title.strip(), message_id)
        if job_id is not None:
            with self._lock:
                self._jobs[key] = job_id
        try:
            yield
        finally:
            with self._lock:
                self._jobs.pop(key, None)

    def job_for(self, originator_ae_title: str | None, message_id: int | None) -> int | None:
        if not originator_ae_title or message_id is None:
            return None
        with self._lock:
            return self._jobs.get((originator_ae_title.strip(), int(message_id)))


# One per process: the storage server and the job runner live in the same node process.
MOVES = MoveOriginators()


class PacsClient:
    """Queries and retrieves from one PACS, as the node's AE title."""

    def __init__(
        self,
        pacs: Pacs,
        *,
        ae_title: str,
        timeout: float = 30.0,
        retrieve_timeout: float = 600.0,
        moves: MoveOriginators = MOVES,
    ) -> None:
        self.pacs = pacs
        self.ae_title = ae_title
        self.timeout = timeout
        self.retrieve_timeout = retrieve_timeout
        self.moves = moves

    def __repr__(self) -> str:
        return (
            f"PacsClient({self.pacs.name!r} {self.pacs.ae_title}@{self.pacs.host}:{self.pacs.port})"
        )

    # -- association ----------------------------------------------------------------------

    @contextmanager
    def _association(
        self,
        contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        dimse_timeout: float,
        ext_neg: list[Any] | None = None,
        handlers: list[Any] | None = None,
    ) -> Iterator[Association]:
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = self.timeout
        ae.network_timeout = max(self.timeout, dimse_timeout)
        ae.connection_timeout = self.timeout
        ae.dimse_timeout = dimse_timeout
        for abstract_syntax, transfer_syntaxes in contexts:
            ae.add_requested_context(abstract_syntax, list(transfer_syntaxes))
        assoc = ae.associate(
            self.pacs.host,
            self.pacs.port,
            ae_title=self.pacs.ae_title,
            ext_neg=ext_neg,
            evt_handlers=handlers,
        )
        if not assoc.is_established:
            reason = (
                "rejected the association (check that it knows the node's AE title "
                f"{self.ae_title!r})"
                if assoc.is_rejected
                else "could not be reached"
            )
            raise PacsUnavailable(f"PACS {self.pacs.name!r} {reason}")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    @staticmethod
    def _require(assoc: Association, abstract_syntax: str, what: str) -> None:
        if not any(cx.abstract_syntax == abstract_syntax for cx in assoc.accepted_contexts):
            assoc.abort()
            raise PacsRefused(f"the PACS does not offer {what}")

    def echo(self) -> None:
        with self._association(
            [(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])],
            dimse_timeout=self.timeout,
        ) as assoc:
            status = assoc.send_c_echo()
            if "Status" not in status or status.Status != _SUCCESS:
                raise PacsUnavailable(f"PACS {self.pacs.name!r} did not answer the C-ECHO")

    # -- C-FIND ---------------------------------------------------------------------------

    def find_studies(self, queries: Sequence[StudyQuery]) -> list[StudyMatch]:
        """Studies matching any of ``queries`` (one association), each study once."""
        found: dict[str, StudyMatch] = {}
        with self._find_association() as assoc:
            for query in queries:
                for ds in self._find(assoc, query.identifier()):
                    match = StudyMatch.from_dataset(ds)
                    if match.study_uid and match.matches(query):
                        found.setdefault(match.study_uid, match)
        logger.info(
            "C-FIND on %s: %d queries, %d studies", self.pacs.name, len(queries), len(found)
        )
        return list(found.values())

    def find_series(self, queries: Sequence[SeriesQuery]) -> list[SeriesMatch]:
        """Series matching ``queries`` (each names its study), in one association."""
        found: dict[str, SeriesMatch] = {}
        with self._find_association() as assoc:
            for query in queries:
                for ds in self._find(assoc, query.identifier()):
                    match = SeriesMatch.from_dataset(ds)
                    if not match.study_uid:
                        match = replace(match, study_uid=query.study_uid)
                    if match.series_uid and match.matches(query):
                        found.setdefault(match.series_uid, match)
        logger.info("C-FIND on %s: %d studies, %d series", self.pacs.name, len(queries), len(found))
        return list(found.values())

    @contextmanager
    def _find_association(self) -> Iterator[Association]:
        model = StudyRootQueryRetrieveInformationModelFind
        with self._association(
            [(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])],
            dimse_timeout=self.timeout,
        ) as assoc:
            self._require(assoc, model, "study-root C-FIND")
            yield assoc

    def _find(self, assoc: Association, identifier: Dataset) -> Iterator[Dataset]:
        for status, answer in assoc.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind
        ):
            if "Status" not in status:
                raise PacsUnavailable(
                    f"PACS {self.pacs.name!r} stopped answering a C-FIND (timeout or abort)"
                )
            code = int(status.Status)
            if code in _PENDING:
                if answer is not None:
                    yield answer
                continue
            if code == _SUCCESS:
                return
            if code == _CANCELLED:
                return
            raise PacsUnavailable(
                f"PACS {self.pacs.name!r} failed a C-FIND with status 0x{code:04X}"
            )

    # -- C-MOVE / C-GET -------------------------------------------------------------------

    def move(
        self,
        target: RetrieveTarget,
        *,
        destination: str,
        job_id: int | None = None,
        should_cancel: ShouldCancel | None = None,
        on_progress: OnProgress | None = None,
    ) -> RetrieveResult:
        """C-MOVE ``target`` to ``destination`` (the node's own AE title, which the PACS
        must know with its host and port)."""
        model = StudyRootQueryRetrieveInformationModelMove
        with self._association(
            [(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])],
            dimse_timeout=self.retrieve_timeout,
        ) as assoc:
            self._require(assoc, model, "study-root C-MOVE")
            result = EMPTY_RESULT
            for identifier in _retrieve_identifiers(target):
                message_id = self.moves.next_message_id()
                with self.moves.registered(self.ae_title, message_id, job_id):
                    responses = assoc.send_c_move(identifier, destination, model, msg_id=message_id)
                    one = self._follow(
                        assoc, responses, model, message_id, should_cancel, on_progress
                    )
                result += one
                if one.cancelled:
                    break
        if result.status == _MOVE_DESTINATION_UNKNOWN:
            raise PacsRefused(
                f"PACS {self.pacs.name!r} does not know the move destination {destination!r}: "
                "add the node's AE title, host and DICOM port to the PACS's DICOM peers"
            )
        return result

    def get(
        self,
        target: RetrieveTarget,
        *,
        store: StoreInstance,
        should_cancel: ShouldCancel | None = None,
        on_progress: OnProgress | None = None,
    ) -> RetrieveResult:
        """C-GET ``target``; each instance received is handed to ``store`` as encoded bytes
        (preamble and file meta included). ``store`` raising refuses that one instance."""
        model = StudyRootQueryRetrieveInformationModelGet
        contexts: list[tuple[str, Sequence[str]]] = [
            (model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ]
        roles = []
        for cx in StoragePresentationContexts:
            assert cx.abstract_syntax is not None
            contexts.append((cx.abstract_syntax, GET_TRANSFER_SYNTAXES))
            roles.append(build_role(cx.abstract_syntax, scp_role=True))

        def handle_store(event: evt.Event) -> int:
            try:
                store(event.encoded_dataset())
            except Exception as exc:
                logger.warning(
                    "C-GET from %s: an instance was refused (%s)",
                    self.pacs.name,
                    type(exc).__name__,
                )
                return _STORE_OUT_OF_RESOURCES
            return _SUCCESS

        with self._association(
            contexts,
            dimse_timeout=self.retrieve_timeout,
            ext_neg=roles,
            handlers=[(evt.EVT_C_STORE, handle_store)],
        ) as assoc:
            self._require(assoc, model, "study-root C-GET")
            result = EMPTY_RESULT
            for identifier in _retrieve_identifiers(target):
                message_id = self.moves.next_message_id()
                responses = assoc.send_c_get(identifier, model, msg_id=message_id)
                one = self._follow(assoc, responses, model, message_id, should_cancel, on_progress)
                result += one
                if one.cancelled:
                    break
        return result

    def _follow(
        self,
        assoc: Association,
        responses: Iterator[tuple[Dataset, Dataset | None]],
        model: str,
        message_id: int,
        should_cancel: ShouldCancel | None,
        on_progress: OnProgress | None,
    ) -> RetrieveResult:
        """Read C-MOVE/C-GET responses to the final one; send C-CANCEL when asked to."""
        last = Progress(0, 0, 0, 0)
        announced = 0
        cancel_sent = False
        for status, _identifier in responses:
            if "Status" not in status:
                raise PacsUnavailable(
                    f"PACS {self.pacs.name!r} stopped answering a retrieval (timeout or abort)"
                )
            code = int(status.Status)
            progress = Progress(
                remaining=_count(status, "NumberOfRemainingSuboperations") or 0,
                completed=_count(status, "NumberOfCompletedSuboperations") or 0,
                failed=_count(status, "NumberOfFailedSuboperations") or 0,
                warning=_count(status, "NumberOfWarningSuboperations") or 0,
            )
            if code in _PENDING:
                last = progress
                announced = max(announced, progress.total)
                if on_progress is not None:
                    on_progress(progress)
                if not cancel_sent and should_cancel is not None and should_cancel():
                    assoc.send_c_cancel(message_id, query_model=model)
                    cancel_sent = True
                continue
            has_counts = any(
                k in status
                for k in ("NumberOfCompletedSuboperations", "NumberOfFailedSuboperations")
            )
            if not has_counts and code == _SUCCESS:
                # The final counts are optional on success: all announced ones completed.
                progress = Progress(0, last.completed + last.remaining, last.failed, last.warning)
            elif not has_counts:
                progress = Progress(0, last.completed, last.failed + last.remaining, last.warning)
            announced = max(announced, progress.total)
            if code not in (_SUCCESS, _WARNING, _CANCELLED):
                logger.warning(
                    "retrieval from %s ended with status 0x%04X (%d completed, %d failed)",
                    self.pacs.name,
                    code,
                    progress.completed,
                    progress.failed,
                )
            return RetrieveResult(
                status=code,
                completed=progress.completed,
                failed=progress.failed,
                warning=progress.warning,
                total=announced,
                cancelled=code == _CANCELLED or cancel_sent,
            )
        raise PacsUnavailable(f"PACS {self.pacs.name!r} sent no final retrieval response")


def _retrieve_identifiers(target: RetrieveTarget) -> Iterator[Dataset]:
    """One identifier for a whole study, or one per series (PACS differ on UID lists)."""
    if not target.series_uids:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = target.study_uid
        yield ds
        return
    for series_uid in target.series_uids:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = target.study_uid
        ds.SeriesInstanceUID = series_uid
        yield ds


# -- attribute helpers --------------------------------------------------------------------


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


def _multi(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split("\\") if v.strip())
    return tuple(str(v).strip() for v in value if str(v).strip())


def _count(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _in_range(study_date: str, start: dt.date | None, end: dt.date | None) -> bool:
    if (start is None and end is None) or not study_date:
        return True
    try:
        day = dt.datetime.strptime(study_date[:8], "%Y%m%d").date()
    except ValueError:
        return True  # an unreadable date: the PACS matched it, keep it
    return (start is None or day >= start) and (end is None or day <= end)
