"""Central storage behind one interface: put, get, exists, list, delete and move by key, and
compose — an object made of other objects, in order.

Keys are ``/``-separated names (``chunks/ab/abcd…``, ``quarantine/7/…``). The hub ships a
local-disk implementation; an S3-compatible object store can implement :class:`Storage`
later without the curation or release code changing (compose there is a multipart copy of
the parts, or a copy of their bytes; open a stream over ranged GETs or a spooled download).

Uploaded chunks are stored once, under their hash; a released file in quarantine or in a
project's workspace is composed of its chunks. On disk a composed object is a small recipe
naming its parts, so the hub writes each received byte once, and accepting a study moves
recipes. Chunks stay while a received study names them (a later upload of the same bytes is
not sent again); those no study names are collected once old enough
(:mod:`hub.curation.collect`).
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import logging
import mmap
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from hub.storage.exceptions import InvalidKey, ObjectNotFound

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")
_RECIPE = "+parts"  # a composed object's recipe: "+" cannot occur in a key


class Storage(Protocol):
    def put(self, key: str, data: bytes | memoryview) -> None: ...

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO:
        """A seekable stream of the object's bytes, for readers that need only part of it
        (a DICOM header before its pixels)."""
        ...

    def size(self, key: str) -> int: ...

    def modified(self, key: str) -> dt.datetime:
        """When the object was last written (UTC)."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def move(self, source: str, target: str) -> None:
        """Put ``source``'s object under ``target`` and remove ``source`` (an object store
        copies then deletes; a disk renames)."""
        ...

    def compose(self, key: str, parts: Sequence[str]) -> None:
        """Store under ``key`` the bytes of ``parts`` joined in order; the parts stay."""
        ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise InvalidKey(key)
    return key


class LocalStorage:
    """Objects as files under one folder; a put is atomic (write, fsync, rename). A composed
    object is a recipe file beside where the object would be (``NAME+parts``), one part key
    a line, read back by joining the parts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _recipe(self, key: str) -> Path:
        path = self._path(key)
        return path.with_name(path.name + _RECIPE)

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._write(self._path(key), data)
        self._recipe(key).unlink(missing_ok=True)

    def compose(self, key: str, parts: Sequence[str]) -> None:
        recipe = "".join(f"{check_key(part)}\n" for part in parts)
        self._write(self._recipe(key), recipe.encode("ascii"))
        self._path(key).unlink(missing_ok=True)

    def _write(self, path: Path, data: bytes | memoryview) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        if len(data) < _DIRECT_MIN_BYTES or not _write_direct(partial, data):
            with partial.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        partial.replace(path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return b"".join(self.get(part) for part in self._parts(key))

    def _parts(self, key: str) -> list[str]:
        """A composed object's parts; ObjectNotFound when there is no such object at all."""
        try:
            return self._recipe(key).read_text(encoding="ascii").split()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            parts = self._parts(key)
        if len(parts) == 1:
            return self.open(parts[0])  # read as far as the reader goes, not further
        return io.BytesIO(b"".join(self.get(part) for part in parts))

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return sum(self.size(part) for part in self._parts(key))

    def modified(self, key: str) -> dt.datetime:
        for path in (self._path(key), self._recipe(key)):
            try:
                return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
            except FileNotFoundError:
                continue
        raise ObjectNotFound(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file() or self._recipe(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(
            str(path.relative_to(self.root)).removesuffix(_RECIPE)
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._recipe(key).unlink(missing_ok=True)

    def move(self, source: str, target: str) -> None:
        moved = False
        for origin, destination in (
            (self._path(source), self._path(target)),
            (self._recipe(source), self._recipe(target)),
        ):
            if origin.is_file():
                destination.parent.mkdir(parents=True, exist_ok=True)
                origin.replace(destination)
                moved = True
        if not moved:
            raise ObjectNotFound(source)


# Big objects (uploaded chunks) go to disk around the page cache (O_DIRECT): nothing reads
# them back soon (verification reads a header), and copying each received byte into newly
# cached pages cost the hub more CPU than anything else it does with an upload.
_DIRECT_MIN_BYTES = 256 * 1024
_BLOCK = 4096  # O_DIRECT wants the buffer, the offset and the length aligned to blocks
_direct_buffers = threading.local()
_direct_unsupported: set[int] = set()  # devices (e.g. tmpfs) that refused O_DIRECT


def _write_direct(path: Path, data: bytes | memoryview) -> bool:
    """Write ``data`` to a new file at ``path`` with O_DIRECT and fsync it; False (nothing
    written) where the file system does not take O_DIRECT."""
    flag = getattr(os, "O_DIRECT", 0)
    device = path.parent.stat().st_dev
    if not flag or device in _direct_unsupported:
        return False
    size = len(data)
    padded = -(-size // _BLOCK) * _BLOCK
    buffer = _aligned_buffer(padded)
    buffer[:size] = data
    buffer[size:padded] = bytes(padded - size)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o644)
    except OSError:  # EINVAL: no O_DIRECT on this file system
        _direct_unsupported.add(device)
        return False
    try:
        with memoryview(buffer) as view:
            written = 0
            while written < padded:
                written += os.write(descriptor, view[written:padded])
        os.ftruncate(descriptor, size)
        os.fsync(descriptor)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        _direct_unsupported.add(device)  # opened, but its writes are refused
        return False
    finally:
        os.close(descriptor)
    return True


def _aligned_buffer(size: int) -> mmap.mmap:
    """This thread's page-aligned buffer (an anonymous map), grown when ``size`` needs it."""
    buffer: mmap.mmap | None = getattr(_direct_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        if buffer is not None:
            buffer.close()
        buffer = mmap.mmap(-1, max(size, 4 * 1024 * 1024))
        _direct_buffers.buffer = buffer
    return buffer


def chunk_key(sha256: str) -> str:
    return f"chunks/{sha256[:2]}/{sha256}"
