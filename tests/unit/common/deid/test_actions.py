"""Each Annex E action and each profile override does what the standard and profile say."""

from __future__ import annotations

import datetime as dt
import io

import pydicom
import pytest
from pydicom.dataset import Dataset

from common.deid.engine import Engine
from common.deid.exceptions import BurnedInRisk
from tests.conftest import ACCESSION, BIRTH_DATE, PATIENT_ID, PATIENT_NAME, ct_dataset


def run(engine: Engine, ds: Dataset | None = None) -> Dataset:
    result = engine.deidentify(ds if ds is not None else ct_dataset())
    return pydicom.dcmread(io.BytesIO(result.data))


def test_basic_profile_removes_attributes_marked_x(make_engine) -> None:
    out = run(make_engine("basic"))
    assert "PatientAddress" not in out  # X
    assert "OtherPatientIDs" not in out  # X
    assert "InstitutionAddress" not in out  # X


def test_basic_profile_empties_attributes_marked_z(make_engine) -> None:
    out = run(make_engine("basic"))
    assert out.PatientName == ""
    assert out.PatientBirthDate == ""
    assert out.AccessionNumber == ""
    assert out.StudyDate == ""  # Z: type 2 in the CT IOD


def test_basic_profile_replaces_attributes_marked_d_with_a_dummy(make_engine) -> None:
    ds = ct_dataset()
    ds.ProtocolName = f"HEAD {PATIENT_ID}"
    out = run(make_engine("basic"), ds)
    assert out.ProtocolName == "ANONYMIZED"  # D
    assert out.SeriesDate == "19000101"  # X/D


def test_compound_actions_empty_type_2_attributes_and_fill_type_1_ones(make_engine) -> None:
    ds = ct_dataset()
    ds.AcquisitionDateTime = "20230415101500"
    out = run(make_engine("basic"), ds)
    assert out.InstitutionName == ""  # X/Z/D, Type 2 or 3 everywhere
    assert out.DeviceSerialNumber == ""  # X/Z/D
    assert out.PatientID == ""  # Z/D, Type 2 in the Patient module
    assert out.AcquisitionDateTime == "19000101000000"  # X/Z/D, Type 1 in enhanced IODs


def test_basic_profile_maps_uids_marked_u_to_keyed_2_25_uids(make_engine) -> None:
    out = run(make_engine("basic"))
    for keyword in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
    ):
        assert str(out[keyword].value).startswith("2.25.")
        assert len(str(out[keyword].value)) <= 64
    assert out.SOPClassUID == ct_dataset().SOPClassUID  # a registered UID stays


def test_uids_inside_sequences_map_like_the_top_level(make_engine) -> None:
    engine = make_engine()
    ds = ct_dataset()
    target = ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    out = run(engine, ds)
    mapped = out.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert mapped == engine.mapper.uid(target)


def test_file_meta_instance_uid_equals_the_mapped_sop_instance_uid(make_engine) -> None:
    out = run(make_engine())
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_basic_profile_removes_every_private_attribute(make_engine) -> None:
    out = run(make_engine("basic"))
    assert not [e for e in out if e.tag.is_private]


def test_retain_safe_private_keeps_known_safe_and_removes_the_rest(make_engine) -> None:
    out = run(make_engine("anonymize"))
    assert out[0x00191002].value == 912
    assert out[0x00190010].value == "GEMS_ACQU_01"
    assert 0x00091001 not in out
    assert 0x00090010 not in out


@pytest.mark.parametrize(
    ("option", "keyword", "kept"),
    [
        ("retain_uids", "StudyInstanceUID", "1.2.826.0.1.3680043.10.1.1"),
        ("retain_device_identity", "DeviceSerialNumber", "SN-4455-7788"),
        ("retain_device_identity", "StationName", "CTROOM3"),
        ("retain_institution_identity", "InstitutionName", "St Elsewhere General Hospital"),
        ("retain_patient_characteristics", "PatientSex", "F"),
        ("retain_patient_characteristics", "PatientAge", "076Y"),
        ("retain_longitudinal_full_dates", "StudyDate", "20230415"),
    ],
)
def test_retain_options_keep_their_attributes(make_engine, option, keyword, kept) -> None:
    out = run(make_engine(yaml_text=f"name: t\noptions: [{option}]\n"))
    assert str(out[keyword].value) == kept


