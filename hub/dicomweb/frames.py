"""WADO-RS frames and rendered images of an instance (PS3.18 10.4.1.1.3 and 10.4.1.1.4),
what web viewers fetch to draw a picture.

Frames go as ``multipart/related; type="application/octet-stream"``, one part per frame
asked: uncompressed frames are cut from the Pixel Data as stored; compressed ones are
decoded (native little endian), or sent as their stored bitstream when the Accept header
says ``transfer-syntax=*``. Rendered is one frame drawn as PNG (or JPEG) by the shared
renderer: windowed by the file's first window or the ``window`` parameter.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from common.web import render
from hub.dicomweb.exceptions import BadQuery, NotAcceptable
from hub.dicomweb.schemas import ANY_TRANSFER_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN, parse_accept

_FRAME_LIST = re.compile(r"^[1-9][0-9]{0,6}(,[1-9][0-9]{0,6})*$")
PNG, JPEG = "image/png", "image/jpeg"
RENDERED_MAX_SIZE = 4096  # a rendered frame is drawn at its own size, up to this


def frame_numbers(text: str) -> list[int]:
    """``1,3,5`` as the 1-based frame numbers it lists (400 naming the path otherwise)."""
    if not _FRAME_LIST.match(text):
        raise BadQuery("frames", "a comma-separated list of frame numbers from 1")
    return [int(n) for n in text.split(",")]


def frames_syntax(header: str | None) -> str:
    """The transfer syntax frames are asked in: ``*`` (as stored) or Explicit VR Little
    Endian, which the hub sends decoded; 406 for anything else."""
    for accepted in parse_accept(header):
        if accepted.media_type in {"*/*", "multipart/*"}:
            return EXPLICIT_VR_LITTLE_ENDIAN
        if accepted.media_type == "multipart/related" and accepted.params.get(
            "type", "application/octet-stream"
        ).lower() in {"application/octet-stream", "application/*", "*/*"}:
            syntax = accepted.params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN)
            if syntax in {ANY_TRANSFER_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN}:
                return syntax
    raise NotAcceptable(
        'frames are sent as multipart/related; type="application/octet-stream", decoded '
        "(transfer-syntax=1.2.840.10008.1.2.1) or as stored (transfer-syntax=*)"
    )


@dataclass(frozen=True)
class Frame:
    data: bytes
    transfer_syntax: str  # what ``data`` is in: the stored syntax, or native


def frames(data: bytes, numbers: list[int], syntax: str) -> Iterator[Frame]:
    """The frames ``numbers`` of the file ``data``, in the order asked."""
    ds = pydicom.dcmread(io.BytesIO(data))
    _check_numbers(ds, numbers)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if not stored.is_compressed and stored.is_little_endian:
        size = _native_frame_bytes(ds)
        pixels = ds.PixelData
        for n in numbers:
            yield Frame(pixels[(n - 1) * size : n * size], EXPLICIT_VR_LITTLE_ENDIAN)
    elif stored.is_encapsulated and syntax == ANY_TRANSFER_SYNTAX:
        wanted = set(numbers)
        found = {
            i: fragment
            for i, fragment in enumerate(
                generate_frames(ds.PixelData, number_of_frames=render.frame_count(ds)), start=1
            )
            if i in wanted
        }
        for n in numbers:
            yield Frame(found[n], str(stored))
    else:
        for n in numbers:
            decoded = render.decode_frame(io.BytesIO(data), n - 1, str(stored))
            native = decoded.astype(decoded.dtype.newbyteorder("<"), copy=False)
            yield Frame(np.ascontiguousarray(native).tobytes(), EXPLICIT_VR_LITTLE_ENDIAN)


def _check_numbers(ds: Dataset, numbers: list[int]) -> None:
    count = render.frame_count(ds)
    if count == 0:
        raise NotAcceptable("this instance has no pixel data")
    beyond = [n for n in numbers if n > count]
    if beyond:
        raise BadQuery("frames", f"frame {beyond[0]} asked of an instance of {count} frame(s)")


def _native_frame_bytes(ds: Dataset) -> int:
    bits = int(ds.BitsAllocated)
    if bits % 8:
        raise NotAcceptable(f"frames of {bits}-bit pixels are served with the instance only")
    return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8


def rendered_type(header: str | None) -> str:
    """PNG unless the Accept header prefers JPEG; 406 for anything else."""
    for accepted in parse_accept(header):
        if accepted.media_type in {"*/*", "image/*", PNG}:
            return PNG
        if accepted.media_type == JPEG:
            return JPEG
    raise NotAcceptable("rendered frames are sent as image/png or image/jpeg")


def window_parameter(text: str | None) -> tuple[float, float] | None:
    """``window=center,width[,function]`` as (center, width); only the linear function."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise BadQuery("window", "center,width[,linear]") from None
    if width <= 0 or len(parts) > 3 or (len(parts) == 3 and parts[2].lower() != "linear"):
        raise BadQuery("window", "center,width[,linear] with a positive width")
    return center, width


def rendered(
    data: bytes, number: int, media_type: str, window: tuple[float, float] | None
) -> bytes:
    """Frame ``number`` (1-based) of the file ``data`` drawn as ``media_type``."""
    ds = pydicom.dcmread(io.BytesIO(data))
    _check_numbers(ds, [number])
    if window is not None:  # the renderer reads the window from the dataset
        ds.WindowCenter, ds.WindowWidth = window
    frame = render.decode_frame(io.BytesIO(data), number - 1, str(ds.file_meta.TransferSyntaxUID))
    picture = render.png(frame, ds, max_size=RENDERED_MAX_SIZE)
    if media_type == PNG:
        return picture
    out = io.BytesIO()
    Image.open(io.BytesIO(picture)).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()
