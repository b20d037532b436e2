"""Reading instances with clear rejections, and writing outputs atomically.

A reader gets a reason it can act on ("not a DICOM file", "truncated", "a DICOMDIR"), never
a stack trace and never a value from the file. A writer never leaves a partial file: the
bytes go to a hidden temporary file in the target folder, which is renamed into place.
"""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from common.deid.exceptions import NotDicom, SourceUnavailable
from common.deid.reader import read_fast

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def read_instance(path: Path) -> Dataset:
    """Read one stored instance; raise NotDicom with a PHI-free reason otherwise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds: Dataset | None
        try:
            ds = read_fast(path)  # the common case, in one pass; None: pydicom decides
            if ds is None:
                ds = dcmread(path)
        except InvalidDicomError:
            ds = _read_without_preamble(path)
        except (
            EOFError,
            ValueError,
            KeyError,
            TypeError,
            OverflowError,
            NotImplementedError,
        ) as exc:
            raise NotDicom(
                f"unreadable DICOM ({type(exc).__name__}): truncated or corrupt"
            ) from None
        except OSError as exc:
            raise SourceUnavailable(
                f"cannot read the file ({exc.strerror or type(exc).__name__})"
            ) from None
        _ensure_transfer_syntax(ds)
        _check_complete(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Some writers omit the transfer syntax; the encoding pydicom read tells it."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        if not UID(str(meta.TransferSyntaxUID)).is_transfer_syntax:
            raise NotDicom("the file meta names no known transfer syntax: corrupt or private")
        return
    implicit, little = ds.original_encoding
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = (
            ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian
        )


def _read_without_preamble(path: Path) -> Dataset:
    """Old exports lack the 128-byte preamble; accept them only if they look like instances."""
    try:
        ds = dcmread(path, force=True)
        if "SOPClassUID" in ds and "SOPInstanceUID" in ds:
            return ds
    except Exception:  # noqa: S110 - anything unreadable is simply not DICOM
        pass
    raise NotDicom("not a DICOM file (no DICM preamble and no SOP Class/Instance UID)") from None


def _check_complete(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", "")
    if str(sop_class) == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        raise NotDicom("a DICOMDIR (media directory), not an instance: skipped")
    if "SOPInstanceUID" not in ds:
        raise NotDicom("no SOP Instance UID: not a storable instance")
    if 0x7FE00010 not in ds and _is_image(str(sop_class)) and not _has_float_pixels(ds):
        raise NotDicom("truncated: an image instance without pixel data")
    pixel = ds.get_item(0x7FE00010)
    if (
        pixel is not None
        and pixel.value is not None
        and not ds.file_meta.TransferSyntaxUID.is_encapsulated
    ):
        expected = _expected_pixel_bytes(ds)
        if expected and len(pixel.value) < expected:
            raise NotDicom(
                "truncated: the pixel data is shorter than its rows, columns and frames require"
            )


def _is_image(sop_class: str) -> bool:
    name = UID(sop_class).name if sop_class else ""
    return name.endswith("Image Storage") and "Presentation" not in name


def _has_float_pixels(ds: Dataset) -> bool:
    return 0x7FE00008 in ds or 0x7FE00009 in ds


def _expected_pixel_bytes(ds: Dataset) -> int:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1))
        if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
            samples = 2  # chroma is subsampled horizontally: two values per pixel
        size = int(ds.Rows) * int(ds.Columns) * samples * frames
    except (AttributeError, TypeError, ValueError):
        return 0
    return (size * bits + 7) // 8


_made_folders: set[Path] = set()
_partial_counter = itertools.count()


def write_atomic(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` all at once: readers see the old file or the new one.

    ``durable`` also flushes the file and its folder to disk, for a receiver that must not
    lose an instance it has acknowledged.
    """
    folder = path.parent
    if folder not in _made_folders:
        folder.mkdir(parents=True, exist_ok=True)
        _made_folders.add(folder)
    temporary = folder / f".partial-{os.getpid()}-{next(_partial_counter)}"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:  # the folder was removed behind our back
        _made_folders.discard(folder)
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        temporary.replace(path)
        if durable:
            directory = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
