"""The fast encoder writes what pydicom would: both decode to the same dataset."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest

from common.deid.encode import encode
from common.deid.files import read_instance
from common.deid.reader import read_fast
from tests.conftest import SHARED, ct_dataset

SAMPLES = [
    "CT_small.dcm",  # explicit little endian, many private elements
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",  # encapsulated
    "JPEG2000.dcm",
    "rtplan.dcm",  # deep sequences
    "charset_files/chrGerm.dcm",  # ISO_IR 100 text
    "charset_files/chrH31.dcm",  # ISO 2022 Japanese: left to pydicom
    "charset_files/chrX1.dcm",  # UTF-8
]
DATA = Path(pydicom.__file__).parent / "data"
# Stage-1-like options, with every instance accepted: this test is about encoding.
ACCEPTING_PROFILE = """
name: encoding
options: [retain_longitudinal_full_dates, retain_safe_private, clean_descriptors,
          clean_structured_content]
attributes: {PatientID: subject_key}
pixels: {reject_burned_in: false}
"""


@pytest.mark.parametrize("name", SAMPLES)
def test_encoded_files_decode_like_pydicoms_own(name: str, make_engine) -> None:
    folder = DATA if "/" in name else DATA / "test_files"
    ds = read_instance(folder / name)
    if "PatientID" not in ds or not ds.PatientID:
        ds.PatientID = "X1234567"
    result = make_engine(yaml_text=ACCEPTING_PROFILE).deidentify(ds)
    expected = io.BytesIO()
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(expected, ds, enforce_file_format=True)
    mine = pydicom.dcmread(io.BytesIO(result.data))
    theirs = pydicom.dcmread(io.BytesIO(expected.getvalue()))
    assert mine.file_meta == theirs.file_meta
    assert mine == theirs


def test_the_pixel_range_covers_exactly_the_native_samples(make_engine) -> None:
    ds = ct_dataset()
    pixels = ds.PixelData
    data, (start, end) = encode(make_engine("basic").deidentify(ds) and ds)
    assert data[start:end] == pixels
    assert end == len(data)


def all_sample_files() -> list[Path]:
    roots = [DATA, *(p for p in (SHARED / "data" / "dicom",) if p.is_dir())]
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def test_the_lean_reader_reads_exactly_what_pydicom_reads() -> None:
    compared = 0
    for path in all_sample_files():
        fast = read_fast(path)
        if fast is None:
            continue  # left to pydicom
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = pydicom.dcmread(path)
            assert fast.file_meta == reference.file_meta, path.name
            assert fast == reference, path.name
        compared += 1
    assert compared > 100


def test_the_lean_reader_leaves_big_endian_and_deflate_to_pydicom() -> None:
    for name in ("MR_small_bigendian.dcm", "image_dfl.dcm"):
        assert read_fast(DATA / "test_files" / name) is None
