"""Central storage behind one interface: put, get, exists, list, delete and move by key, and
compose — an object made of other objects, in order.

Keys are ``/``-separated names (``chunks/ab/abcd…``, ``quarantine/7/…``). The hub ships a
local-disk implementation; an S3-compatible object store can implement :class:`Storage`
later without the curation or release code changing (compose there is a multipart copy of
the parts, or a copy of their bytes).

Uploaded chunks are stored once, under their hash; a released file in quarantine or in a
project's workspace is composed of its chunks. On disk a composed object is a small recipe
naming its parts, so the hub writes each received byte once, and accepting a study moves
recipes. Chunks are never deleted (a later upload of the same bytes is not sent again).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from hub.storage.exceptions import InvalidKey, ObjectNotFound

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")
_RECIPE = "+parts"  # a composed object's recipe: "+" cannot occur in a key


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

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

    def put(self, key: str, data: bytes) -> None:
        self._write(self._path(key), data)
        self._recipe(key).unlink(missing_ok=True)

    def compose(self, key: str, parts: Sequence[str]) -> None:
        recipe = "".join(f"{check_key(part)}\n" for part in parts)
        self._write(self._recipe(key), recipe.encode("ascii"))
        self._path(key).unlink(missing_ok=True)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        with partial.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            pass
        try:
            parts = self._recipe(key).read_text(encoding="ascii").split()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        return b"".join(self.get(part) for part in parts)

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


def chunk_key(sha256: str) -> str:
    return f"chunks/{sha256[:2]}/{sha256}"