def test_modified_dates_option_shifts_dates_by_the_patients_offset(make_engine) -> None:
    engine = make_engine(yaml_text="name: t\noptions: [retain_longitudinal_modified_dates]\n")
    out = run(engine)
    offset = engine.mapper.date_offset_days(PATIENT_ID)
    expected = (dt.date(2023, 4, 15) + dt.timedelta(days=offset)).strftime("%Y%m%d")
    assert out.StudyDate == expected
    assert out.ContentDate == expected
    assert out.StudyTime == "101500"  # times of day stay
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_clean_descriptors_keeps_the_text_without_the_patients_identifiers(make_engine) -> None:
    out = run(make_engine(yaml_text="name: t\noptions: [clean_descriptors]\n"))
    assert out.StudyDescription.startswith("CT HEAD for")
    assert "PHILLIPS" not in out.StudyDescription
    assert PATIENT_ID not in out.StudyDescription
    assert out.SeriesDescription == "AX HEAD 5mm"


def test_without_clean_descriptors_descriptions_are_removed(make_engine) -> None:
    out = run(make_engine("basic"))
    assert "StudyDescription" not in out
    assert "SeriesDescription" not in out


def test_clean_structured_content_keeps_sr_content_de_identified(make_engine) -> None:
    ds = ct_dataset()
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = f"Findings for {PATIENT_NAME.split('^')[0]}: no bleed"
    person = Dataset()
    person.ValueType = "PNAME"
    person.PersonName = "HOUSE^GREGORY"
    ds.ContentSequence = [item, person]
    out = run(
        make_engine(yaml_text="name: t\noptions: [clean_structured_content, clean_descriptors]\n"),
        ds,
    )
    assert out.ContentSequence[0].TextValue == "Findings for [REDACTED]: no bleed"
    assert out.ContentSequence[1].PersonName == "ANONYMIZED"  # D inside the kept sequence
    plain = run(make_engine("basic"), ct_dataset())
    assert "ContentSequence" not in plain


def test_clean_graphics_keeps_overlays_and_basic_removes_the_whole_overlay_group(
    make_engine,
) -> None:
    ds = ct_dataset()
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60003000, "OW", b"\x00" * 32)
    ds.add_new(0x60004000, "LT", f"drawn for {PATIENT_ID}")
    kept = run(make_engine(yaml_text="name: t\noptions: [clean_graphics]\n"), ds)
    assert kept[0x60003000].value == b"\x00" * 32
    assert PATIENT_ID not in kept[0x60004000].value
    ds2 = ct_dataset()
    ds2.add_new(0x60000010, "US", 16)
    ds2.add_new(0x60003000, "OW", b"\x00" * 32)
    removed = run(make_engine("basic"), ds2)
    assert not [e for e in removed if e.tag.group == 0x6000]


def test_curves_are_removed_unless_graphics_are_cleaned(make_engine) -> None:
    def with_curve() -> Dataset:
        ds = ct_dataset()
        ds.add_new(0x50000005, "US", 2)
        ds.add_new(0x50003000, "OW", b"\x01\x02")
        return ds

    removed = run(make_engine("basic"), with_curve())
    assert not [e for e in removed if e.tag.group == 0x5000]
    kept = run(make_engine(yaml_text="name: t\noptions: [clean_graphics]\n"), with_curve())
    assert kept[0x50003000].value == b"\x01\x02"


def test_overrides_keep_remove_empty_and_replace(make_engine) -> None:
    text = (
        "name: t\n"
        "attributes:\n"
        "  PatientSex: keep\n"
        "  Manufacturer: remove\n"
        "  ManufacturerModelName: empty\n"
        "  InstitutionName: {replace: TRIAL SITE 7}\n"
    )
    out = run(make_engine(yaml_text=text))
    assert out.PatientSex == "F"
    assert "Manufacturer" not in out
    assert out.ManufacturerModelName == ""
    assert out.InstitutionName == "TRIAL SITE 7"


