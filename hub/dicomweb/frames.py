"""WADO-RS frames and rendered images of an instance (PS3.18 10.4.1.1.3 and 10.4.1.1.4),
what web viewers fetch to draw a picture.

Frames go as ``multipart/related``, one part per frame asked. Uncompressed (native) frames
are cut from the Pixel Data as stored; compressed ones are decoded to native little endian,
or sent as their stored bitstream when the Accept header takes it: ``transfer-syntax=*`` (or
the stored UID) on ``application/octet-stream``, or the bitstream's own media type
(``image/jp2``, ``image/jls``, ``image/jpeg``, ``image/dicom-rle``...) when the stored syntax
is one that type carries (PS3.18 table 8.7.3-5). Rendered is one frame drawn as JPEG (or
PNG) by the shared renderer: windowed by the file's first window or the ``window`` parameter.
"""

from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from common.web import render
from hub.dicomweb.exceptions import BadQuery, NotAcceptable
from hub.dicomweb.schemas import (
    ANY_TRANSFER_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    MediaRange,
    parse_accept,
)

_FRAME_LIST = re.compile(r"^[1-9][0-9]{0,6}(,[1-9][0-9]{0,6})*$")
OCTET_STREAM = "application/octet-stream"
PNG, JPEG = "image/png", "image/jpeg"
RENDERED_MAX_SIZE = 4096  # a rendered frame is drawn at its own size, up to this
JPEG_QUALITY = 90

# PS3.18 table 8.7.3-5: the transfer syntaxes each compressed frame media type carries, the
# first being the one meant when the Accept header names none.
FRAME_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "image/jpeg": (
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    ),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
}
# The names these types had before they were registered, which clients still send.
FRAME_MEDIA_TYPES["image/x-dicom-rle"] = FRAME_MEDIA_TYPES["image/dicom-rle"]
FRAME_MEDIA_TYPES["image/x-jls"] = FRAME_MEDIA_TYPES["image/jls"]
_ANY_OCTET_STREAM = {OCTET_STREAM, "application/*", "*/*"}
# PS3.18 8.3.5.1.4: the window's function, as its VOI LUT Function (PS3.3 C.11.2.1.3).
_WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


def frame_numbers(text: str) -> list[int]:
    """``1,3,5`` as the 1-based frame numbers it lists (400 naming the path otherwise)."""
    if not _FRAME_LIST.match(text):
        raise BadQuery("frames", "a comma-separated list of frame numbers from 1")
    return [int(n) for n in text.split(",")]


@dataclass(frozen=True)
class FrameForm:
    """How the frames go out: each part's media type and the transfer syntax of its bytes
    (Explicit VR Little Endian for native frames, else the stored syntax's bitstream)."""

    media_type: str
    transfer_syntax: str

    @property
    def native(self) -> bool:
        return self.transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN


NATIVE = FrameForm(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)


def frame_form(header: str | None, stored_syntax: str) -> FrameForm:
    """The first form in the Accept header's order that the hub can send frames of a file
    stored in ``stored_syntax`` in; 406 naming the forms it can send otherwise."""
    stored = UID(stored_syntax)
    for accepted in parse_accept(header):
        form = _form(accepted, stored)
        if form is not None:
            return form
    raise NotAcceptable(f"frames of this instance are sent as {_offer(stored)}")


def _form(accepted: MediaRange, stored: UID) -> FrameForm | None:
    if accepted.media_type in {"*/*", "multipart/*"}:
        return NATIVE
    if accepted.media_type != "multipart/related":
        return None
    part_type = accepted.params.get("type", OCTET_STREAM).lower()
    asked = accepted.params.get("transfer-syntax")
    as_stored = asked in {ANY_TRANSFER_SYNTAX, stored}
    if part_type in _ANY_OCTET_STREAM:
        if asked in {None, EXPLICIT_VR_LITTLE_ENDIAN} or (as_stored and not stored.is_encapsulated):
            return NATIVE
        return FrameForm(OCTET_STREAM, str(stored)) if as_stored else None
    carried = FRAME_MEDIA_TYPES.get(part_type, ())
    if stored in carried and (as_stored or (asked is None and carried[0] == stored)):
        return FrameForm(part_type, str(stored))
    return None


def _offer(stored: UID) -> str:
    native = 'multipart/related; type="application/octet-stream" (native little endian)'
    if not stored.is_encapsulated:
        return native
    own = [
        media_type
        for media_type, carried in FRAME_MEDIA_TYPES.items()
        if stored in carried and not media_type.startswith("image/x-")
    ]
    as_stored = ", ".join(f'type="{media_type}"' for media_type in own) or 'type="*/*"'
    return f"{native}, or as stored with transfer-syntax=* ({as_stored})"


