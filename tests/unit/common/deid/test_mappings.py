"""Keyed mappings: same input and project → same bytes; another project → other keys."""

from __future__ import annotations

import datetime as dt
import io

import pydicom
import pytest

from common.deid.exceptions import LeakDetected, SubjectNotInLookup
from tests.conftest import PATIENT_ID, PATIENT_NAME, ct_dataset


def test_the_same_instance_and_project_give_byte_identical_output(make_engine) -> None:
    first = make_engine().deidentify(ct_dataset())
    second = make_engine().deidentify(ct_dataset())
    assert first.data == second.data
    assert first.relative_path == second.relative_path


def test_another_project_gets_other_subject_keys_and_uids(make_engine) -> None:
    a = pydicom.dcmread(io.BytesIO(make_engine(project="a").deidentify(ct_dataset()).data))
    b = pydicom.dcmread(io.BytesIO(make_engine(project="b").deidentify(ct_dataset()).data))
    assert a.PatientID != b.PatientID
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert a[keyword].value != b[keyword].value


def test_references_between_files_stay_intact(make_engine) -> None:
    engine = make_engine()
    first = ct_dataset(sop_uid="1.2.826.0.1.3680043.10.1.1.1.1")
    second = ct_dataset(sop_uid="1.2.826.0.1.3680043.10.1.1.1.2")
    second.ReferencedImageSequence[0].ReferencedSOPInstanceUID = first.SOPInstanceUID
    out_first = pydicom.dcmread(io.BytesIO(engine.deidentify(first).data))
    out_second = pydicom.dcmread(io.BytesIO(engine.deidentify(second).data))
    assert (
        out_second.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out_first.SOPInstanceUID
    )
    assert out_second.StudyInstanceUID == out_first.StudyInstanceUID
    assert out_second.SeriesInstanceUID == out_first.SeriesInstanceUID


def test_shifted_dates_keep_the_interval_between_a_patients_studies(make_engine) -> None:
    engine = make_engine("anonymize")
    early = ct_dataset(study_uid="1.2.3.100", sop_uid="1.2.3.100.1", study_date="20200101")
    late = ct_dataset(study_uid="1.2.3.200", sop_uid="1.2.3.200.1", study_date="20230415")
    out_early = pydicom.dcmread(io.BytesIO(engine.deidentify(early).data))
    out_late = pydicom.dcmread(io.BytesIO(engine.deidentify(late).data))

    def day(text: str) -> dt.date:
        return dt.datetime.strptime(text, "%Y%m%d").date()

    assert day(out_late.StudyDate) - day(out_early.StudyDate) == dt.date(2023, 4, 15) - dt.date(
        2020, 1, 1
    )
    assert out_early.StudyDate != "20200101"


def test_two_patients_get_different_offsets_and_keys(make_engine) -> None:
    engine = make_engine("anonymize")
    keys = {engine.mapper.subject_key(f"MRN{i}") for i in range(200)}
    offsets = {engine.mapper.date_offset_days(f"MRN{i}") for i in range(200)}
    assert len(keys) == 200
    assert len(offsets) > 100
    assert all(-1095 <= o <= -30 for o in offsets)


def test_subject_keys_can_come_from_a_lookup_table(make_engine) -> None:
    engine = make_engine("anonymize", subject_keys={PATIENT_ID: "TRIAL-007"})
    out = pydicom.dcmread(io.BytesIO(engine.deidentify(ct_dataset()).data))
    assert out.PatientID == "TRIAL-007"
    assert out.PatientName == "TRIAL-007"


def test_a_patient_missing_from_the_lookup_table_is_rejected(make_engine) -> None:
    engine = make_engine("anonymize", subject_keys={"SOMEONE-ELSE": "TRIAL-001"})
    with pytest.raises(SubjectNotInLookup) as caught:
        engine.deidentify(ct_dataset())
    assert PATIENT_ID not in str(caught.value)


def test_an_identifier_in_a_kept_attribute_fails_the_leak_check(make_engine) -> None:
    ds = ct_dataset()
    ds.Manufacturer = f"ACME for {PATIENT_NAME.split('^')[0]}"  # outside Annex E: kept
    with pytest.raises(LeakDetected) as caught:
        make_engine("anonymize").deidentify(ds)
    assert "Manufacturer" in str(caught.value)
    assert "PHILLIPS" not in str(caught.value)


def test_a_name_component_inside_a_longer_word_is_no_leak(make_engine) -> None:
    ds = ct_dataset(patient_name="DOE^ANNE")
    ds.ManufacturerModelName = "Scanner 9000"  # holds "anne" but not the word
    make_engine("anonymize").deidentify(ds)


def test_an_original_uid_in_a_kept_attribute_fails_the_leak_check(make_engine) -> None:
    ds = ct_dataset()
    ds.ImageComments = "see 1.2.826.0.1.3680043.10.1.1"  # not cleaned by basic: removed
    make_engine("basic").deidentify(ds)
    ds = ct_dataset()
    ds.Manufacturer = ds.StudyInstanceUID
    with pytest.raises(LeakDetected):
        make_engine("basic").deidentify(ds)


def test_output_paths_hold_only_pseudonyms_and_new_uids(make_engine) -> None:
    result = make_engine().deidentify(ct_dataset())
    for value in (PATIENT_ID, "PHILLIPS", "1.2.826.0.1.3680043.10.1"):
        assert value not in result.relative_path
    subject, study, _series, instance = result.relative_path.split("/")
    assert subject == result.report.subject_key
    assert study.startswith("2.25.")
    assert instance.endswith(".dcm")
