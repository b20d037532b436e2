"""Frames drawn for the curator's viewer (common/web/render.py): windowed, MONOCHROME1
inverted, one frame of a multi-frame object decoded, shrunk to the size asked."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MultiFrameGrayscaleWordSecondaryCaptureImageStorage

from common.web import render


def multiframe(frames: int, rows: int = 8) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1"
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPInstanceUID = "2.25.1"
    ds.Rows = ds.Columns = rows
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.concatenate(
        [np.full(rows * rows, 100 * (index + 1), np.uint16) for index in range(frames)]
    ).tobytes()
    return ds


def encoded(ds: Dataset) -> io.BytesIO:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def gray(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_only_the_frame_asked_is_decoded() -> None:
    ds = multiframe(3)
    assert render.frame_count(ds) == 3
    third = render.decode_frame(encoded(ds), 2, "explicit little endian")
    assert third.shape == (8, 8) and int(third[0, 0]) == 300


def test_a_window_maps_its_range_onto_black_to_white() -> None:
    ds = multiframe(1)
    ds.WindowCenter, ds.WindowWidth = 100, 100  # 50 → black, 150 → white
    frame = np.array([[50, 100], [150, 200]], np.uint16)
    assert gray(render.png(frame, ds)).tolist() == [[0, 128], [255, 255]]


def test_monochrome1_is_drawn_inverted() -> None:
    ds = multiframe(1)
    ds.PhotometricInterpretation = "MONOCHROME1"
    frame = np.array([[0, 10]], np.uint16)
    assert gray(render.png(frame, ds)).tolist() == [[255, 0]]


def test_a_frame_is_shrunk_to_the_size_asked_keeping_its_shape() -> None:
    ds = multiframe(1)
    frame = np.zeros((400, 200), np.uint16)
    assert Image.open(io.BytesIO(render.png(frame, ds, max_size=100))).size == (50, 100)


def test_pixels_that_do_not_decode_say_so_without_their_bytes() -> None:
    ds = multiframe(1)
    ds.PixelData = b"\x00" * 10  # too short for 8 x 8 x 16 bits
    with pytest.raises(render.FrameUnreadable, match="explicit little endian"):
        render.decode_frame(encoded(ds), 0, "explicit little endian")
