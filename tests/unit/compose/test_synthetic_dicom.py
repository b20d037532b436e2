"""The synthetic DICOM corpus generator and its answer key."""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Literal

import pydicom
import pytest
from pydicom import config
from pydicom.datadict import get_entry
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from compose.synthetic import names
from compose.synthetic.dicom import AnswerKey, generate_corpus


def small(root: Path, phi: Literal["realistic", "exhaustive"], seed: int) -> AnswerKey:
    """Two patients, one study each, two series of two instances."""
    return generate_corpus(
        root,
        patients=2,
        studies_per_patient=1,
        series_per_study=2,
        instances_per_series=2,
        phi=phi,
        seed=seed,
    )


def single(root: Path, *, patients: int = 1, size: int = 64) -> AnswerKey:
    """One instance per patient."""
    return generate_corpus(
        root,
        patients=patients,
        studies_per_patient=1,
        series_per_study=1,
        instances_per_series=1,
        rows=size,
        columns=size,
    )


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AnswerKey]:
    root = tmp_path_factory.mktemp("realistic")
    key = generate_corpus(
        root, patients=3, studies_per_patient=2, series_per_study=3, instances_per_series=3, seed=11
    )
    return root, key


@pytest.fixture(scope="module")
def exhaustive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AnswerKey]:
    root = tmp_path_factory.mktemp("exhaustive")
    return root, small(root, "exhaustive", 7)


@pytest.fixture(scope="module")
def realistic_twin(tmp_path_factory: pytest.TempPathFactory) -> AnswerKey:
    """The realistic corpus with the exhaustive one's arguments."""
    return small(tmp_path_factory.mktemp("twin"), "realistic", 7)


