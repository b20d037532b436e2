"""Burned-in annotation policy (assess) and region blanking (blank)."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import deid_data.data
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import compress
from pydicom.uid import (
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    JPEGLSNearLossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from common.deid import pixels
from common.deid.exceptions import PixelCleaningFailed
from common.deid.pixels import BlankingRule, PixelDecision, PixelPolicy, assess, blank

BOX = (2, 3, 9, 7)  # left, top, right, bottom
ULTRASOUNDS = Path(deid_data.data.__file__).parent / "ultrasounds"


def read_testfile(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom test file {name} is not installed"
    return pydicom.dcmread(path)


def image(**attributes: Any) -> Dataset:
    """A small native 16-bit MONOCHROME2 CT image with distinct pixel values."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "ID123456"
    ds.Modality = "CT"
    ds.Manufacturer = "Acme Medical"
    ds.ManufacturerModelName = "Scanner 3000"
    ds.Rows, ds.Columns = 10, 12
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    count = ds.Rows * ds.Columns * int(ds.get("NumberOfFrames", 1))
    values = (np.arange(count, dtype=np.uint16) % 4000) + 1
    ds.PixelData = values.tobytes()
    return ds


def raw_pixels(ds: Dataset) -> np.ndarray[Any, Any]:
    """Decoded pixels without colour conversion, shaped (frames, rows, columns, samples)."""
    arr, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=True)
    return arr.reshape(-1, ds.Rows, ds.Columns, ds.SamplesPerPixel)


def in_box(arr: np.ndarray[Any, Any], box: tuple[int, int, int, int]) -> np.ndarray[Any, Any]:
    left, top, right, bottom = box
    return arr[:, top:bottom, left:right, :]


def outside_box(arr: np.ndarray[Any, Any], box: tuple[int, int, int, int]) -> np.ndarray[Any, Any]:
    left, top, right, bottom = box
    mask = np.ones(arr.shape[1:3], dtype=bool)
    mask[top:bottom, left:right] = False
    return arr[:, mask, :]


def roundtrip(ds: Dataset) -> Dataset:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def ultrasound_files() -> list[str]:
    return sorted(p.name for p in ULTRASOUNDS.glob("*") if p.suffix in (".dcm", ".zip"))


def read_ultrasound(name: str) -> Dataset:
    """Header plus a deferred (unread) Pixel Data: the cines are 100 MB once unzipped."""
    path = ULTRASOUNDS / name
    if path.suffix != ".zip":
        return pydicom.dcmread(path, defer_size="1 KB")
    with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as stream:
        return pydicom.dcmread(stream, defer_size="1 KB")


def identifiers(ds: Dataset) -> Iterator[str]:
    yield str(ds.PatientName)
    yield from (part for part in str(ds.PatientName).split("^") if len(part) > 2)
    yield str(ds.PatientID)
    for keyword in ("StudyDate", "StudyInstanceUID", "SOPInstanceUID", "AccessionNumber"):
        if value := str(ds.get(keyword, "")):
            yield value