def frames(data: bytes, numbers: list[int], form: FrameForm) -> list[bytes]:
    """The frames ``numbers`` of the file ``data`` in ``form``, in the order asked."""
    ds = pydicom.dcmread(io.BytesIO(data))
    _check_numbers(ds, numbers)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if not stored.is_encapsulated and stored.is_little_endian:
        return [_native_frame(ds, n) for n in numbers]
    if not form.native:
        return _stored_frames(ds, numbers)
    return [_decoded_frame(ds, data, n, stored) for n in numbers]


def _check_numbers(ds: Dataset, numbers: list[int]) -> None:
    count = render.frame_count(ds)
    if count == 0:
        raise NotAcceptable("this instance has no pixel data")
    beyond = [n for n in numbers if n > count]
    if beyond:
        raise BadQuery("frames", f"frame {beyond[0]} asked of an instance of {count} frame(s)")


def _native_frame(ds: Dataset, number: int) -> bytes:
    """Frame ``number`` cut from native Pixel Data: rows x columns x samples, planes as
    stored (planar configuration 1 keeps its planes within the frame)."""
    bits = int(ds.BitsAllocated)
    samples = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    if bits == 1:  # frames follow one another bit by bit, not byte by byte
        return _one_bit_frame(ds.PixelData, number, samples)
    if bits % 8:
        raise NotAcceptable(f"frames of {bits}-bit pixels are served with the instance only")
    size = samples * bits // 8
    return bytes(ds.PixelData[(number - 1) * size : number * size])


def _one_bit_frame(pixels: bytes, number: int, samples: int) -> bytes:
    """A frame of 1-bit pixels, which may start mid-byte, on its own bytes (PS3.5 8.1.1:
    the first pixel in the least significant bit), its last byte padded with zeros."""
    start = (number - 1) * samples
    first_byte, last_byte = start // 8, (start + samples + 7) // 8
    bits = np.unpackbits(np.frombuffer(pixels[first_byte:last_byte], np.uint8), bitorder="little")
    offset = start - first_byte * 8
    return np.packbits(bits[offset : offset + samples], bitorder="little").tobytes()


def _stored_frames(ds: Dataset, numbers: list[int]) -> list[bytes]:
    """The stored bitstreams of the frames asked, read up to the last one asked."""
    fragments = generate_frames(ds.PixelData, number_of_frames=render.frame_count(ds))
    found = dict(enumerate(itertools.islice(fragments, max(numbers)), start=1))
    return [found[n] for n in numbers]


def _decoded_frame(ds: Dataset, data: bytes, number: int, stored: UID) -> bytes:
    decoded = render.decode_frame(io.BytesIO(data), number - 1, str(stored))
    if int(ds.BitsAllocated) == 1:
        return np.packbits(decoded.astype(np.uint8).ravel(), bitorder="little").tobytes()
    return _little_endian(decoded)


def _little_endian(values: NDArray[np.generic]) -> bytes:
    native = values.astype(values.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(native).tobytes()


# -- rendered ------------------------------------------------------------------------------


def rendered_type(header: str | None) -> str:
    """JPEG, the default of PS3.18 for rendered images, unless the Accept header prefers
    PNG; 406 for anything else."""
    for accepted in parse_accept(header):
        if accepted.media_type in {"*/*", "image/*", JPEG}:
            return JPEG
        if accepted.media_type == PNG:
            return PNG
    raise NotAcceptable("rendered frames are sent as image/jpeg or image/png")


def window_parameter(text: str | None) -> render.VoiWindow | None:
    """``window=center,width[,function]``: linear (the default), linear-exact or sigmoid."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    expected = "center,width[,linear|linear-exact|sigmoid]"
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise BadQuery("window", expected) from None
    function = _WINDOW_FUNCTIONS.get(parts[2].lower() if len(parts) == 3 else "linear")
    if function is None or len(parts) > 3:
        raise BadQuery("window", expected)
    if width < 1 if function == "LINEAR" else width <= 0:
        raise BadQuery("window", "a width of at least 1 (linear) or above 0")
    return render.VoiWindow(center, width, function)


def quality_parameter(text: str | None) -> int:
    """``quality=1..100`` for JPEG (PS3.18 8.3.5.1.2); ignored for PNG, which is lossless."""
    if text is None:
        return JPEG_QUALITY
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise BadQuery("quality", "a whole number from 1 to 100")
    return int(text)


@dataclass(frozen=True)
class Rendering:
    media_type: str
    voi: render.VoiWindow | None = None  # None: the file's own first window
    quality: int = JPEG_QUALITY


def rendered(data: bytes, number: int, rendering: Rendering) -> bytes:
    """Frame ``number`` (1-based) of the file ``data`` drawn as ``rendering`` asks."""
    ds = pydicom.dcmread(io.BytesIO(data))
    _check_numbers(ds, [number])
    frame = render.decode_frame(io.BytesIO(data), number - 1, str(ds.file_meta.TransferSyntaxUID))
    image = render.picture(frame, ds, voi=rendering.voi, max_size=RENDERED_MAX_SIZE)
    out = io.BytesIO()
    if rendering.media_type == PNG:
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=rendering.quality)
    return out.getvalue()
