"""Where the policy asks, the hub reads received images with Tesseract: text burned into the
pixels is a finding naming the file and the frame (never the words); a clean image is not."""

from __future__ import annotations

import io
import shutil

import numpy
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage

from hub.curation import ocr
from hub.curation.ocr import OcrPolicy

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs tesseract-ocr")

PATH = "SUBJQ4ZP7WLD2M5K/2.25.1/2.25.2/2.25.3.dcm"
BURNED_IN = "DOE^JANE 1957-03-04 MRN 4455"


def speckle(side: int = 512) -> numpy.ndarray:
    """Ultrasound-like speckle and a bright blob of tissue: no text."""
    rng = numpy.random.default_rng(3)
    image = rng.rayleigh(30, (side, side))
    yy, xx = numpy.mgrid[:side, :side]
    image[(yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 5) ** 2] += 90
    return numpy.clip(image, 0, 255).astype(numpy.uint8)


def with_text(pixels: numpy.ndarray, text: str) -> numpy.ndarray:
    image = Image.fromarray(pixels, mode="L")
    font = ImageFont.load_default(size=pixels.shape[0] // 22)
    ImageDraw.Draw(image).text((12, 12), text, fill=255, font=font)
    return numpy.asarray(image)


def dicom(pixels: numpy.ndarray, modality: str = "US", flag: str = "") -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.3"
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = "2.25.3"
    ds.Modality = modality
    if flag:
        ds.BurnedInAnnotation = flag
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_text_burned_into_an_ultrasound_is_a_finding_naming_file_and_frame() -> None:
    data = dicom(with_text(speckle(), BURNED_IN))
    [finding] = ocr.findings(data, path=PATH, policy=OcrPolicy.LIKELY)
    assert finding.startswith(f"{PATH}: frame 1: OCR reads ")
    assert not any(word in finding for word in ("DOE", "JANE", "1957", "4455"))


def test_a_clean_ultrasound_gives_no_finding() -> None:
    assert ocr.findings(dicom(speckle()), path=PATH, policy=OcrPolicy.LIKELY) == []


def test_small_images_are_read_too() -> None:
    data = dicom(with_text(speckle(256), "MRN 4455 DOE"))
    assert ocr.findings(data, path=PATH, policy=OcrPolicy.LIKELY) != []


def test_a_ct_is_read_only_when_flagged_or_when_the_policy_says_all() -> None:
    ct = with_text(speckle(), BURNED_IN)
    assert ocr.findings(dicom(ct, "CT"), path=PATH, policy=OcrPolicy.LIKELY) == []
    assert ocr.findings(dicom(ct, "CT", flag="YES"), path=PATH, policy=OcrPolicy.LIKELY) != []
    assert ocr.findings(dicom(ct, "CT"), path=PATH, policy=OcrPolicy.ALL) != []


def test_nothing_is_read_when_ocr_is_off() -> None:
    data = dicom(with_text(speckle(), BURNED_IN))
    assert ocr.findings(data, path=PATH, policy=OcrPolicy.OFF) == []
