"""OCR of burned-in text: the hub reads the pixels of received images that may carry text
(ultrasound, secondary capture, "other", anything flagged ``BurnedInAnnotation=YES``; or
every image where the policy says ``all``) with Tesseract, and reports each frame in which
it reads words. A finding names the file and the frame and how many words were read —
never the words, which may be a patient's name.

Tesseract reads dark text on light ground best and small images poorly, so each frame is
drawn as 8-bit grey over its full range, scaled up to at least :data:`MIN_SIDE` pixels, and
its bright pixels (burned-in overlays are drawn at full brightness) given to Tesseract as
black ink on white. Only words of three letters or digits that Tesseract is confident of
count, so that speckle is not taken for text.
A multi-frame image is read at its first, middle and last frame: burned-in annotations
stay put through a cine loop.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import warnings
from enum import Enum

import numpy
import pydicom
from PIL import Image, ImageOps
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

MIN_SIDE = 1024
MIN_CONFIDENCE = 75
INK_LEVEL = 128  # of 255: an overlay's bright ink (higher levels broke small glyphs)
_WORD = re.compile(r"[A-Za-z0-9]{3,}")
LIKELY_MODALITIES = frozenset({"US", "SC", "OT"})


class OcrPolicy(str, Enum):
    """Which received images the hub reads with OCR."""

    # None.
    OFF = "off"
    # Modalities that often carry burned-in text, and images flagged BurnedInAnnotation=YES.
    LIKELY = "likely"
    # Every image with pixels.
    ALL = "all"


def wanted(ds: Dataset, policy: OcrPolicy) -> bool:
    """Whether ``ds`` (its header, pixels not needed) is to be read under ``policy``."""
    if policy is OcrPolicy.OFF or "Rows" not in ds:  # no image (the header is read alone)
        return False
    if policy is OcrPolicy.ALL:
        return True
    flagged = str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
    return flagged or str(ds.get("Modality", "") or "").upper() in LIKELY_MODALITIES


def available() -> bool:
    return shutil.which("tesseract") is not None


def findings(data: bytes, *, path: str, policy: OcrPolicy) -> list[str]:
    """Findings for one received file (its bytes): one per frame where words are read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        if not wanted(ds, policy):
            return []
        if not available():
            return [f"{path}: not read for burned-in text (tesseract is not installed here)"]
        try:
            full = pydicom.dcmread(io.BytesIO(data))
            pixels = full.pixel_array
        except Exception as exc:  # an undecodable image cannot be cleared either
            logger.warning("OCR: pixels not decoded (%s)", type(exc).__name__)
            return [f"{path}: not read for burned-in text (its pixels cannot be decoded)"]
    found = []
    frames = _frames(full, pixels)
    for index, frame in frames:
        count = words_in(_grey(frame, full))
        if count:
            found.append(f"{path}: frame {index + 1}: OCR reads {count} word(s) in the pixels")
    return found


def words_in(image: Image.Image) -> int:
    """How many confident words Tesseract reads in the bright parts of a grey image."""
    import pytesseract  # noqa: PLC0415 - imported where OCR runs, not by every hub module

    data = pytesseract.image_to_data(
        _bright_as_ink(image), config="--psm 11", output_type=pytesseract.Output.DICT
    )
    return sum(
        1
        for text, confidence in zip(data["text"], data["conf"], strict=True)
        if float(confidence) >= MIN_CONFIDENCE and _WORD.search(str(text))
    )


def _frames(ds: Dataset, pixels: numpy.ndarray) -> list[tuple[int, numpy.ndarray]]:
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if count <= 1:
        return [(0, pixels)]
    picks = sorted({0, count // 2, count - 1})
    return [(index, pixels[index]) for index in picks]


def _grey(frame: numpy.ndarray, ds: Dataset) -> Image.Image:
    """The frame as 8-bit grey over its full range, light meaning bright on screen."""
    values = frame.astype(numpy.float64)
    if values.ndim == 3:  # colour: luminance
        values = values[..., :3] @ numpy.array([0.299, 0.587, 0.114])
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    image = Image.fromarray(scaled.astype(numpy.uint8), mode="L")
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        image = ImageOps.invert(image)
    return image


def _bright_as_ink(image: Image.Image) -> Image.Image:
    """Scaled up to :data:`MIN_SIDE` (smoothly, so small glyphs keep their shape), then the
    bright pixels as black ink on white: overlays are drawn at full brightness, and the
    speckle and anatomy below them vanish, which keeps Tesseract quick and quiet."""
    side = max(image.size)
    if 0 < side < MIN_SIDE:
        factor = -(-MIN_SIDE // side)
        size = (image.width * factor, image.height * factor)
        image = image.resize(size, Image.Resampling.BICUBIC)
    ink = numpy.asarray(image) >= INK_LEVEL
    return Image.fromarray(numpy.where(ink, 0, 255).astype(numpy.uint8), mode="L")
