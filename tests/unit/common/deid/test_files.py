"""Malformed input gets a clear reason; outputs are never half-written."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian

from common.deid.exceptions import InstanceRejected, NotDicom
from common.deid.files import read_instance, write_atomic
from tests.conftest import ct_dataset


def sample(name: str) -> Path:
    return Path(str(get_testdata_file(name, download=False)))


def test_a_text_file_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(NotDicom, match="not a DICOM file"):
        read_instance(path)


def test_a_truncated_file_is_reported_as_truncated() -> None:
    with pytest.raises(NotDicom, match="truncated"):
        read_instance(sample("MR_truncated.dcm"))


def test_a_file_cut_in_the_middle_of_its_header_is_reported(tmp_path: Path) -> None:
    whole = sample("CT_small.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(whole[:700])
    with pytest.raises(NotDicom, match=r"truncated"):
        read_instance(path)


def test_a_dicomdir_is_skipped_with_a_reason() -> None:
    folder = sample("CT_small.dcm").parent / "dicomdirtests"
    with pytest.raises(NotDicom, match="DICOMDIR"):
        read_instance(folder / "DICOMDIR")


def test_a_file_without_preamble_but_with_uids_is_read(tmp_path: Path) -> None:
    ds = ct_dataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "raw.dcm"
    ds.save_as(path, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    assert read_instance(path).SOPInstanceUID == ds.SOPInstanceUID


def test_write_atomic_leaves_no_partial_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out" / "x.dcm"

    def fail(self: Path, other: Path) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"abc")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_write_atomic_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "x.dcm"
    write_atomic(target, b"old")
    write_atomic(target, b"new", durable=True)
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcm"]


def test_corrupted_files_are_read_or_rejected_never_crash(tmp_path: Path, make_engine) -> None:
    """Truncations and flipped bytes anywhere: a clear NotDicom, or a dataset the engine
    de-identifies or rejects with a reason — never another exception."""
    whole = sample("CT_small.dcm").read_bytes()
    engine = make_engine("anonymize")
    chance = random.Random(4)
    variants = [whole[:cut] for cut in range(0, len(whole), 397)]
    for _ in range(60):
        damaged = bytearray(whole)
        for _ in range(8):
            damaged[chance.randrange(132, len(whole))] = chance.randrange(256)
        variants.append(bytes(damaged))
    outcomes = {"read": 0, "not-dicom": 0}
    for index, content in enumerate(variants):
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(content)
        try:
            ds = read_instance(path)
        except NotDicom:
            outcomes["not-dicom"] += 1
            continue
        outcomes["read"] += 1
        with contextlib.suppress(InstanceRejected):  # a rejection with a reason is fine
            engine.deidentify(ds)
    assert outcomes["read"] and outcomes["not-dicom"]
