"""The spool: arrivals made durable before they are acknowledged, until stage 1 has run.

One file per arrival, written with :func:`common.deid.files.write_atomic` (a temporary
file, fsync, rename, fsync of the folder): after a crash an entry is either whole or absent.
An entry's name carries what the ingest must remember besides the bytes — an ordering key,
the job it came for and its source (a calling AE title or a job number, base32-encoded so
that any AE title makes a safe file name):

    <ns since epoch, 19 digits>-<sequence>-<job id or 0>-<base32 of the source>.dcm

The entry is removed once the rows of its instance (or its rejection) are committed, so an
entry still present at start is re-processed; stage 1 being deterministic and the store
deduplicating by the hospital's SOP Instance UID, re-processing twice is harmless.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common.deid.files import write_atomic

SUFFIX = ".dcm"
PARTIAL_PREFIX = ".partial-"  # write_atomic's temporary files
_MAX_SOURCE_BYTES = 64


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path
    source: str
    job_id: int | None

    @property
    def name(self) -> str:
        return self.path.name


def _encode_source(source: str) -> str:
    raw = source.encode("utf-8")[:_MAX_SOURCE_BYTES]
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _decode_source(text: str) -> str:
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        return base64.b32decode(padded).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def parse(path: Path) -> SpoolEntry | None:
    """The entry a spool file name describes; None for anything else in the folder."""
    name = path.name
    if not name.endswith(SUFFIX) or name.startswith("."):
        return None
    parts = name[: -len(SUFFIX)].split("-", 3)
    if len(parts) != 4 or not (parts[0].isdigit() and parts[1].isdigit() and parts[2].isdigit()):
        return None
    job = int(parts[2])
    return SpoolEntry(path=path, source=_decode_source(parts[3]), job_id=job or None)


class Spool:
    """The folder of pending arrivals."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._last_ns = 0

    def prepare(self) -> int:
        """Create the folder; remove temporary files a crash left. Returns how many."""
        self.folder.mkdir(parents=True, exist_ok=True)
        removed = 0
        for entry in os.scandir(self.folder):
            if entry.name.startswith(PARTIAL_PREFIX):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed

    def pending(self) -> list[SpoolEntry]:
        """Entries waiting for stage 1, oldest first."""
        entries = [parse(Path(entry.path)) for entry in os.scandir(self.folder)]
        return sorted((e for e in entries if e is not None), key=lambda e: e.name)

    def write(self, encoded: bytes, *, source: str, job_id: int | None) -> SpoolEntry:
        """Make ``encoded`` durable as a new entry; OSError if it cannot be."""
        with self._lock:  # a strictly increasing key, even if the clock steps back
            now = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = now
            sequence = next(self._sequence) % 1_000_000
        name = f"{now:019d}-{sequence:06d}-{job_id or 0}-{_encode_source(source)}{SUFFIX}"
        path = self.folder / name
        write_atomic(path, encoded, durable=True)
        return SpoolEntry(path=path, source=source, job_id=job_id)

    @staticmethod
    def remove(entry: SpoolEntry) -> None:
        """Forget an entry whose outcome is committed. Not flushed: an entry that comes back
        after a crash is stored once more, as a duplicate."""
        entry.path.unlink(missing_ok=True)
