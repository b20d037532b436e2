"""Check what a tool wrote: how many DICOM files, whether pixels survived, what identifiers did.

Not timed. The pixel check compares each output's pixel data with the hashes of the corpus; the
identifier check searches every output file's bytes (private elements included) for the
identifying values the corpus was made with.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corpus import pixel_hash
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

PREAMBLE = 128


@dataclass(frozen=True)
class _Checks:
    identifiers: dict[str, list[str]]
    hashes: set[str]


@dataclass
class Verification:
    """What was found in one tool's output folder."""

    files: int = 0
    dicom_files: int = 0
    unreadable: int = 0
    pixels_identical: int = 0
    without_sop_uids: int = 0
    files_with_identifiers: int = 0
    identifiers_left: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "files": self.files,
            "dicom_files": self.dicom_files,
            "unreadable": self.unreadable,
            "pixels_identical": self.pixels_identical,
            "without_sop_uids": self.without_sop_uids,
            "files_with_identifiers": self.files_with_identifiers,
            "identifiers_left": dict(sorted(self.identifiers_left.items())),
        }


def _is_dicom(head: bytes) -> bool:
    return head[PREAMBLE : PREAMBLE + 4] == b"DICM"


def _identifiers_in(raw: bytes, dataset: Dataset, identifiers: dict[str, list[str]]) -> list[str]:
    """Identifying values still in the file: ``Keyword`` if still in its own element, else
    ``Keyword elsewhere`` (copied into another element, such as a private one)."""
    left = []
    for keyword, values in identifiers.items():
        if not any(value.encode() in raw for value in values):
            continue
        kept = str(dataset.get(keyword, "")) in values
        left.append(keyword if kept else f"{keyword} elsewhere")
    return left


def _read(path: Path) -> Dataset | None:
    try:
        return dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None


def _check_dataset(raw: bytes, dataset: Dataset, checks: _Checks, found: Verification) -> None:
    pixels = dataset.get("PixelData")
    found.pixels_identical += pixels is not None and pixel_hash(pixels) in checks.hashes
    found.without_sop_uids += not ("SOPClassUID" in dataset and "SOPInstanceUID" in dataset)
    left = _identifiers_in(raw, dataset, checks.identifiers)
    found.files_with_identifiers += bool(left)
    found.identifiers_left.update(left)


def _check_file(path: Path, checks: _Checks, found: Verification) -> None:
    raw = path.read_bytes()
    found.files += 1
    if not _is_dicom(raw):
        return
    found.dicom_files += 1
    dataset = _read(path)
    if dataset is None:
        found.unreadable += 1
        return
    _check_dataset(raw, dataset, checks, found)


def verify(folder: Path, manifest: dict[str, Any]) -> Verification:
    """Inspect every file under ``folder``."""
    found = Verification()
    if not folder.is_dir():
        return found
    checks = _Checks(manifest["identifiers"], set(manifest["pixel_sha256"]))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _check_file(path, checks, found)
    return found