def read(path: Path) -> Dataset:
    """Read a file; any warning, and any value pydicom finds invalid for its VR, is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = pydicom.dcmread(path)
        for element in ds.iterall():  # nested ones too
            value = element.value
            if element.VR == "PN":  # validate the text, not the parsed name
                value = [str(v) for v in value] if isinstance(value, MultiValue) else str(value)
            # Reading does not validate values; building an element again does.
            DataElement(element.tag, element.VR, value, validation_mode=config.RAISE)
    return ds


def headers(root: Path, key: AnswerKey) -> dict[str, Dataset]:
    return {file: read(root / file) for file in key.files}


def known_annex_e_rows() -> set[str]:
    text = resources.files("common.deid.data").joinpath("annex_e.json").read_text("utf-8")
    known = set()
    for row in json.loads(text)["rows"]:
        try:
            get_entry(int(row["tag"], 16))
        except (KeyError, ValueError):
            continue
        known.add(row["tag"])
    return known


def text_of(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


_STEP = re.compile(r"\(([0-9A-F]{4}),(?:([^,()]+),)?([0-9A-F]{2,4})\)(?:\[(\d+)\])?")


def resolve(ds: Dataset, path: str) -> object:
    """The value at an answer-key path such as ``(0040,0275)[1]/(0019,GEMS_ACQU_01,10)``."""
    for step in path.split("/"):
        match = _STEP.fullmatch(step)
        assert match, step
        group, creator, element, index = match.groups()
        tag = int(group + element, 16)
        if creator:
            tag = ds.private_block(int(group, 16), creator).get_tag(int(element, 16))
        value = ds[tag].value
        if index is None:
            return value
        ds = value[int(index)]
    raise AssertionError(path)


def first_component(path: str) -> str:
    return path.split("/", maxsplit=1)[0][1:10].replace(",", "")


def corpus_bytes(root: Path, key: AnswerKey) -> Iterator[bytes]:
    for file in key.files:
        yield (root / file).read_bytes()


# ---------------------------------------------------------------------------------------------
# Both modes


def test_the_same_seed_writes_byte_identical_files_and_key(tmp_path: Path) -> None:
    first = small(tmp_path / "a", "exhaustive", 3)
    second = small(tmp_path / "b", "exhaustive", 3)
    assert first.files == second.files
    for file in first.files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert first.to_json() == second.to_json()


def test_a_different_seed_makes_different_patients(tmp_path: Path) -> None:
    one = small(tmp_path / "a", "realistic", 1)
    two = small(tmp_path / "b", "realistic", 2)
    assert {p.patient_id for p in one.patients}.isdisjoint(p.patient_id for p in two.patients)


def test_every_file_is_dicom_with_explicit_vr_little_endian_file_meta(
    realistic: tuple[Path, AnswerKey],
) -> None:
    root, key = realistic
    for file in key.files:
        ds = read(root / file)
        assert (root / file).read_bytes()[128:132] == b"DICM"
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID in (CTImageStorage, MRImageStorage)


def test_every_exhaustive_value_passes_pydicom_validation(
    exhaustive: tuple[Path, AnswerKey],
) -> None:
    root, key = exhaustive
    for file in key.files:
        read(root / file)  # raises on the first invalid value


def test_files_are_encoded_exactly_as_pydicom_would_write_them(
    exhaustive: tuple[Path, AnswerKey],
) -> None:
    root, key = exhaustive
    for file in key.files:
        raw = (root / file).read_bytes()
        ds = read(root / file)
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_dataset(buffer, ds)
        start = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength
        assert raw[start:] == buffer.getvalue(), file


def test_pixel_data_decodes_to_the_requested_shape(realistic: tuple[Path, AnswerKey]) -> None:
    root, key = realistic
    for file in key.files:
        pixels = read(root / file).pixel_array
        assert pixels.shape == (64, 64)
        assert pixels.dtype == "uint16"
        assert pixels.max() > pixels.min()  # a phantom, not a blank image


def test_large_slices_are_16_bit_512_by_512(tmp_path: Path) -> None:
    key = single(tmp_path, size=512)
    ds = read(tmp_path / key.files[0])
    assert ds.pixel_array.shape == (512, 512)
    assert ds.BitsAllocated == 16
    assert len(ds.PixelData) == 512 * 512 * 2


def test_file_names_carry_no_identifier(exhaustive: tuple[Path, AnswerKey]) -> None:
    root, key = exhaustive
    secrets = {i.value for i in key.injected}
    for patient in key.patients:
        secrets |= {patient.patient_id, patient.name, patient.birth_date, *patient.other_ids}
        secrets |= {*patient.accession_numbers, *patient.study_dates}
    written = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert written == set(key.files)
    for file in key.files:
        assert re.fullmatch(r"p\d{3}/s\d+/se\d+/\d{4}\.dcm", file)
        assert not any(secret in file for secret in secrets)


def test_answer_key_round_trips_through_json(exhaustive: tuple[Path, AnswerKey]) -> None:
    _, key = exhaustive
    assert AnswerKey.from_json(key.to_json()) == key


def test_answer_key_from_json_rejects_a_malformed_key() -> None:
    with pytest.raises(ValueError, match="injected"):
        AnswerKey.from_json('{"patients": [], "injected": "nope", "files": []}')


@pytest.mark.parametrize("corpus", ["realistic", "exhaustive"])
def test_every_injected_value_is_in_the_bytes_of_its_file(
    corpus: str, request: pytest.FixtureRequest
) -> None:
    root, key = request.getfixturevalue(corpus)
    contents = {file: (root / file).read_bytes() for file in key.files}
    for injected in key.injected:
        assert injected.value.encode("ascii") in contents[injected.file], injected


@pytest.mark.parametrize("corpus", ["realistic", "exhaustive"])
def test_every_injected_path_leads_to_its_value(
    corpus: str, request: pytest.FixtureRequest
) -> None:
    root, key = request.getfixturevalue(corpus)
    datasets = {file: read(root / file) for file in key.files}
    for injected in key.injected:
        found = text_of(resolve(datasets[injected.file], injected.path))
        if injected.vr in ("OB", "OW", "UN"):
            assert injected.value in found, injected
        else:
            assert found == injected.value, injected


@pytest.mark.parametrize("corpus", ["realistic", "exhaustive"])
def test_every_injected_value_is_unique_and_at_least_6_characters(
    corpus: str, request: pytest.FixtureRequest
) -> None:
    _, key = request.getfixturevalue(corpus)
    values = [i.value for i in key.injected]
    assert len(values) == len(set(values))
    assert min(len(v) for v in values) >= 6


def test_no_injected_value_hides_inside_another_except_in_free_text(
    exhaustive: tuple[Path, AnswerKey],
) -> None:
    _, key = exhaustive
    containers = "\x00".join(i.value for i in key.injected if i.kind != "text")
    for injected in key.injected:
        assert containers.count(injected.value) <= 1, injected


def test_injected_kinds_and_table_rows_are_from_the_documented_sets(
    exhaustive: tuple[Path, AnswerKey],
) -> None:
    _, key = exhaustive
    kinds = {"identifier", "date", "time", "uid", "text", "other"}
    kinds |= {"private-unsafe", "private-safe", "graphics"}
    rows = known_annex_e_rows() | {"50XXXXXX", "60XX3000", "60XX4000", "private", ""}
    assert {i.kind for i in key.injected} == kinds
    assert {i.table_tag for i in key.injected} <= rows


def test_made_up_names_never_contain_one_another() -> None:
    for surname in names.SURNAMES:
        assert not any(o != surname and o.endswith(surname) for o in names.SURNAMES)
    for given in names.GIVEN_NAMES:
        assert not any(o != given and o.startswith(given) for o in names.GIVEN_NAMES)


def test_every_person_has_name_parts_of_their_own(realistic: tuple[Path, AnswerKey]) -> None:
    root, key = realistic
    people = set()
    for ds in headers(root, key).values():
        for keyword in ("PatientName", "ReferringPhysicianName", "OperatorsName"):
            people.add(str(ds[keyword].value).split("^^")[0])
    parts = [part for person in people for part in person.split("^")]
    assert len(people) > 3
    assert len(parts) == len(set(parts))


def test_a_large_corpus_still_gives_every_patient_a_name_of_their_own(tmp_path: Path) -> None:
    key = single(tmp_path, patients=200, size=16)
    assert len({p.name for p in key.patients}) == 200


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="patients"):
        generate_corpus(tmp_path, patients=0)
    with pytest.raises(ValueError, match="rows"):
        generate_corpus(tmp_path, rows=8)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Realistic corpus


def test_a_study_shares_one_study_uid_date_and_time_across_its_files(
    realistic: tuple[Path, AnswerKey],
) -> None:
    root, key = realistic
    studies: dict[str, set[tuple[str, str, str, str]]] = defaultdict(set)
    for file, ds in headers(root, key).items():
        study = file.rsplit("/", 2)[0]  # p001/s1
        studies[study].add((ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber))
    assert all(len(found) == 1 for found in studies.values())
    uids = [next(iter(found))[0] for found in studies.values()]
    assert len(uids) == len(set(uids)) == 3 * 2


def test_different_patients_have_different_ids_and_names(
    realistic: tuple[Path, AnswerKey],
) -> None:
    root, key = realistic
    patients: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for file, ds in headers(root, key).items():
        patients[file.split("/")[0]].add((ds.PatientID, str(ds.PatientName)))
    assert all(len(found) == 1 for found in patients.values())
    ids = {next(iter(found)) for found in patients.values()}
    assert len({i for i, _ in ids}) == len({n for _, n in ids}) == 3


def test_patient_truth_matches_the_headers(realistic: tuple[Path, AnswerKey]) -> None:
    root, key = realistic
    by_id = {p.patient_id: p for p in key.patients}
    for ds in headers(root, key).values():
        truth = by_id[ds.PatientID]
        assert str(ds.PatientName) == truth.name
        assert (ds.PatientBirthDate, ds.PatientSex) == (truth.birth_date, truth.sex)
        assert ds.OtherPatientIDs in truth.other_ids
        assert truth.accession_numbers.index(ds.AccessionNumber) == truth.study_dates.index(
            ds.StudyDate
        )


def test_files_of_a_series_share_its_uids_and_each_instance_has_its_own(
    realistic: tuple[Path, AnswerKey],
) -> None:
    root, key = realistic
    series: dict[str, set[tuple[str, str, str, str]]] = defaultdict(set)
    sop_uids = set()
    for file, ds in headers(root, key).items():
        uids = (ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SeriesDescription, ds.SeriesTime)
        series[file.rsplit("/", 1)[0]].add(uids)
        sop_uids.add(ds.SOPInstanceUID)
    assert all(len(found) == 1 for found in series.values())
    assert len(sop_uids) == len(key.files)


def test_later_series_reference_instances_of_the_same_study(
    realistic: tuple[Path, AnswerKey],
) -> None:
    root, key = realistic
    found = headers(root, key)
    study_of = {ds.SOPInstanceUID: ds.StudyInstanceUID for ds in found.values()}
    references = 0
    for ds in found.values():
        for keyword in ("ReferencedImageSequence", "SourceImageSequence"):
            for item in ds.get(keyword, []):
                assert study_of[item.ReferencedSOPInstanceUID] == ds.StudyInstanceUID
                references += 1
    assert references > 0


def test_a_second_study_references_the_patients_first_one(
    realistic: tuple[Path, AnswerKey],
) -> None:
    root, key = realistic
    found = headers(root, key)
    first_studies = {f.split("/")[0]: ds.StudyInstanceUID for f, ds in found.items() if "/s1/" in f}
    for file, ds in found.items():
        if "/s2/" in file:
            prior = ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID
            assert prior == first_studies[file.split("/")[0]]


def test_some_descriptors_quote_the_patients_name_or_id(
    realistic: tuple[Path, AnswerKey],
) -> None:
    _, key = realistic
    quotes = set()
    for patient in key.patients:
        surname, given = patient.name.split("^")
        quotes |= {patient.patient_id, f"{surname} {given}", f"{given} {surname}"}
    quoting = [i for i in key.injected if i.kind == "text"]
    assert quoting
    for injected in quoting:
        assert any(quote in injected.value for quote in quotes), injected


def test_headers_look_like_a_hospital_pacs(realistic: tuple[Path, AnswerKey]) -> None:
    root, key = realistic
    ds = read(root / key.files[0])
    for keyword in (
        "InstitutionName", "Manufacturer", "ManufacturerModelName", "StationName",
        "ReferringPhysicianName", "PatientAge", "ProtocolName", "SeriesDescription",
        "ImagePositionPatient", "PixelSpacing", "WindowCenter",
    ):  # fmt: skip
        assert ds.get(keyword) not in (None, ""), keyword
    if ds.Modality == "CT":
        assert (ds.RescaleIntercept, ds.RescaleSlope) == (-1024, 1)


# ---------------------------------------------------------------------------------------------
# Exhaustive corpus


def test_exhaustive_corpus_injects_into_90_percent_of_the_annex_e_attributes_pydicom_knows(
    exhaustive: tuple[Path, AnswerKey],
) -> None:
    _, key = exhaustive
    known = known_annex_e_rows()
    injected = {i.table_tag for i in key.injected} & known
    assert len(known) == 617  # Annex E 2024b rows with a tag pydicom 3.0 knows
    assert len(injected) >= 610  # not: Patient's Age (AS, 4 chars), and two US attributes
    top_level = {i.table_tag for i in key.injected if first_component(i.path) == i.table_tag}
    assert len(top_level & known) >= 0.9 * len(known)


def test_exhaustive_corpus_injects_two_sequences_deep(exhaustive: tuple[Path, AnswerKey]) -> None:
    _, key = exhaustive
    known = known_annex_e_rows()
    deep = [i for i in key.injected if i.path.count("[") >= 2 and i.table_tag != "private"]
    assert len({i.table_tag for i in deep} & known) >= 0.9 * len(known)
    outer = {re.sub(r"\[\d+\]", "[]", "/".join(i.path.split("/")[:2])) for i in deep}
    assert "(0040,0275)[]/(0008,1110)[]" in outer  # Request Attributes → Referenced Study
    assert "(0040,A730)[]/(0040,A730)[]" in outer  # SR content tree
    assert "(0400,0561)[]/(0400,0550)[]" in outer  # Original → Modified Attributes


def test_exhaustive_corpus_puts_phi_in_overlays_and_a_curve(
    exhaustive: tuple[Path, AnswerKey],
) -> None:
    root, key = exhaustive
    graphics = {(i.path, i.table_tag) for i in key.injected if i.kind == "graphics"}
    assert ("(6000,3000)", "60XX3000") in graphics
    assert ("(6002,4000)", "60XX4000") in graphics
    assert ("(6000,0022)", "") in graphics  # Overlay Description: no row of its own
    assert ("(5000,3000)", "50XXXXXX") in graphics
    ds = read(root / key.files[0])
    assert (ds[0x60000010].value, ds[0x60000040].value) == (64, "G")
    assert len(ds[0x60003000].value) == 64 * 64 // 8


def test_exhaustive_corpus_fills_safe_private_attributes_listed_as_keep(
    exhaustive: tuple[Path, AnswerKey],
) -> None:
    _, key = exhaustive
    text = resources.files("common.deid.data").joinpath("safe_private.tsv").read_text("utf-8")
    keep = {tuple(line.split("\t")[:4]) for line in text.splitlines() if line.endswith("\tkeep")}
    safe = [i for i in key.injected if i.kind == "private-safe"]
    assert {i.file for i in safe} == set(key.files)
    for injected in safe:
        group, creator, element = injected.path[1:-1].split(",")
        assert (group, creator, element, injected.vr) in keep, injected
        assert injected.value.startswith("KEEP")  # a marker, not PHI


def test_exhaustive_corpus_has_unsafe_private_attributes_and_a_private_sequence(
    exhaustive: tuple[Path, AnswerKey],
) -> None:
    _, key = exhaustive
    unsafe = [i for i in key.injected if i.kind == "private-unsafe"]
    creators = {i.path.split(",")[1] for i in unsafe}
    assert "ACME HOSPITAL 1" in creators  # unknown to the safe list
    assert creators & {"GEMS_ACQU_01", "SIEMENS MR HEADER"}  # known vendor, unlisted element
    inside = [i for i in unsafe if i.path.startswith("(0033,ACME HOSPITAL 1,20)[0]/")]
    assert {i.vr for i in inside} >= {"PN", "LO", "UI"}
    assert all(i.table_tag == "private" for i in inside)


def test_exhaustive_corpus_keeps_the_realistic_header(
    exhaustive: tuple[Path, AnswerKey], realistic_twin: AnswerKey
) -> None:
    _, key = exhaustive
    assert key.patients == realistic_twin.patients
    assert set(realistic_twin.injected) <= set(key.injected)


def test_exhaustive_values_occur_exactly_once_in_the_corpus(
    exhaustive: tuple[Path, AnswerKey], realistic_twin: AnswerKey
) -> None:
    root, key = exhaustive
    corpus = b"\x00".join(corpus_bytes(root, key))
    shared = {i.value for i in realistic_twin.injected}  # repeated by design: a study's UID…
    for injected in key.injected:
        if injected.value not in shared:
            assert corpus.count(injected.value.encode("ascii")) == 1, injected


def test_injected_records_name_the_attribute_they_sit_in(
    exhaustive: tuple[Path, AnswerKey],
) -> None:
    _, key = exhaustive
    by_path = {(i.file, i.path): i for i in key.injected}
    name = by_path[(key.files[0], "(0010,0010)")]
    assert (name.table_tag, name.vr, name.kind) == ("00100010", "PN", "identifier")
    nested = [i for i in key.injected if i.path.endswith("/(0010,0010)") and "ACME" not in i.path]
    assert nested and all(i.table_tag == "00100010" for i in nested)
    coded = [i for i in key.injected if i.path.startswith("(0008,0082)[0]/(0008,0104)")]
    assert coded and all(i.table_tag == "00080082" for i in coded)  # the sequence's row