def test_override_hash_is_keyed_and_deterministic(make_engine) -> None:
    text = "name: t\nattributes:\n  AccessionNumber: hash\n"
    first = run(make_engine(yaml_text=text)).AccessionNumber
    again = run(make_engine(yaml_text=text)).AccessionNumber
    other = run(make_engine(yaml_text=text, project="project-b")).AccessionNumber
    assert first == again
    assert first != other
    assert first not in ("", ACCESSION)
    assert len(first) <= 16


def test_override_shift_moves_a_date_that_the_profile_would_remove(make_engine) -> None:
    text = "name: t\nattributes:\n  PatientBirthDate: shift\n"
    engine = make_engine(yaml_text=text)
    out = run(engine)
    assert out.PatientBirthDate not in ("", BIRTH_DATE)
    assert len(out.PatientBirthDate) == 8


def test_override_lookup_replaces_through_the_table(make_engine, tmp_path) -> None:
    table = tmp_path / "accessions.csv"
    table.write_text(f"original,replacement\n{ACCESSION},TRIAL-ACC-1\n")
    text = f"name: t\nattributes:\n  AccessionNumber: {{lookup: {table}}}\n"
    out = run(make_engine(yaml_text=text))
    assert out.AccessionNumber == "TRIAL-ACC-1"


def test_override_subject_key_writes_the_pseudonym(make_engine) -> None:
    engine = make_engine("anonymize")
    out = run(engine)
    key = engine.mapper.subject_key(PATIENT_ID)
    assert out.PatientID == key
    assert out.PatientName == key
    assert key.startswith("SUBJ")


def test_de_identification_attributes_follow_the_standard(make_engine) -> None:
    out = run(make_engine("anonymize"))
    assert out.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100"
    assert {"113101", "113103", "113104", "113105", "113107", "113108", "113111"} <= set(codes)
    assert "113106" not in codes
    assert all(i.CodingSchemeDesignator == "DCM" for i in out.DeidentificationMethodCodeSequence)
    assert "anonymize" in out.DeidentificationMethod[0]


def test_stage_one_keeps_dates_and_birth_date_and_says_so(make_engine) -> None:
    out = run(make_engine("pseudonymize"))
    assert out.StudyDate == "20230415"
    assert out.PatientBirthDate == BIRTH_DATE
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]


def test_the_report_names_paths_and_actions_never_values(make_engine) -> None:
    result = make_engine("anonymize").deidentify(ct_dataset())
    text = repr(result.report.as_dict())
    assert "ReferencedImageSequence[0].ReferencedSOPInstanceUID" in text
    for value in (
        PATIENT_NAME,
        PATIENT_ID,
        BIRTH_DATE,
        ACCESSION,
        "PHILLIPS",
        "20230415",
        "1.2.826.0.1.3680043.10.1.1",
    ):
        assert value not in text
    assert "PatientAddress" in result.report.actions["removed"]


BLANKING_PROFILE = """
name: blanking
options: [clean_pixel_data, retain_longitudinal_full_dates]
attributes: {PatientID: subject_key}
pixels:
  reject_burned_in: true
  reject_modalities: [US]
  blank:
    - {manufacturer: "^ACME", rows: 16, columns: 16, boxes: [[0, 0, 16, 4]]}
"""


def test_a_matching_blanking_rule_cleans_the_pixels_instead_of_rejecting(make_engine) -> None:
    ds = ct_dataset()
    ds.Modality = "US"  # risky: rejected unless a rule covers this device
    ds.BurnedInAnnotation = "YES"
    result = make_engine(yaml_text=BLANKING_PROFILE).deidentify(ds)
    out = pydicom.dcmread(io.BytesIO(result.data))
    pixels = out.pixel_array
    assert (pixels[:4, :] == 0).all()
    assert (pixels[4:, :] == ct_dataset().pixel_array[4:, :]).all()
    assert out.BurnedInAnnotation == "NO"
    assert result.report.pixels == "blanked by the rule on line 9"  # the text opens with \n
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]


def test_a_risky_instance_no_rule_covers_is_rejected_with_a_reason(make_engine) -> None:
    ds = ct_dataset()
    ds.Modality = "US"
    ds.Manufacturer = "Other Vendor"
    with pytest.raises(BurnedInRisk, match="modality US"):
        make_engine(yaml_text=BLANKING_PROFILE).deidentify(ds)
