"""The spool: arrivals made durable before they are acknowledged, until stage 1 has run.

A write-ahead log, as a database keeps one. Arrivals are appended to a *segment* file
(``segment-<number>.log``, about :data:`SEGMENT_BYTES` each) and made durable with one
``fdatasync`` of the segment; the storage server acknowledges an instance only after the
``fdatasync`` that covers its record has returned. Arrivals on several associations at once
share that flush (a group commit): whoever flushes covers everything written before it.

Why not a file per arrival: creating a file and making its name durable costs two journal
commits (the file, then its folder), and a journal commit waits for every other write on the
file system. Overwriting blocks that already exist in a segment changes no metadata, so the
flush is a single write and a cache flush. Segments whose arrivals are all stored are kept
as *spares* (``spare-<number>.log``) and written over again; the first segments of a new node
are appended to (correct, only slower), and a spare of zeros is prepared in the background
once the first segment is half full.

A record is a header, the source and the arrival's bytes (a complete DICOM file)::

    magic "HVSP" | state | 3 pad | segment (u64) | job id (u64, 0: none)
    | source length (u16) | 2 pad | length (u32) | CRC-32 (u32) of job id to length,
    source and bytes

Its segment number tells a record of this use of the file from what an earlier use left
beyond it, and its CRC tells a whole record from one a crash cut short: at start a segment is
read up to its first record that is neither. ``state`` is ``P`` (pending) until the rows of
the arrival (or its rejection) are committed, then ``D`` (done); that mark is not flushed,
so after a crash an arrival may be processed once more, which stores it once (the store
deduplicates by the hospital's SOP Instance UID; a rejected one is recorded again).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import mmap
import os
import re
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from node.ingest.exceptions import SpoolUnavailable

logger = logging.getLogger(__name__)

SEGMENT_BYTES = 16 * 2**20
SPARES = 2  # segments kept to be written over; more are removed
PARTIAL_PREFIX = ".partial-"  # a spare being prepared, or a file of the old spool format
LEGACY_SUFFIX = ".dcm"  # the spool held one file per arrival before it was a log

_MAGIC = b"HVSP"
_PENDING, _DONE = b"P", b"D"
_HEADER = struct.Struct("<4sc3xQQH2xII")
_CHECKED = struct.Struct("<QH2xI")  # the header's fields the CRC covers
_STATE_AT = 4  # offset of the state byte in a record
_MAX_SOURCE_BYTES = 64
_SEGMENT_NAME = re.compile(r"^(segment|spare)-(\d{12})\.log$")
_ZEROS = bytes(2**20)


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One arrival in the spool: where its bytes are, where it came from."""

    segment: int
    offset: int  # of the record
    path: Path  # the segment file
    data_offset: int  # of the arrival's bytes
    length: int  # of the arrival's bytes
    source: str
    job_id: int | None

    @property
    def name(self) -> str:
        """A key that orders entries as they arrived."""
        return f"{self.segment:012d}-{self.offset:012d}"


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    descriptor: int
    end: int  # where the next record goes
    size: int  # of the file: writing below it changes no metadata
    outstanding: int = 0  # records not yet done
    failed: bool = False  # a flush failed: nothing written to it is acknowledged


def _encode_source(source: str) -> bytes:
    raw = source.encode("utf-8")[:_MAX_SOURCE_BYTES]
    return raw.decode("utf-8", "ignore").encode("utf-8")  # never half a character


def _checksum(job_id: int, source: bytes, data: bytes | memoryview) -> int:
    # Not the state (it changes once the arrival is stored) nor the segment number (checked
    # against the file's name), so that it can be computed before the record has a place.
    crc = zlib.crc32(_CHECKED.pack(job_id, len(source), len(data)))
    crc = zlib.crc32(source, crc)
    return zlib.crc32(data, crc)


