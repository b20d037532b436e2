"""Burned-in annotation policy and region blanking (DICOM PS3.15 Annex E, Clean Pixel Data).

Header de-identification cannot see text that a device drew into the image itself: ultrasound
scanners, screen captures and many secondary captures burn the patient's name, ID and dates
into the pixels. PS3.15 Annex E's *Clean Pixel Data Option* says such text must be removed
or the instance must not leave the site. Finding text by OCR is neither cheap nor reliable, so
havenet follows the approach of RSNA CTP's DicomPixelAnonymizer: a site lists, per kind of
device (Manufacturer and Manufacturer Model Name regexes, Modality, image size), the rectangles
where that device draws its annotations, and those rectangles are blanked. Instances that are
risky (BurnedInAnnotation YES, a modality, SOP class or image type the policy distrusts) and
that no rule covers are rejected rather than guessed at.

``assess`` is header-only and cheap: it runs for every instance. ``blank`` edits the pixels:

* Native (uncompressed, including deflated and big endian) pixel data is edited in its bytes,
  so the transfer syntax and every pixel outside the boxes stay exactly as they were.
* Compressed pixel data is decoded, blanked and re-encoded in the same transfer syntax, but
  only losslessly (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless, and JPEG-LS
  Near-Lossless re-encoded with NEAR=0, so no further loss is added), and the result is
  decoded again and compared before it replaces the original. Other transfer syntaxes (lossy
  JPEG, JPEG Lossless, lossy JPEG 2000, HTJ2K...) cannot be re-encoded without new loss or at
  all by pydicom, so the instance is rejected with ``PixelCleaningFailed``.

The fill value renders black: the lowest value Bits Stored and Pixel Representation allow
(0 for unsigned data) for MONOCHROME2 and RGB, the highest for MONOCHROME1, and lowest luma
with neutral chroma for YBR_FULL. PALETTE COLOR boxes get index 0, which most palettes map to
black; either way the box is uniform and the text is gone. Filling the whole stored word also
clears any retired overlay bits that a device kept in the high bits of the pixels.

Overlays (60xx,3000), Presentation States and other graphics outside Pixel Data are the
profile's business, not this module's. Reasons and log messages name attributes, modality,
SOP class and transfer syntax names and sizes, never identifiers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import compress
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from common.deid.exceptions import PixelCleaningFailed

__all__ = ["BlankingRule", "PixelDecision", "PixelPolicy", "assess", "blank"]

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

_SOP_CLASS_UID = 0x00080016
_IMAGE_TYPE = 0x00080008
_MODALITY = 0x00080060
_MANUFACTURER = 0x00080070
_MODEL = 0x00081090
_BURNED_IN = 0x00280301
_SAMPLES = 0x00280002
_PHOTOMETRIC = 0x00280004
_PLANAR = 0x00280006
_FRAMES = 0x00280008
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_BITS_ALLOCATED = 0x00280100
_BITS_STORED = 0x00280101
_PIXEL_REPRESENTATION = 0x00280103
_PIXEL_DATA = 0x7FE00010
_ANY_PIXEL_DATA = (_PIXEL_DATA, 0x7FE00008, 0x7FE00009)  # + Float, Double Float Pixel Data
_EXTENDED_OFFSETS = (0x7FE00001, 0x7FE00002)
# Image Pixel module attributes the encoder and decoder read.
_IMAGE_PIXEL = (
    *(_SAMPLES, _PHOTOMETRIC, _PLANAR, _FRAMES, _ROWS, _COLUMNS),
    *(_BITS_ALLOCATED, _BITS_STORED, _PIXEL_REPRESENTATION),
)

# Compressed syntaxes re-encoded without adding loss (keyword arguments for compress()).
_REENCODABLE: dict[str, dict[str, Any]] = {
    RLELossless: {},
    JPEGLSLossless: {},
    JPEGLSNearLossless: {"jls_error": 0},  # NEAR=0 adds no loss; any JPEG-LS decoder reads it
    JPEG2000Lossless: {},
}
_FILLABLE = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_RCT", "YBR_ICT"}
)
_KNOWN_PHOTOMETRIC = _FILLABLE | {
    "YBR_FULL_422",
    "YBR_PARTIAL_422",
    "YBR_PARTIAL_420",
    "HSV",
    "ARGB",
    "CMYK",
    "XYB",
}


@dataclass(frozen=True)
class BlankingRule:
    """Regions to blank for one kind of device and image size (as CTP's DicomPixelAnonymizer does).

    Every criterion that is set must hold; an unset criterion matches anything. An empty
    ``boxes`` declares that matching instances carry no burned-in text (nothing is blanked).
    """

    boxes: tuple[Box, ...]  # (left, top, right, bottom) in pixels; right/bottom exclusive
    manufacturer: str | None = None  # case-insensitive regex searched in Manufacturer (0008,0070)
    model: str | None = None  # case-insensitive regex searched in ManufacturerModelName (0008,1090)
    modality: str | None = None  # exact Modality
    rows: int | None = None
    columns: int | None = None
    line: int = 0  # line in the profile file that defined it (for messages)
    _manufacturer_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _model_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for left, top, right, bottom in self.boxes:
            if not 0 <= left < right or not 0 <= top < bottom:
                raise ValueError(
                    f"line {self.line}: box ({left}, {top}, {right}, {bottom}) must have "
                    "0 <= left < right and 0 <= top < bottom"
                )
        object.__setattr__(self, "_manufacturer_re", self._compile("manufacturer"))
        object.__setattr__(self, "_model_re", self._compile("model"))

    def _compile(self, name: str) -> re.Pattern[str] | None:
        pattern: str | None = getattr(self, name)
        if pattern is None:
            return None
        try:
            return re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"line {self.line}: {name} is not a valid regex: {exc}") from None

    def matches(self, ds: Dataset) -> bool:
        """Whether this rule covers ``ds`` (header only)."""
        return self._matches(_Header.of(ds))

    def _matches(self, header: _Header) -> bool:
        if self.modality is not None and header.modality != self.modality:
            return False
        if self.rows is not None and header.rows != self.rows:
            return False
        if self.columns is not None and header.columns != self.columns:
            return False
        manufacturer, model = self._manufacturer_re, self._model_re
        if manufacturer is not None and not manufacturer.search(header.manufacturer):
            return False
        return model is None or model.search(header.model) is not None


class _Header(NamedTuple):
    """The attributes rules match on, read once per instance however many rules there are."""

    modality: str
    manufacturer: str
    model: str
    rows: Any
    columns: Any

    @classmethod
    def of(cls, ds: Dataset) -> _Header:
        return cls(
            _text(ds, _MODALITY),
            _text(ds, _MANUFACTURER),
            _text(ds, _MODEL),
            _value(ds, _ROWS),
            _value(ds, _COLUMNS),
        )


@dataclass(frozen=True)
class PixelPolicy:
    """Which instances may carry burned-in text, and the rules that clean them."""

    reject_burned_in: bool = True  # BurnedInAnnotation == "YES" and no rule matches → reject
    reject_modalities: frozenset[str] = frozenset()  # e.g. {"US"}: rejected unless a rule matches
    reject_sop_classes: frozenset[str] = frozenset()  # SOP Class UIDs, e.g. Secondary Capture
    reject_image_types: frozenset[str] = frozenset()  # values in ImageType, e.g. "SCREEN SAVE"
    rules: tuple[BlankingRule, ...] = ()


@dataclass(frozen=True)
class PixelDecision:
    """What to do with an instance's pixels."""

    action: Literal["accept", "blank", "reject"]
    reason: str = ""  # PHI-free, for reject
    rule: BlankingRule | None = None  # for blank


_ACCEPT = PixelDecision("accept")


def assess(ds: Dataset, policy: PixelPolicy) -> PixelDecision:
    """Decide from the header alone whether ``ds`` is accepted, blanked or rejected.

    The first matching rule wins (blank). Otherwise a risky instance is rejected, with a reason
    naming every trigger, and anything else is accepted. An instance without pixel data is
    accepted unless its SOP class is distrusted (an Encapsulated PDF carries its content
    outside Pixel Data); note that a dataset read with ``stop_before_pixels`` looks pixel-less.
    """
    sop_class = _text(ds, _SOP_CLASS_UID)
    if not any(tag in ds for tag in _ANY_PIXEL_DATA):
        if sop_class in policy.reject_sop_classes:
            reason = f"{_describe(sop_class, 'SOP class')} may carry content outside Pixel Data"
            return PixelDecision("reject", reason)
        return _ACCEPT
    if policy.rules:
        header = _Header.of(ds)
        for rule in policy.rules:
            if rule._matches(header):
                return PixelDecision("blank", rule=rule)
    triggers = []
    if policy.reject_burned_in and _text(ds, _BURNED_IN).upper() == "YES":
        triggers.append("BurnedInAnnotation is YES")
    if policy.reject_modalities and (modality := _text(ds, _MODALITY)) in policy.reject_modalities:
        triggers.append(f"modality {modality} may carry burned-in text")
    if sop_class in policy.reject_sop_classes:
        triggers.append(f"{_describe(sop_class, 'SOP class')} may carry burned-in text")
    if policy.reject_image_types:
        risky = sorted(set(_values(ds, _IMAGE_TYPE)) & policy.reject_image_types)
        triggers.extend(f"image type {kind} may carry burned-in text" for kind in risky)
    if not triggers:
        return _ACCEPT
    return PixelDecision("reject", "; ".join(triggers) + " and no blanking rule matches")


def blank(ds: Dataset, rule: BlankingRule) -> None:
    """Fill ``rule``'s boxes (clipped to the image) in every frame and sample of ``ds``, in place.

    The transfer syntax, SOP Instance UID and all other attributes are kept; only Pixel Data
    (and, for compressed data, the Extended Offset Table if the new encoding needs one) changes.
    On ``PixelCleaningFailed`` the dataset is left unchanged.
    """
    if _PIXEL_DATA not in ds:
        raise PixelCleaningFailed("there is no integer Pixel Data to blank")
    if not rule.boxes:
        return
    syntax = _transfer_syntax(ds)
    rows, columns = _required_int(ds, _ROWS, "Rows"), _required_int(ds, _COLUMNS, "Columns")
    boxes = _clip(rule.boxes, rows, columns)
    if not boxes:
        logger.debug("rule at line %d: no box overlaps a %dx%d image", rule.line, columns, rows)
        return
    if syntax.is_encapsulated:
        _blank_encapsulated(ds, syntax, boxes)
    else:
        _blank_native(ds, syntax, boxes, rows, columns)
    logger.debug(
        "blanked %d box(es) of a %dx%d %s image (rule at line %d)",
        len(boxes),
        columns,
        rows,
        _describe(syntax, "transfer syntax"),
        rule.line,
    )


def _blank_native(ds: Dataset, syntax: UID, boxes: list[Box], rows: int, columns: int) -> None:
    bits_allocated = _required_int(ds, _BITS_ALLOCATED, "BitsAllocated")
    if bits_allocated not in (8, 16, 32):
        raise PixelCleaningFailed(f"native pixel data with {bits_allocated} bits allocated")
    element = ds[_PIXEL_DATA]
    if not syntax.is_little_endian and bits_allocated == 8 and element.VR == "OW":
        raise PixelCleaningFailed("8-bit pixel data in OW with Explicit VR Big Endian")
    photometric = _text(ds, _PHOTOMETRIC)
    if photometric == "YBR_FULL_422":
        raise PixelCleaningFailed("native YBR_FULL_422 (subsampled) pixel data")
    samples = _int(ds, _SAMPLES, 1)
    frames = _int(ds, _FRAMES, 1) or 1
    signed = _int(ds, _PIXEL_REPRESENTATION, 0) == 1
    bits_stored = _int(ds, _BITS_STORED, bits_allocated)
    if not 0 < bits_stored <= bits_allocated:
        raise PixelCleaningFailed(f"{bits_stored} bits stored in {bits_allocated} allocated")
    fill = _fill(photometric, bits_stored, signed, samples)
    order = "<" if syntax.is_little_endian else ">"
    dtype = np.dtype(f"{order}{'i' if signed else 'u'}{bits_allocated // 8}")
    count = frames * rows * columns * samples
    buffer = bytearray(element.value)
    if len(buffer) < count * dtype.itemsize:
        raise PixelCleaningFailed(
            f"Pixel Data holds {len(buffer)} bytes, fewer than the {count * dtype.itemsize} "
            f"that {frames} frame(s) of {columns}x{rows}x{samples} need"
        )
    pixels = np.frombuffer(buffer, dtype=dtype, count=count)
    if samples > 1 and _int(ds, _PLANAR, 0) == 1:  # planar: all R, then all G, then all B
        view = pixels.reshape(frames, samples, rows, columns).transpose(0, 2, 3, 1)
    else:
        view = pixels.reshape(frames, rows, columns, samples)
    _fill_boxes(view, boxes, fill)
    ds[_PIXEL_DATA].value = bytes(buffer)


def _blank_encapsulated(ds: Dataset, syntax: UID, boxes: list[Box]) -> None:
    options = _REENCODABLE.get(syntax)
    if options is None:
        raise PixelCleaningFailed(
            f"cannot re-encode {_describe(syntax, 'transfer syntax')} without adding loss"
        )
    decoder = get_decoder(syntax)
    try:
        pixels, meta = decoder.as_array(ds, raw=True)
    except Exception as exc:
        logger.debug("decoding %s failed: %s", syntax.name, type(exc).__name__)
        raise PixelCleaningFailed(f"cannot decode the {syntax.name} pixel data") from exc
    pixels = np.ascontiguousarray(pixels)
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    rows, columns = int(meta["rows"]), int(meta["columns"])
    samples = int(meta["samples_per_pixel"])
    signed = int(meta["pixel_representation"]) == 1
    # Decoded colour may differ from the header: JPEG 2000 YBR_RCT decodes to RGB.
    fill = _fill(str(meta["photometric_interpretation"]), int(meta["bits_stored"]), signed, samples)
    _fill_boxes(pixels.reshape(-1, rows, columns, samples), boxes, fill)

    scratch = Dataset()  # encode beside ds, so a failure leaves ds untouched
    scratch.file_meta = FileMetaDataset()
    scratch.file_meta.TransferSyntaxUID = syntax
    for tag in _IMAGE_PIXEL:
        if tag in ds:
            element = ds[tag]
            scratch[tag] = DataElement(element.tag, element.VR, element.value)
    try:
        compress(scratch, syntax, pixels, generate_instance_uid=False, **options)
        check, _ = decoder.as_array(scratch, raw=True)
    except Exception as exc:
        logger.debug("re-encoding %s failed: %s", syntax.name, type(exc).__name__)
        raise PixelCleaningFailed(
            f"cannot re-encode {samples}-sample {meta['bits_stored']}-bit "
            f"{meta['photometric_interpretation']} pixel data as {syntax.name}"
        ) from exc
    if not np.array_equal(check, pixels):
        raise PixelCleaningFailed(f"re-encoded {syntax.name} pixel data does not decode back")
    for tag in _EXTENDED_OFFSETS:
        if tag in ds:
            del ds[tag]
    for tag in (_PIXEL_DATA, *_EXTENDED_OFFSETS):
        if tag in scratch:
            ds[tag] = scratch[tag]


def _fill_boxes(view: np.ndarray[Any, Any], boxes: list[Box], fill: tuple[int, ...]) -> None:
    """Fill ``view`` shaped (frames, rows, columns, samples)."""
    for left, top, right, bottom in boxes:
        for sample, value in enumerate(fill):
            view[:, top:bottom, left:right, sample] = value


def _fill(photometric: str, bits_stored: int, signed: bool, samples: int) -> tuple[int, ...]:
    """The per-sample value that renders black (see the module docstring)."""
    if photometric not in _FILLABLE:
        known = photometric in _KNOWN_PHOTOMETRIC
        raise PixelCleaningFailed(
            f"photometric interpretation {photometric if known else '(unrecognised)'} "
            "is not supported for blanking"
        )
    if signed:
        low, high = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        low, high = 0, 2**bits_stored - 1
    if photometric == "MONOCHROME1":
        return (high,) * samples
    if photometric.startswith("YBR") and samples == 3:
        neutral = 0 if signed else 2 ** (bits_stored - 1)
        return (low, neutral, neutral)
    return (low,) * samples


def _clip(boxes: Sequence[Box], rows: int, columns: int) -> list[Box]:
    clipped = [
        (left, top, min(right, columns), min(bottom, rows)) for left, top, right, bottom in boxes
    ]
    return [box for box in clipped if box[0] < box[2] and box[1] < box[3]]


def _transfer_syntax(ds: Dataset) -> UID:
    file_meta: FileMetaDataset | None = getattr(ds, "file_meta", None)
    syntax = None if file_meta is None else file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise PixelCleaningFailed("the file meta has no TransferSyntaxUID")
    return UID(syntax)


def _value(ds: Dataset, tag: int) -> Any:
    element: DataElement | None = ds.get(tag)
    return None if element is None else element.value


def _text(ds: Dataset, tag: int) -> str:
    value = _value(ds, tag)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value).strip()
    return str(value).strip()


def _values(ds: Dataset, tag: int) -> list[str]:
    value = _value(ds, tag)
    if value is None:
        return []
    items = value if isinstance(value, MultiValue) else [value]
    return [str(item).strip().upper() for item in items]


def _int(ds: Dataset, tag: int, default: int) -> int:
    value = _value(ds, tag)
    try:
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError):
        where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        raise PixelCleaningFailed(f"attribute {where} is not an integer") from None


def _required_int(ds: Dataset, tag: int, keyword: str) -> int:
    value = _int(ds, tag, 0)
    if value <= 0:
        raise PixelCleaningFailed(f"{keyword} is absent or not positive")
    return value


def _describe(uid: str, kind: str) -> str:
    """``kind`` and the UID's registered name; never the UID itself (messages carry no UIDs)."""
    name = UID(uid).name
    return f"{kind} {name}" if name and name != uid else f"an unregistered {kind}"
