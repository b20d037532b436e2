"""WADO-RS responses as ``multipart/related`` bodies (PS3.18 8.7.3.1), streamed: one file
is read from storage at a time, so a study of any size is sent in the memory of its
largest instance."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterable, Iterator

import pydicom
from pydicom.uid import UID

from hub.dicomweb.schemas import ANY_TRANSFER_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN
from hub.dicomweb.service import StoredInstance
from hub.storage.service import Storage

logger = logging.getLogger(__name__)

DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"


def new_boundary() -> str:
    return uuid.uuid4().hex


def content_type(part_type: str, boundary: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def dicom_parts(
    storage: Storage, files: list[StoredInstance], transfer_syntax: str, boundary: str
) -> Iterator[bytes]:
    """Each file as a part whose Content-Type names the transfer syntax it is sent in."""
    for stored in files:
        syntax: str = stored.transfer_syntax_uid
        data = storage.get(stored.storage_key)
        if transfer_syntax not in {ANY_TRANSFER_SYNTAX, syntax}:
            data, syntax = as_explicit_little_endian(data), EXPLICIT_VR_LITTLE_ENDIAN
        yield _part_header(boundary, f"{DICOM}; transfer-syntax={syntax}", len(data))
        yield data
        yield b"\r\n"
    yield _closing(boundary)


def octet_parts(values: Iterable[bytes], boundary: str) -> Iterator[bytes]:
    for value in values:
        yield _part_header(boundary, OCTET_STREAM, len(value))
        yield value
        yield b"\r\n"
    yield _closing(boundary)


def frame_parts(
    values: Iterable[bytes], media_type: str, syntax: str, boundary: str
) -> Iterator[bytes]:
    """Frames as parts of ``media_type``, each naming the transfer syntax its bytes are in."""
    for value in values:
        yield _part_header(boundary, f"{media_type}; transfer-syntax={syntax}", len(value))
        yield value
        yield b"\r\n"
    yield _closing(boundary)


def _part_header(boundary: str, media_type: str, length: int) -> bytes:
    return (
        f"--{boundary}\r\nContent-Type: {media_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode("ascii")


def _closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


def as_explicit_little_endian(data: bytes) -> bytes:
    """An uncompressed little endian file re-encoded as Explicit VR Little Endian."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return out.getvalue()