class Spool:
    """The segments of pending arrivals, in ``folder``."""

    def __init__(self, folder: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()  # segments, positions, counts
        self._flush_lock = threading.Lock()  # one flush at a time; the others wait for it
        self._segments: dict[int, _Segment] = {}
        self._current: _Segment | None = None
        self._spares: list[Path] = []
        self._next_number = 1
        self._written = 0  # records written so far (a ticket per record)
        self._flushed = 0  # records made durable so far
        self._preparing: threading.Thread | None = None
        self._closed = False

    # -- start and stop ----------------------------------------------------------------------

    def prepare(self) -> int:
        """Create the folder and remove what a crash left half-made. Returns how many."""
        self.folder.mkdir(parents=True, exist_ok=True)
        removed = 0
        for entry in os.scandir(self.folder):
            if entry.name.startswith(PARTIAL_PREFIX):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed

    def pending(self) -> list[SpoolEntry]:
        """Open the spool: the arrivals waiting for stage 1, oldest first.

        Files of the spool's old format (one per arrival) are copied into the log first.
        """
        found: list[SpoolEntry] = []
        segments: list[tuple[int, Path]] = []
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            match = _SEGMENT_NAME.match(entry.name)
            if match is None:
                continue
            number = int(match.group(2))
            self._next_number = max(self._next_number, number + 1)
            if match.group(1) == "spare":
                self._spares.append(Path(entry.path))
            else:
                segments.append((number, Path(entry.path)))
        for number, path in sorted(segments):
            records = _read_segment(number, path)
            with self._lock:
                if records:
                    self._open_segment(number, path, outstanding=len(records))
                else:
                    self._recycle(path, number)
            found.extend(records)
        return found + self._import_legacy()

    def close(self) -> None:
        """Flush the done marks (so a clean restart redoes nothing) and close the segments."""
        with self._lock:
            self._closed = True
            preparing = self._preparing
        if preparing is not None:
            preparing.join()
        with self._lock:
            for segment in self._segments.values():
                with contextlib.suppress(OSError):
                    _datasync(segment.descriptor)
                os.close(segment.descriptor)
            self._segments.clear()
            self._current = None

    # -- arrivals ----------------------------------------------------------------------------

    def write(self, encoded: bytes, *, source: str, job_id: int | None) -> SpoolEntry:
        """Append ``encoded`` and return once it is durable; SpoolUnavailable if it is not
        (nothing acknowledged depends on it then)."""
        raw_source = _encode_source(source)
        crc = _checksum(job_id or 0, raw_source, encoded)
        size = _HEADER.size + len(raw_source) + len(encoded)
        with self._lock:
            if self._closed:
                raise SpoolUnavailable("the spool is closed")
            segment = self._segment_for(size)
            header = _HEADER.pack(
                _MAGIC, _PENDING, segment.number, job_id or 0, len(raw_source), len(encoded), crc
            )
            offset = segment.end
            try:
                _write_all(segment.descriptor, (header, raw_source, encoded), offset)
            except OSError as exc:
                raise SpoolUnavailable(f"the spool cannot take the arrival ({_why(exc)})") from None
            segment.end = offset + size
            segment.size = max(segment.size, segment.end)
            segment.outstanding += 1
            self._written += 1
            ticket = self._written
            self._maybe_prepare_spare(segment)
        entry = SpoolEntry(
            segment=segment.number,
            offset=offset,
            path=segment.path,
            data_offset=offset + len(header) + len(raw_source),
            length=len(encoded),
            source=raw_source.decode("utf-8"),
            job_id=job_id,
        )
        try:
            self._flush(ticket, segment)
        except OSError as exc:
            self._forget(entry)
            raise SpoolUnavailable(f"the spool cannot be flushed ({_why(exc)})") from None
        return entry

    def _flush(self, ticket: int, segment: _Segment) -> None:
        """Return once record ``ticket`` (in ``segment``) is durable: flush, or wait for the
        flush that covers it (a group commit).

        Records go to one segment at a time, and a segment is flushed before the next one
        takes a record: flushing the current segment covers every record written so far.
        """
        with self._flush_lock:
            with self._lock:
                if segment.failed:
                    raise OSError(5, "a flush of the spool failed")
                if ticket <= self._flushed:
                    return
                covered = self._written
            try:
                _datasync(segment.descriptor)
            except OSError:
                with self._lock:
                    self._fail(segment)
                raise
            with self._lock:
                self._flushed = max(self._flushed, covered)

    def remove(self, entry: SpoolEntry) -> None:
        """Mark an entry done once its outcome is committed (not flushed: an entry that comes
        back after a crash is stored once more, as a duplicate)."""
        with self._lock:
            segment = self._segments.get(entry.segment)
            if segment is None:
                return
            with contextlib.suppress(OSError):
                os.pwrite(segment.descriptor, _DONE, entry.offset + _STATE_AT)
        self._forget(entry)

    def _forget(self, entry: SpoolEntry) -> None:
        with self._lock:
            segment = self._segments.get(entry.segment)
            if segment is None:
                return
            segment.outstanding -= 1
            if segment.outstanding <= 0 and segment is not self._current:
                self._retire(segment)

    # -- segments (under self._lock) ---------------------------------------------------------

    def _segment_for(self, size: int) -> _Segment:
        current = self._current
        if current is not None and (current.end == 0 or current.end + size <= self.segment_bytes):
            return current
        if current is not None:
            # Whatever was written to it is flushed before anything goes to the next one, so
            # that a flush of the next one covers every record written before.
            try:
                _datasync(current.descriptor)
            except OSError as exc:
                self._fail(current)
                raise SpoolUnavailable(f"the spool cannot be flushed ({_why(exc)})") from None
            self._flushed = max(self._flushed, self._written)
            self._current = None
            if current.outstanding <= 0:
                self._retire(current)
        try:
            self._current = self._new_segment()
        except OSError as exc:
            raise SpoolUnavailable(f"the spool cannot take the arrival ({_why(exc)})") from None
        return self._current

    def _fail(self, segment: _Segment) -> None:
        """A flush of ``segment`` failed. Linux may report a failed write-back once only, so
        a later flush proves nothing: no record of it is acknowledged any more (those not
        yet acknowledged are refused, and sent again), and writing goes on in a new one."""
        segment.failed = True
        if self._current is segment:
            self._current = None
            if segment.outstanding <= 0:
                self._retire(segment)

    def _new_segment(self) -> _Segment:
        number = self._next_number
        self._next_number += 1
        path = self.folder / f"segment-{number:012d}.log"
        if self._spares:
            self._spares.pop().replace(path)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        _fsync_folder(self.folder)  # its name is durable before a record in it is
        return self._open_segment(number, path, outstanding=0)

    def _open_segment(self, number: int, path: Path, *, outstanding: int) -> _Segment:
        descriptor = os.open(path, os.O_RDWR)
        size = os.fstat(descriptor).st_size
        segment = _Segment(number, path, descriptor, end=0, size=size, outstanding=outstanding)
        self._segments[number] = segment
        return segment

    def _retire(self, segment: _Segment) -> None:
        """Every arrival of ``segment`` is stored: keep it as a spare, or remove it."""
        self._segments.pop(segment.number, None)
        os.close(segment.descriptor)
        self._recycle(segment.path, segment.number)

    def _recycle(self, path: Path, number: int) -> None:
        with contextlib.suppress(OSError):
            if len(self._spares) < SPARES and path.stat().st_size <= 2 * self.segment_bytes:
                spare = self.folder / f"spare-{number:012d}.log"
                path.replace(spare)  # not flushed: after a crash it is read again
                self._spares.append(spare)
                return
            path.unlink()

    def _maybe_prepare_spare(self, segment: _Segment) -> None:
        """Half-way through a segment written by appending, prepare a spare of zeros, so the
        next one is written over (no metadata to flush) — in the background."""
        if (
            self._spares
            or self._preparing is not None
            or self._closed
            or segment.size > segment.end
            or segment.end < self.segment_bytes // 2
        ):
            return
        number = self._next_number
        self._next_number += 1
        self._preparing = threading.Thread(
            target=self._prepare_spare, args=(number,), name="spool-spare", daemon=True
        )
        self._preparing.start()

    def _prepare_spare(self, number: int) -> None:
        temporary = self.folder / f"{PARTIAL_PREFIX}spare-{number:012d}"
        spare = self.folder / f"spare-{number:012d}.log"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                left = self.segment_bytes
                while left > 0:
                    left -= os.write(descriptor, _ZEROS[: min(left, len(_ZEROS))])
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            temporary.replace(spare)
            with self._lock:
                self._spares.append(spare)
        except OSError as exc:
            logger.warning("spool: cannot prepare a spare segment (%s)", _why(exc))
            temporary.unlink(missing_ok=True)
        finally:
            with self._lock:
                self._preparing = None

    def _import_legacy(self) -> list[SpoolEntry]:
        """Copy arrivals spooled one file each (by an older node) into the log."""
        legacy = sorted(
            Path(e.path)
            for e in os.scandir(self.folder)
            if e.name.endswith(LEGACY_SUFFIX) and not e.name.startswith(".")
        )
        entries: list[SpoolEntry] = []
        for path in legacy:
            source, job_id = _legacy_name(path.name)
            entries.append(self.write(path.read_bytes(), source=source, job_id=job_id))
        for path in legacy:  # only once every one of them is durable in the log
            path.unlink()
        if legacy:
            logger.info("spool: %d arrival(s) of the old format moved into the log", len(legacy))
        return entries


def waiting(folder: Path) -> list[SpoolEntry]:
    """The arrivals waiting in a spool folder, read without opening the spool (what a
    restart would process; for status and checks)."""
    found: list[SpoolEntry] = []
    if not folder.is_dir():
        return found
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        match = _SEGMENT_NAME.match(entry.name)
        if match is not None and match.group(1) == "segment":
            found.extend(_read_segment(int(match.group(2)), Path(entry.path)))
        elif entry.name.endswith(LEGACY_SUFFIX) and not entry.name.startswith("."):
            source, job_id = _legacy_name(entry.name)
            found.append(
                SpoolEntry(0, 0, Path(entry.path), 0, entry.stat().st_size, source, job_id)
            )
    return found


def read(entry: SpoolEntry) -> bytes:
    """The arrival's bytes (FileNotFoundError if its segment is gone)."""
    descriptor = os.open(entry.path, os.O_RDONLY)
    try:
        data = os.pread(descriptor, entry.length, entry.data_offset)
    finally:
        os.close(descriptor)
    if len(data) != entry.length:
        raise FileNotFoundError(2, "the spool entry is cut short")
    return data


def _read_segment(number: int, path: Path) -> list[SpoolEntry]:
    """The pending records of a segment, up to the first record a crash left half-made.

    The segment is mapped, not read: a record may be a multi-frame instance of gigabytes."""
    with path.open("rb") as segment:
        if os.fstat(segment.fileno()).st_size < _HEADER.size:
            return []
        with mmap.mmap(segment.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _records(number, path, data)


def _records(number: int, path: Path, data: mmap.mmap) -> list[SpoolEntry]:
    records: list[SpoolEntry] = []
    offset, size = 0, len(data)
    while offset + _HEADER.size <= size:
        magic, state, segment_number, job_id, source_length, length, crc = _HEADER.unpack_from(
            data, offset
        )
        start = offset + _HEADER.size
        end = start + source_length + length
        if magic != _MAGIC or segment_number != number or end > size:
            break
        raw_source = data[start : start + source_length]
        with memoryview(data) as whole, whole[start + source_length : end] as body:
            whole_record = _checksum(job_id, raw_source, body) == crc
        if not whole_record:
            break
        if state == _PENDING:
            records.append(
                SpoolEntry(
                    segment=number,
                    offset=offset,
                    path=path,
                    data_offset=start + source_length,
                    length=length,
                    source=raw_source.decode("utf-8", "replace"),
                    job_id=job_id or None,
                )
            )
        offset = end
    return records


def _write_all(descriptor: int, parts: Sequence[bytes], offset: int) -> None:
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.pwritev(descriptor, views, offset)
        if written <= 0:
            raise OSError(28, "no space left on device")
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _datasync(descriptor: int) -> None:
    """``fdatasync``, or ``fsync`` where there is none (macOS)."""
    getattr(os, "fdatasync", os.fsync)(descriptor)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _legacy_name(name: str) -> tuple[str, int | None]:
    """Source and job of an old spool file, ``<ns>-<sequence>-<job or 0>-<base32>.dcm``."""
    parts = name[: -len(LEGACY_SUFFIX)].split("-", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return "", None
    text = parts[3]
    try:
        source = base64.b32decode(text.upper() + "=" * (-len(text) % 8)).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        source = ""
    return source, int(parts[2]) or None


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
