"""DICOM pixels drawn as PNG for the pages: the node's QA preview and the hub's curator viewer.

One frame at a time, windowed by the dataset's first window (else the frame's own range),
MONOCHROME1 inverted, palette and RGB kept in colour, shrunk to at most ``max_size`` pixels
a side. Only pixels are drawn: no header value is ever written into the picture. A viewer
may choose its own window (``VoiWindow``: linear, linear-exact or sigmoid) for ``picture``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.pixels.utils import pixel_array

from common.errors import PermanentError

PREVIEW_MAX_SIZE = 512


class FrameUnreadable(PermanentError):
    """The pixel data of a file does not decode; the message names the transfer syntax."""


def frame_count(ds: Dataset) -> int:
    """How many frames the dataset's pixel data holds (0 without pixel data)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return 0
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def decode_frame(source: BinaryIO, index: int, transfer_syntax: str) -> NDArray[np.generic]:
    """Frame ``index`` (0-based) of the file in ``source``; only that frame is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixel_array(source, index=index)
    except Exception as exc:  # decoders raise many kinds; the syntax is enough to say why
        raise FrameUnreadable(
            f"the pixels do not decode ({transfer_syntax}; {type(exc).__name__})"
        ) from None


def png(frame: NDArray[np.generic], ds: Dataset, *, max_size: int = PREVIEW_MAX_SIZE) -> bytes:
    """One decoded frame as an 8-bit PNG: windowed by the dataset's window or min/max."""
    buffer = io.BytesIO()
    picture(frame, ds, max_size=max_size).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class VoiWindow:
    """A window chosen by the viewer rather than read from the file (PS3.3 C.11.2.1.2.1)."""

    center: float
    width: float
    function: str = "LINEAR"  # VOI LUT Function: LINEAR, LINEAR_EXACT or SIGMOID

    def grey_levels(self, values: NDArray[np.float64]) -> NDArray[np.uint8]:
        """``values`` (after the modality LUT) as grey levels 0-255 through this window."""
        center, width = self.center, self.width
        if self.function == "SIGMOID":
            levels = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        elif self.function == "LINEAR_EXACT":
            levels = np.clip((values - center) / width + 0.5, 0.0, 1.0) * 255.0
        else:  # LINEAR's half-pixel offsets, as the standard writes them (width >= 1)
            span = max(width - 1.0, 1e-9)
            levels = np.clip((values - (center - 0.5)) / span + 0.5, 0.0, 1.0) * 255.0
        return np.asarray(levels.round(), dtype=np.uint8)


def picture(
    frame: NDArray[np.generic],
    ds: Dataset,
    *,
    voi: VoiWindow | None = None,
    max_size: int = PREVIEW_MAX_SIZE,
) -> Image.Image:
    """One decoded frame as an 8-bit picture: a grey frame through ``voi`` when given, else
    the dataset's first window or min/max; a colour frame as it is."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        image = Image.fromarray(to_uint8(apply_color_lut(frame, ds)), mode="RGB")
    elif frame.ndim == 3:  # RGB (pydicom converts YBR to RGB)
        image = Image.fromarray(to_uint8(frame[..., :3]), mode="RGB")
    else:
        values = apply_modality_lut(frame, ds).astype(np.float64)
        gray = voi.grey_levels(values) if voi is not None else _first_window(ds, values)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
        image = Image.fromarray(gray, mode="L")
    image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return image


def _first_window(ds: Dataset, values: NDArray[np.float64]) -> NDArray[np.uint8]:
    low, high = window(ds, values)
    scaled = np.clip((values - low) / max(high - low, 1e-9), 0.0, 1.0) * 255.0
    return scaled.round().astype(np.uint8)


def window(ds: Dataset, values: NDArray[np.float64]) -> tuple[float, float]:
    """The dataset's first window (center, width), else the range of the frame."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        return center - width / 2.0, center + width / 2.0
    if values.size == 0:
        return 0.0, 1.0
    return float(values.min()), float(values.max())


def _first(value: object) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def to_uint8(values: NDArray[np.generic]) -> NDArray[np.uint8]:
    if values.dtype == np.uint8:
        return np.ascontiguousarray(values)
    as_float = values.astype(np.float64)
    low, high = float(as_float.min()), float(as_float.max())
    scaled = (as_float - low) / max(high - low, 1e-9) * 255.0
    return np.ascontiguousarray(scaled.round().astype(np.uint8))
