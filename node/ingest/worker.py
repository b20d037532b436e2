"""What runs in a worker process: read a spooled arrival, pseudonymize it, store its file.

Each worker builds its engine once (:func:`init`). :func:`process_batch` is handed a few
arrivals at a time (where their bytes are in the spool, not the bytes: the parent's memory
stays flat) and does the CPU work of each — read, stage 1, SHA-256 — and writes the
de-identified file into the store, then returns a small :class:`Stored` (the row's metadata,
and the hospital's identifiers for the encrypted correspondence table) or a
:class:`Rejected`. The parent writes the rows; a worker never touches the database.

Store files are written through a staging folder (``store/.staging``): a temporary file is
written there, then renamed into place; the parent makes each batch durable before it
commits the rows (:func:`flush_store`). A crash leaves at most temporary files in the staging
folder, which the ingest empties at start, and files without rows, which the spool redoes.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import hashlib
import itertools
import logging
import math
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PosixPath
from typing import Any, ClassVar, cast

from pydicom import config as pydicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from common.crypto import Pseudonymizer, SiteSecret
from common.deid.engine import Engine
from common.deid.exceptions import InstanceRejected, SourceUnavailable
from common.deid.files import read_instance
from common.deid.profile import load_profile, read_lookup_table
from common.deid.reader import read_fast
from node.ingest import spool
from node.ingest.spool import SpoolEntry
from node.store.service import (
    InstanceRecord,
    Originals,
    PatientFields,
    Rejection,
    SeriesFields,
    StudyFields,
    relative_store_path,
)

logger = logging.getLogger(__name__)

STAGING = ".staging"
PARENT_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class WorkerConfig:
    profile: str
    project: str
    secret: bytes = field(repr=False)
    store_dir: Path
    parent_pid: int = 0  # the node's process: a worker outliving it ends itself
    niceness: int = 0  # added to the worker's nice value (see init)

    @property
    def staging_dir(self) -> Path:
        return self.store_dir / STAGING


def build_engine(config: WorkerConfig) -> Engine:
    """Stage 1's engine: the node's profile, under the node's own project name."""
    profile = load_profile(config.profile)
    mapper = Pseudonymizer(
        secret=SiteSecret(config.secret),
        project=config.project,
        subject_key_prefix=profile.subject_key_prefix,
        min_offset_days=profile.min_offset_days,
        max_offset_days=profile.max_offset_days,
    )
    keys = read_lookup_table(profile.subject_key_lookup) if profile.subject_key_lookup else None
    return Engine(profile, mapper, keys)


# -- outcomes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """The file is durable in the store; the parent writes its rows."""

    record: InstanceRecord


@dataclass(frozen=True, slots=True)
class Rejected:
    """Stage 1 refused the instance (PHI-free reason); nothing was written."""

    rejection: Rejection


@dataclass(frozen=True, slots=True)
class Retry:
    """Something outside the instance failed (the disk, say): keep it in the spool."""

    reason: str


@dataclass(frozen=True, slots=True)
class Vanished:
    """The spool entry was gone before it could be read (removed by hand?)."""


Outcome = Stored | Rejected | Retry | Vanished


# -- the worker process ----------------------------------------------------------------------

_state: dict[str, Any] = {}


def init(config: WorkerConfig) -> None:
    """Process initializer: one engine per worker, and a watch on the node's process.

    A worker runs at a lower priority than the node (``config.niceness``): acknowledging an
    arrival waits on the node's receiving thread, stage 1 does not wait on anything, so when
    both want a core the receiving thread gets it and stage 1 takes what is left (the spool
    holds what waits meanwhile).
    """
    # pydicom logs invalid values verbatim ("Invalid value for VR PN: '...'"): never here.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
    # Nor does its validation of each value it decodes (~10 µs, a regex) change a value:
    # it only warns and logs, and both are dropped here (stage 1 ignores the warnings).
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    if config.niceness:
        with contextlib.suppress(OSError):
            os.nice(config.niceness)
    _state["engine"] = build_engine(config)
    _state["writer"] = StoreWriter(config.store_dir)
    if config.parent_pid:
        threading.Thread(
            target=_exit_with_parent, args=(config.parent_pid,), name="parent-watch", daemon=True
        ).start()