def contains_word(text: str, word: str) -> bool:
    """Whole-word search, so that a name part MARY is not found in PRIMARY."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) is not None


US_POLICY = PixelPolicy(reject_modalities=frozenset({"US"}))


# --- assess -------------------------------------------------------------------------------


def test_assess_accepts_a_plain_ct() -> None:
    assert assess(read_testfile("CT_small.dcm"), US_POLICY) == PixelDecision("accept")


def test_assess_rejects_an_instance_whose_burned_in_annotation_is_yes() -> None:
    decision = assess(image(BurnedInAnnotation="YES"), PixelPolicy())

    assert decision.action == "reject"
    assert "BurnedInAnnotation is YES" in decision.reason


def test_assess_accepts_burned_in_annotation_yes_when_the_policy_does_not_reject_it() -> None:
    policy = PixelPolicy(reject_burned_in=False)

    assert assess(image(BurnedInAnnotation="YES"), policy).action == "accept"


def test_assess_rejects_a_distrusted_modality_naming_it() -> None:
    decision = assess(image(Modality="US"), US_POLICY)

    assert decision.action == "reject"
    assert "modality US may carry burned-in text" in decision.reason


def test_assess_rejects_a_distrusted_sop_class_naming_it_without_its_uid() -> None:
    policy = PixelPolicy(reject_sop_classes=frozenset({SecondaryCaptureImageStorage}))

    decision = assess(image(SOPClassUID=SecondaryCaptureImageStorage), policy)

    assert decision.action == "reject"
    assert "SOP class Secondary Capture Image Storage" in decision.reason
    assert SecondaryCaptureImageStorage not in decision.reason


def test_assess_rejects_a_distrusted_image_type_value() -> None:
    policy = PixelPolicy(reject_image_types=frozenset({"SCREEN SAVE"}))

    decision = assess(image(ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"]), policy)

    assert decision.action == "reject"
    assert "image type SCREEN SAVE" in decision.reason


def test_assess_names_every_trigger_in_its_reason() -> None:
    decision = assess(image(Modality="US", BurnedInAnnotation="YES"), US_POLICY)

    assert "BurnedInAnnotation is YES" in decision.reason
    assert "modality US" in decision.reason


def test_assess_blanks_with_the_first_matching_rule_instead_of_rejecting() -> None:
    other = BlankingRule(boxes=(BOX,), manufacturer="Other Vendor", line=1)
    first = BlankingRule(boxes=(BOX,), manufacturer="acme", line=2)
    second = BlankingRule(boxes=(BOX,), modality="US", line=3)
    policy = PixelPolicy(reject_modalities=frozenset({"US"}), rules=(other, first, second))

    decision = assess(image(Modality="US", BurnedInAnnotation="YES"), policy)

    assert decision == PixelDecision("blank", rule=first)


def test_assess_accepts_an_instance_without_pixel_data() -> None:
    report = read_testfile("test-SR.dcm")

    assert assess(report, PixelPolicy(rules=(BlankingRule(boxes=(BOX,)),))).action == "accept"


def test_assess_rejects_a_pixel_less_instance_of_a_distrusted_sop_class() -> None:
    pdf = Dataset()
    pdf.SOPClassUID = EncapsulatedPDFStorage
    pdf.EncapsulatedDocument = b"%PDF-1.4 Jane Doe"
    policy = PixelPolicy(reject_sop_classes=frozenset({EncapsulatedPDFStorage}))

    decision = assess(pdf, policy)

    assert decision.action == "reject"
    assert "Encapsulated PDF Storage" in decision.reason


# --- BlankingRule.matches -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({}, True),
        ({"manufacturer": "ACME"}, True),
        ({"manufacturer": "^acme medical$"}, True),
        ({"manufacturer": "medical"}, True),
        ({"manufacturer": "Siemens"}, False),
        ({"model": "scanner\\s+3\\d+"}, True),
        ({"model": "Scanner 2000"}, False),
        ({"manufacturer": "acme", "model": "2000"}, False),
        ({"modality": "CT"}, True),
        ({"modality": "ct"}, False),
        ({"rows": 10, "columns": 12}, True),
        ({"rows": 10, "columns": 13}, False),
        ({"rows": 12}, False),
    ],
)
def test_a_rule_matches_only_when_every_criterion_it_sets_holds(
    criteria: dict[str, Any], expected: bool
) -> None:
    assert BlankingRule(boxes=(BOX,), **criteria).matches(image()) is expected


def test_a_rule_with_a_manufacturer_does_not_match_an_instance_without_one() -> None:
    ds = image()
    del ds.Manufacturer

    assert not BlankingRule(boxes=(BOX,), manufacturer="acme").matches(ds)


def test_a_rule_rejects_a_box_whose_right_edge_is_not_past_its_left_edge() -> None:
    with pytest.raises(ValueError, match="line 7"):
        BlankingRule(boxes=((10, 0, 10, 5),), line=7)


def test_a_rule_rejects_an_invalid_regex_naming_its_line() -> None:
    with pytest.raises(ValueError, match="line 4: model"):
        BlankingRule(boxes=(BOX,), model="EPIQ (5G", line=4)


# --- blank: native pixel data ------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm"])
def test_blank_on_native_16_bit_monochrome2_sets_exactly_the_box_to_the_minimum(name: str) -> None:
    ds = read_testfile(name)  # signed, 16 bits stored; little and big endian
    before = raw_pixels(ds).copy()

    blank(ds, BlankingRule(boxes=(BOX,)))

    after = raw_pixels(ds)
    assert (in_box(after, BOX) == -32768).all()
    assert np.array_equal(outside_box(after, BOX), outside_box(before, BOX))


def test_blank_on_unsigned_data_fills_the_box_with_zero() -> None:
    ds = image()

    blank(ds, BlankingRule(boxes=(BOX,)))

    assert (in_box(raw_pixels(ds), BOX) == 0).all()


def test_blank_keeps_the_transfer_syntax_and_the_other_attributes() -> None:
    ds = read_testfile("CT_small.dcm")
    before = {elem.tag: elem.value for elem in ds if elem.tag != 0x7FE00010}

    blank(ds, BlankingRule(boxes=(BOX,)))

    assert {elem.tag: elem.value for elem in ds if elem.tag != 0x7FE00010} == before
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_blank_on_a_multi_frame_image_blanks_every_frame() -> None:
    ds = read_testfile("emri_small.dcm")  # 10 frames, unsigned, 12 bits stored
    before = raw_pixels(ds).copy()

    blank(ds, BlankingRule(boxes=(BOX,)))

    after = raw_pixels(ds)
    assert after.shape[0] == 10
    assert (in_box(after, BOX) == 0).all()
    assert np.array_equal(outside_box(after, BOX), outside_box(before, BOX))


def test_blank_on_monochrome1_fills_the_maximum_so_the_box_renders_black() -> None:
    ds = image(PhotometricInterpretation="MONOCHROME1", BitsStored=10, HighBit=9)
    ds.PixelData = (np.arange(120, dtype=np.uint16) % 1000).tobytes()

    blank(ds, BlankingRule(boxes=(BOX,)))

    assert (in_box(raw_pixels(ds), BOX) == 1023).all()


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "color-pl.dcm", "SC_rgb_expb.dcm"])
def test_blank_on_rgb_blanks_every_sample_and_nothing_else(name: str) -> None:
    ds = read_testfile(name)  # interleaved, planar (color-pl) and big endian
    before = raw_pixels(ds).copy()

    blank(ds, BlankingRule(boxes=(BOX,)))

    after = raw_pixels(ds)
    assert (in_box(after, BOX) == 0).all()
    assert np.array_equal(outside_box(after, BOX), outside_box(before, BOX))


def test_blank_on_ybr_full_fills_black_luma_and_neutral_chroma() -> None:
    ds = read_testfile("SC_ybr_full_uncompressed.dcm")

    blank(ds, BlankingRule(boxes=(BOX,)))

    assert (in_box(raw_pixels(ds), BOX) == [0, 128, 128]).all()


def test_blank_clips_boxes_to_the_image() -> None:
    ds = image()  # 12 columns x 10 rows
    before = raw_pixels(ds).copy()

    blank(ds, BlankingRule(boxes=((8, 6, 500, 400),)))

    after = raw_pixels(ds)
    assert (after[:, 6:, 8:, :] == 0).all()
    assert np.array_equal(after[:, :6, :, :], before[:, :6, :, :])
    assert np.array_equal(after[:, :, :8, :], before[:, :, :8, :])


def test_blank_rejects_native_subsampled_ybr_full_422() -> None:
    with pytest.raises(PixelCleaningFailed, match="YBR_FULL_422"):
        blank(read_testfile("SC_ybr_full_422_uncompressed.dcm"), BlankingRule(boxes=(BOX,)))


def test_blank_on_a_real_ultrasound_covered_by_a_rule_blanks_its_header_band() -> None:
    ds = pydicom.dcmread(ULTRASOUNDS / "GREYSCALE_IMAGE.dcm")
    band = (0, 0, 1024, 60)
    rule = BlankingRule(boxes=(band,), manufacturer="philips", model="EPIQ", rows=768, columns=1024)
    policy = PixelPolicy(reject_modalities=frozenset({"US"}), rules=(rule,))
    before = raw_pixels(ds).copy()

    assert assess(ds, policy) == PixelDecision("blank", rule=rule)
    blank(ds, rule)

    after = raw_pixels(ds)
    assert in_box(before, band).any()
    assert not in_box(after, band).any()
    assert np.array_equal(outside_box(after, band), outside_box(before, band))


# --- blank: compressed pixel data --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fill"),
    [
        ("SC_rgb_rle.dcm", 0),
        ("SC_rgb_rle_2frame.dcm", 0),
        ("MR_small_RLE.dcm", -32768),
        ("emri_small_jpeg_ls_lossless.dcm", 0),
        ("MR_small_jpeg_ls_lossless.dcm", -32768),
        ("JPEGLSNearLossless_16.dcm", 0),
        ("MR_small_jp2klossless.dcm", -32768),
        ("US1_J2KR.dcm", 0),  # YBR_RCT, decodes to RGB
    ],
)
def test_blank_on_lossless_compressed_data_reencodes_in_the_same_syntax(
    name: str, fill: int
) -> None:
    ds = read_testfile(name)
    syntax, instance = ds.file_meta.TransferSyntaxUID, ds.SOPInstanceUID
    before = raw_pixels(ds).copy()

    blank(ds, BlankingRule(boxes=(BOX,)))
    reread = roundtrip(ds)

    assert reread.file_meta.TransferSyntaxUID == syntax
    assert reread.SOPInstanceUID == instance
    after = raw_pixels(reread)
    assert (in_box(after, BOX) == fill).all()
    assert np.array_equal(outside_box(after, BOX), outside_box(before, BOX))


def test_blank_on_near_lossless_jpeg_ls_adds_no_further_loss() -> None:
    ds = read_testfile("emri_small.dcm")
    compress(ds, JPEGLSNearLossless, jls_error=3, generate_instance_uid=False)
    before = raw_pixels(ds).copy()

    blank(ds, BlankingRule(boxes=(BOX,)))

    after = raw_pixels(roundtrip(ds))
    assert ds.file_meta.TransferSyntaxUID == JPEGLSNearLossless
    assert (in_box(after, BOX) == 0).all()
    assert np.array_equal(outside_box(after, BOX), outside_box(before, BOX))


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", "JPEG Baseline (Process 1)"),
        ("JPGExtended.dcm", "JPEG Extended (Process 2 and 4)"),
        ("JPEG-LL.dcm", "JPEG Lossless, Non-Hierarchical, First-Order Prediction"),
        ("JPEG2000.dcm", "JPEG 2000 Image Compression"),
    ],
)
def test_blank_raises_naming_a_transfer_syntax_it_cannot_reencode(name: str, syntax: str) -> None:
    ds = read_testfile(name)

    with pytest.raises(PixelCleaningFailed, match="cannot re-encode") as raised:
        blank(ds, BlankingRule(boxes=(BOX,)))

    assert syntax in raised.value.reason


def test_a_failed_reencode_leaves_the_dataset_unchanged() -> None:
    ds = read_testfile("rtdose_rle.dcm")  # 32-bit RLE: pydicom decodes it but cannot encode it
    pixel_data, instance = ds.PixelData, ds.SOPInstanceUID

    with pytest.raises(PixelCleaningFailed, match="RLE Lossless"):
        blank(ds, BlankingRule(boxes=(BOX,)))

    assert ds.PixelData is pixel_data
    assert ds.SOPInstanceUID == instance


def test_a_reencode_that_does_not_decode_back_to_the_blanked_pixels_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def lossy_compress(ds: Dataset, syntax: str, arr: Any, **options: Any) -> None:
        compress(ds, syntax, arr // 2 * 2, **options)  # drops the lowest bit

    monkeypatch.setattr(pixels, "compress", lossy_compress)
    ds = read_testfile("MR_small_RLE.dcm")
    pixel_data = ds.PixelData

    with pytest.raises(PixelCleaningFailed, match="does not decode back"):
        blank(ds, BlankingRule(boxes=(BOX,)))

    assert ds.PixelData is pixel_data


def test_a_rule_whose_boxes_miss_the_image_leaves_compressed_pixel_data_untouched() -> None:
    ds = read_testfile("MR_small_RLE.dcm")  # 64 x 64
    pixel_data = ds.PixelData

    blank(ds, BlankingRule(boxes=((64, 0, 80, 10), (0, 70, 10, 80))))

    assert ds.PixelData is pixel_data


# --- real ultrasound files (deid-data) ---------------------------------------------------


def test_the_deid_data_ultrasounds_are_installed() -> None:
    assert len(ultrasound_files()) == 5


@pytest.mark.parametrize("name", ultrasound_files())
def test_every_deid_data_ultrasound_is_rejected_when_us_is_distrusted(name: str) -> None:
    assert assess(read_ultrasound(name), US_POLICY).action == "reject"


def test_ultrasounds_without_the_burned_in_flag_are_still_rejected_by_modality() -> None:
    unflagged = [
        ds
        for ds in map(read_ultrasound, ultrasound_files())
        if ds.get("BurnedInAnnotation") is None
    ]

    assert len(unflagged) == 2
    for ds in unflagged:
        decision = assess(ds, US_POLICY)
        assert decision.action == "reject"
        assert decision.reason.startswith("modality US may carry burned-in text")


@pytest.mark.parametrize("name", ultrasound_files())
def test_no_reject_reason_contains_an_identifier_of_the_file(name: str) -> None:
    ds = read_ultrasound(name)
    policy = PixelPolicy(
        reject_modalities=frozenset({"US"}),
        reject_sop_classes=frozenset({UltrasoundImageStorage, UltrasoundMultiFrameImageStorage}),
        reject_image_types=frozenset({"DERIVED", "SCREEN SAVE"}),
    )

    reason = assess(ds, policy).reason

    assert "SOP class Ultrasound" in reason
    for identifier in identifiers(ds):
        assert not contains_word(reason, identifier)


def test_no_cleaning_failure_reason_contains_an_identifier_of_the_file() -> None:
    ds = read_testfile("SC_rgb_jpeg_dcmtk.dcm")
    ds.PatientName, ds.PatientID = "DOE^JANE", "ID123456"

    with pytest.raises(PixelCleaningFailed) as raised:
        blank(ds, BlankingRule(boxes=(BOX,)))

    assert raised.value.reason
    for identifier in identifiers(ds):
        assert not contains_word(raised.value.reason, identifier)
