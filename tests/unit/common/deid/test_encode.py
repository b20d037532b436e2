"""The fast encoder writes what pydicom would: both decode to the same dataset."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info

from common.deid.encode import encode, file_meta
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


def test_the_file_meta_is_encoded_as_pydicom_encodes_it() -> None:
    values = {
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "sop_instance_uid": "2.25.123456789",  # odd length: padded
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "implementation_class_uid": "2.25.1",
        "implementation_version_name": "HAVENET_1_0",  # odd length: padded with a space
    }
    raw = file_meta(**values)
    assert raw is not None
    built = FileMetaDataset()
    built.MediaStorageSOPClassUID = values["sop_class_uid"]
    built.MediaStorageSOPInstanceUID = values["sop_instance_uid"]
    built.TransferSyntaxUID = values["transfer_syntax_uid"]
    built.ImplementationClassUID = values["implementation_class_uid"]
    built.ImplementationVersionName = values["implementation_version_name"]
    expected = io.BytesIO()
    write_file_meta_info(expected, built, enforce_standard=True)
    mine, theirs = ct_dataset(), ct_dataset()
    mine.file_meta, theirs.file_meta = raw, built
    assert encode(mine)[0][132:].startswith(expected.getvalue())
    assert mine.file_meta == theirs.file_meta  # the group length and version, as pydicom left them


@pytest.mark.parametrize("sop_class_uid", ["", "1.2.3\\1.2.4", "1.2.3é"])
def test_a_file_meta_value_that_needs_pydicoms_rules_is_left_to_pydicom(
    sop_class_uid: str,
) -> None:
    built = file_meta(
        sop_class_uid=sop_class_uid,
        sop_instance_uid="2.25.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        implementation_class_uid="2.25.1",
        implementation_version_name="HAVENET_1_0",
    )
    assert built is None


def test_the_uids_the_engine_reads_give_the_same_file_decoded_or_not(
    make_engine, tmp_path: Path
) -> None:
    uid = "1.2.826.0.1.3680043.10.1.11"  # of odd length: padded
    ds = ct_dataset(study_uid=uid, series_uid=f"{uid}.1", sop_uid=f"{uid}.1.1")
    encoded = io.BytesIO()
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(encoded, ds, enforce_file_format=True)
    # Kept UIDs padded with a space, not a NUL: decoded and encoded again, they lose it.
    data = encoded.getvalue()
    for kept in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        assert kept.encode() + b"\x00" in data
        data = data.replace(kept.encode() + b"\x00", kept.encode() + b" ")
    (tmp_path / "in.dcm").write_bytes(data)
    raw, decoded = read_fast(tmp_path / "in.dcm"), read_fast(tmp_path / "in.dcm")
    assert raw is not None and decoded is not None
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert decoded[keyword].value  # what pydicom's accessors do to the element
    engine = make_engine(
        yaml_text=ACCEPTING_PROFILE.replace("options: [", "options: [retain_uids, ")
    )
    assert engine.deidentify(raw).data == engine.deidentify(decoded).data


def test_pydicoms_validation_changes_no_output(make_engine, tmp_path: Path) -> None:
    path = tmp_path / "in.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about each invalid value
        ds = ct_dataset()
        ds.StudyDescription = "x" * 80  # longer than LO allows
        ds.PatientWeight = "61.500000000000001"  # longer than DS allows
        ds.AccessionNumber = "A\\B\\C"  # several values in a single-valued attribute
        ds.StudyID = "ID with spaces and more than 16"
        ds.preamble = b"\x00" * 128
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        engine = make_engine("pseudonymize")
        validated = engine.deidentify(read_instance(path)).data
        mode = pydicom.config.settings.reading_validation_mode
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # stage 1's
        try:
            unvalidated = engine.deidentify(read_instance(path)).data
        finally:
            pydicom.config.settings.reading_validation_mode = mode
    assert unvalidated == validated