def _exit_with_parent(pid: int) -> None:
    """A node killed outright (SIGKILL) cannot stop its pool: the workers would wait for
    tasks forever, holding the node's files. They end themselves instead."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if not _alive(pid):
            os._exit(0)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (killed, not yet reaped) does not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:  # noqa: PTH123 - a hot, tiny read
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass  # no /proc: ask the kernel instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ping(hold: float = 0.0) -> int:
    """A task that makes the pool start its processes (and so fail early); it holds its
    worker a moment, so that the next ping starts another one."""
    time.sleep(hold)
    return os.getpid()


def process_batch(entries: list[SpoolEntry]) -> list[Outcome]:
    """Stage 1 for a few spooled arrivals, one outcome each (fewer round trips to the
    parent than one task per arrival)."""
    engine: Engine = _state["engine"]
    writer: StoreWriter = _state["writer"]
    return [deidentify_and_store(engine, writer, entry) for entry in entries]


def deidentify_and_store(engine: Engine, writer: StoreWriter, entry: SpoolEntry) -> Outcome:
    """Stage 1 for one spooled arrival; never raises for a bad instance."""
    source, job_id = entry.source, entry.job_id
    sop_class = modality = ""
    try:
        data = spool.read(entry)
    except FileNotFoundError:
        return Vanished()
    except OSError as exc:
        return Retry(f"cannot read the spool ({_errno(exc)})")
    try:
        ds = read_arrival(data, writer.staging)
        original = _Header(ds)
        sop_class = original.text(0x00080016)
        modality = original.text(0x00080060)[:16]
        originals = Originals(
            patient_id=original.text(0x00100020).strip(),
            study_uid=original.text(0x0020000D),
            series_uid=original.text(0x0020000E),
            sop_uid=original.text(0x00080018),
        )
        result = engine.deidentify(ds)
        header = _header(ds)  # the pseudonymized dataset: stage 1 ran in place
    except InstanceRejected as exc:
        return Rejected(Rejection(exc.code, exc.reason, source, sop_class, modality, job_id))
    except (SourceUnavailable, MemoryError) as exc:
        # Not a verdict on the instance: it was acknowledged, so keep it and try again.
        return Retry(f"stage 1 could not run now ({type(exc).__name__})")
    except Exception as exc:
        # Only the type: a library's message might quote a value of the file.
        logger.warning("stage 1 failed on an arrival with %s", type(exc).__name__)
        reason = f"stage 1 failed ({type(exc).__name__})"
        return Rejected(Rejection("failed", reason, source, sop_class, modality, job_id))
    digest = hashlib.sha256(result.data).hexdigest()
    try:
        relative = writer.place(result.relative_path, digest)
        writer.write(relative, result.data)
    except OSError as exc:
        return Retry(f"cannot write the store ({_errno(exc)})")
    report = result.report
    record = InstanceRecord(
        subject_key=report.subject_key,
        study_uid=report.study_instance_uid,
        series_uid=report.series_instance_uid,
        sop_uid=report.sop_instance_uid,
        sop_class_uid=sop_class,
        instance_number=_Header(ds).integer(0x00200013),
        path=relative_store_path(relative),
        size=len(result.data),
        sha256=digest,
        transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "")),
        profile=report.profile,
        pixels=report.pixels,
        actions={k: sorted(v) for k, v in sorted(report.actions.items())},
        patient=header[0],
        study=header[1],
        series=header[2],
        originals=originals,
    )
    return Stored(record)


class _InMemoryFile(PosixPath):
    """A spooled arrival's bytes, shown to the engine's one-pass reader as the file it
    expects; that reader only calls ``read_bytes()`` (and names the data set after it).
    Anything that opened it by name would find no such file (its folder is never made): a
    retry, never other data."""

    data: bytes

    def read_bytes(self) -> bytes:
        return self.data


_read_names = itertools.count()


def read_arrival(data: bytes, staging: Path) -> Dataset:
    """The arrival as :func:`common.deid.files.read_instance` reads a file of it.

    The common case (little endian, not deflated) is parsed from the bytes; anything else is
    written to a temporary file in the staging folder for the general reader. The checks on
    completeness ``read_instance`` makes were made on arrival (``node.ingest.validate``).
    """
    arrival = _InMemoryFile(staging / "never made" / "arrival.dcm")
    arrival.data = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = read_fast(arrival)
    if ds is not None:
        return ds
    temporary = staging / f"{os.getpid()}-read-{next(_read_names)}"
    try:
        temporary.write_bytes(data)
        return read_instance(temporary)
    except OSError as exc:
        raise SourceUnavailable(f"cannot stage the arrival ({_errno(exc)})") from None
    finally:
        temporary.unlink(missing_ok=True)


class StoreWriter:
    """Atomic writes into the store through its staging folder.

    A new file is renamed into place unflushed: the ingest's writer makes a whole batch of
    files durable at once (:func:`flush_store`, one ``syncfs``) before it commits their rows.
    Until then the arrival stays in the spool, so a crash in between only means the file is
    written again. Flushing each file and its folder instead costs two journal commits per
    instance, which on a busy disk is what an acknowledgement waits for.
    """

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.staging = store_dir / STAGING
        self.staging.mkdir(parents=True, exist_ok=True)
        self._folders: set[Path] = set()
        self._names = itertools.count()

    def place(self, relative: str, sha256: str) -> str:
        """Where a file with this content goes: ``relative``, unless another content is
        stored there (a corrected re-send). Then beside it, named by its digest, so the
        stored file keeps matching its row until the new row commits (the old file is
        removed after that; if the commit fails, the new one is)."""
        target = self.store_dir / relative
        try:
            with target.open("rb") as existing:
                if hashlib.file_digest(existing, "sha256").hexdigest() == sha256:
                    return relative
        except FileNotFoundError:
            return relative
        stem, dot, suffix = relative.rpartition(".")
        base = stem if dot else relative
        return f"{base}.{sha256[:16]}{dot}{suffix}" if dot else f"{base}.{sha256[:16]}"

    def write(self, relative: str, data: bytes) -> Path:
        target = self.store_dir / relative
        temporary = self.staging / f"{os.getpid()}-{next(self._names)}"
        # A file that replaces one (a re-sent instance) is flushed before the rename, so a
        # crash cannot leave the stored instance empty; a new file is flushed with its batch.
        replacing = not SYNCFS or target.exists()
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(descriptor, "wb") as f:
                f.write(data)
                f.flush()
                if replacing:
                    os.fsync(f.fileno())
                else:
                    start_writeback(f.fileno())
            try:
                self._ensure_folder(target.parent)
                temporary.replace(target)
            except FileNotFoundError:  # the folder was removed meanwhile (a deleted patient)
                self._folders.discard(target.parent)
                self._ensure_folder(target.parent)
                temporary.replace(target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return target

    def _ensure_folder(self, folder: Path) -> None:
        """Create ``folder``; without ``syncfs`` (which makes the batch's folders durable
        with its files, :func:`flush_store`), flush each parent that gained an entry."""
        if folder in self._folders:
            return
        missing: list[Path] = []
        current = folder
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for created in reversed(missing):
            try:
                created.mkdir()
            except FileExistsError:
                continue
            if SYNCFS is None:
                fsync_folder(created.parent)
        if len(self._folders) > 10_000:
            self._folders.clear()
        self._folders.add(folder)


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast(Callable[[int], int], function)


SYNCFS = _load_syncfs()


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writing the dirty pages out; wait for nothing


def start_writeback(descriptor: int) -> None:
    """Have the kernel start writing a new store file out now, without waiting for it.

    The batch's :func:`flush_store` makes it durable; started early, the writing spreads
    over the batch instead of all falling on that flush (and on the last batch of a push,
    which the sender's last instance waits for). Best effort: durability never depends on it.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(descriptor, 0, 0, _SYNC_FILE_RANGE_WRITE)


def flush_store(store_dir: Path, files: Iterable[Path]) -> None:
    """Make files written into the store durable, their renames included.

    On Linux one ``syncfs(2)`` of the store's file system does it for a whole batch; elsewhere
    each file and each folder is flushed.
    """
    if SYNCFS is not None:
        descriptor = os.open(store_dir, os.O_RDONLY)
        try:
            if SYNCFS(descriptor) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error))
        finally:
            os.close(descriptor)
        return
    folders: set[Path] = set()
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        folders.add(path.parent)
    for folder in sorted(folders):
        fsync_folder(folder)


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _errno(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# -- the pseudonymized header ----------------------------------------------------------------


def _header(ds: Dataset) -> tuple[PatientFields, StudyFields, SeriesFields]:
    header = _Header(ds)
    study_date = header.date(0x00080020)
    birth = header.date(0x00100030)
    patient = PatientFields(
        sex=header.text(0x00100040)[:16], birth_year=birth.year if birth else None
    )
    study = StudyFields(
        study_date=study_date,
        description=header.text(0x00081030),
        patient_age_years=_age_years(header.text(0x00101010), birth, study_date),
    )
    series = SeriesFields(
        modality=header.text(0x00080060),
        body_part=header.text(0x00180015),
        description=header.text(0x0008103E),
        protocol_name=header.text(0x00181030),
        manufacturer=header.text(0x00080070),
        model=header.text(0x00081090),
        field_strength=header.number(0x00180087),
        slice_thickness=header.number(0x00180050),
        contrast_agent=header.text(0x00180010),
        scanning_sequence=header.text(0x00180020),
        sequence_variant=header.text(0x00180021),
        repetition_time=header.number(0x00180080),
        echo_time=header.number(0x00180081),
        inversion_time=header.number(0x00180082),
        series_date=header.date(0x00080021),
    )
    return patient, study, series


class _Header:
    """Top-level values of a dataset, read from the raw element bytes where the character
    set is one plain codec (pydicom's accessors cost ~20 µs per attribute)."""

    _CODECS: ClassVar[dict[str, str]] = {
        "": "ascii",
        "ISO_IR 6": "ascii",
        "ISO_IR 100": "latin-1",
        "ISO_IR 192": "utf-8",
    }

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.elements = ds._dict
        charset = self.elements.get(BaseTag(0x00080005))
        name = ""
        if charset is not None:
            value = charset.value
            if isinstance(value, bytes):
                name = value.decode("ascii", "replace").strip(" \x00")
            elif value:
                name = str(value if isinstance(value, str) else "\\".join(value)).strip()
        self.codec = self._CODECS.get(name)  # None: let pydicom decode

    def text(self, tag: int) -> str:
        element = self.elements.get(BaseTag(tag))
        if element is None:
            return ""
        value = element.value
        if isinstance(value, bytes) and isinstance(element, RawDataElement):
            if self.codec is not None:
                return _join(value.decode(self.codec, "replace").split("\\"))
            value = self._converted(tag)
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            return value.strip(" \x00")
        if isinstance(value, bytes):
            return ""
        try:
            return _join(str(v) for v in value)
        except TypeError:
            return str(value).strip()

    def _converted(self, tag: int) -> Any:
        try:
            return self.ds[BaseTag(tag)].value
        except Exception:  # a malformed value: as good as absent for the index
            return None

    def number(self, tag: int) -> float | None:
        text = self.text(tag).split("\\", 1)[0].strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None

    def integer(self, tag: int) -> int | None:
        number = self.number(tag)
        if number is None or not number.is_integer() or abs(number) > 2**31 - 1:
            return None
        return int(number)

    def date(self, tag: int) -> dt.date | None:
        text = self.text(tag)
        if len(text) < 8 or not text[:8].isdigit():
            return None
        try:
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None


def _join(values: Iterable[str]) -> str:
    return "\\".join(v.strip(" \x00") for v in values).strip("\\")


_AGE = re.compile(r"^(\d{1,3})([DWMY])$")


def _age_years(age: str, birth: dt.date | None, study_date: dt.date | None) -> int | None:
    """Patient's Age (``045Y``, ``006M``), or the years between birth and study dates."""
    match = _AGE.match(age.strip().upper())
    if match:
        count, unit = int(match.group(1)), match.group(2)
        days = {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}[unit] * count
        return int(days // 365.25) if unit != "Y" else count
    if birth is not None and study_date is not None and study_date >= birth:
        years = study_date.year - birth.year
        if (study_date.month, study_date.day) < (birth.month, birth.day):
            years -= 1
        return years
    return None
