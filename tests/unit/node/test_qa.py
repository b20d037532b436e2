"""The QA preview: actions for every attribute, values only where they identify nobody,
and a PNG of the pseudonymized pixels."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from common.crypto import Pseudonymizer, SiteSecret
from common.deid.engine import Engine as DeidEngine
from common.deid.profile import load_profile
from node import qa
from node.exceptions import NotFound, PreviewUnavailable
from node.store.db import make_engine, make_sessionmaker, sqlite_url
from node.store.models import Base, DeidReport, Instance, Patient, Series, Study
from tests.conftest import ACCESSION, BIRTH_DATE, PATIENT_ID, PATIENT_NAME, SECRET, ct_dataset

ORIGINAL_UIDS = ("1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.1.1.1")


# -- a store with stage-1 instances (shared with test_api and test_cli) -------------------------


def stage1() -> DeidEngine:
    profile = load_profile("pseudonymize")
    mapper = Pseudonymizer(
        SiteSecret(SECRET),
        "site",
        subject_key_prefix=profile.subject_key_prefix,
        min_offset_days=profile.min_offset_days,
        max_offset_days=profile.max_offset_days,
    )
    return DeidEngine(profile, mapper)


def store_instance(session: Session, data_dir: Path, ds: Dataset | None = None) -> Instance:
    """De-identify ``ds`` (a CT by default) with stage 1 and store it as the ingest would."""
    done = stage1().deidentify(ds if ds is not None else ct_dataset())
    report = done.report
    relative = Path("store") / done.relative_path
    (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / relative).write_bytes(done.data)
    patient = session.execute(
        select(Patient).where(Patient.subject_key == report.subject_key)
    ).scalar_one_or_none() or Patient(subject_key=report.subject_key, sex="F")
    study = session.execute(
        select(Study).where(Study.study_uid == report.study_instance_uid)
    ).scalar_one_or_none() or Study(
        study_uid=report.study_instance_uid,
        patient=patient,
        study_date=dt.date(2023, 4, 15),
        description="CT HEAD",
        modalities=report.modality,
    )
    series = session.execute(
        select(Series).where(Series.series_uid == report.series_instance_uid)
    ).scalar_one_or_none() or Series(
        series_uid=report.series_instance_uid,
        study=study,
        modality=report.modality,
        body_part="HEAD",
        description="AX HEAD 5mm",
        manufacturer="ACME Medical",
        model="Scanner 9000",
        slice_thickness=5.0,
    )
    instance = Instance(
        sop_uid=report.sop_instance_uid,
        series=series,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        instance_number=1,
        path=relative.as_posix(),
        size=len(done.data),
        sha256=hashlib.sha256(done.data).hexdigest(),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    instance.report = DeidReport(
        profile=report.profile, pixels=report.pixels, actions=report.as_dict()["actions"]
    )
    session.add(instance)
    session.flush()
    return instance


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(sqlite_url(tmp_path / "node.db"))
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with make_sessionmaker(engine)() as session:
        yield session
        session.rollback()


@pytest.fixture
def stored(session: Session, tmp_path: Path) -> Instance:
    return store_instance(session, tmp_path)


def rows(preview: qa.Preview) -> dict[str, qa.AttributeChange]:
    return {row.path: row for row in preview.attributes}


# -- the attribute table ------------------------------------------------------------------------


def test_identifiers_show_their_action_and_never_a_value(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    table = rows(qa.preview(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid))
    for path, action in (
        ("PatientName", "subject-key"),
        ("PatientID", "subject-key"),
        ("AccessionNumber", "emptied"),
        ("OtherPatientIDs", "removed"),
        ("PatientAddress", "removed"),
        ("ReferringPhysicianName", "emptied"),
    ):
        assert table[path].action == action, path
        assert table[path].value is None, path
        assert table[path].withheld, path


def test_an_identifier_kept_by_stage_one_is_still_withheld(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    birth = rows(qa.preview(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid))[
        "PatientBirthDate"
    ]
    assert (birth.action, birth.value, birth.withheld) == ("kept", None, True)


def test_no_hospital_identifier_appears_anywhere_in_the_preview(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    preview = qa.preview(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid)
    text = json.dumps(dataclasses.asdict(preview))
    needles = [PATIENT_ID, ACCESSION, BIRTH_DATE, *PATIENT_NAME.split("^"), *ORIGINAL_UIDS]
    assert [n for n in needles if n in text] == []


def test_kept_attributes_show_the_stored_value(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    table = rows(qa.preview(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid))
    assert (table["Modality"].action, table["Modality"].value) == ("kept", "CT")
    assert table["SeriesDescription"].value == "AX HEAD 5mm"
    assert table["ImageType"].value == "ORIGINAL\\PRIMARY\\AXIAL"
    assert table["PixelData"].value == "(512 bytes)"


def test_a_cleaned_description_shows_what_remains_after_cleaning(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    description = rows(qa.preview(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid))[
        "StudyDescription"
    ]
    assert description.action == "cleaned"
    assert description.value is not None
    assert description.value.startswith("CT HEAD for ")
    assert "PHILLIPS" not in description.value


def test_uids_show_their_new_value_and_nested_items_are_listed(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    table = rows(qa.preview(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid))
    assert table["SOPInstanceUID"].action == "uid-mapped"
    assert table["SOPInstanceUID"].value == stored.sop_uid
    nested = table["ReferencedImageSequence[0].ReferencedSOPInstanceUID"]
    assert nested.action == "uid-mapped"
    assert nested.value is not None
    assert nested.value.startswith("2.25.")
    assert table["ReferencedImageSequence"].value == "1 item(s)"


def test_private_attributes_are_listed_by_tag(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    table = rows(qa.preview(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid))
    assert table["(0009,1001)"].action == "removed"  # unknown private, held a name
    assert (table["(0019,1002)"].action, table["(0019,1002)"].value) == ("kept", "912")


def test_the_preview_says_who_what_and_how_in_pseudonyms(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    preview = qa.preview(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid)
    assert preview.subject_key == stored.series.study.patient.subject_key
    assert preview.subject_key.startswith("PS")
    assert preview.study_uid == stored.series.study.study_uid
    assert preview.profile == "pseudonymize"
    assert preview.pixels == "accepted"
    assert sum(preview.summary.values()) == len(preview.attributes)
    assert preview.summary["subject-key"] == 2


def test_an_unknown_instance_is_not_found_and_its_uid_not_echoed(
    session: Session, tmp_path: Path
) -> None:
    with pytest.raises(NotFound, match=r"^no such instance on this node$"):
        qa.preview(session=session, data_dir=tmp_path, sop_uid="2.25.999")


def test_a_missing_stored_file_is_reported(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    (tmp_path / stored.path).unlink()
    with pytest.raises(PreviewUnavailable, match="the stored file is missing"):
        qa.preview(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid)


def test_a_stored_path_outside_the_data_folder_is_refused(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    stored.path = "../elsewhere.dcm"
    with pytest.raises(PreviewUnavailable, match="outside the data folder"):
        qa.preview(session=session, data_dir=tmp_path / "store", sop_uid=stored.sop_uid)


# -- the picture ------------------------------------------------------------------------------


def png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def grey(rows: int = 8, columns: int = 8, **attributes: object) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


def test_the_stored_pixels_render_as_a_png(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    image = png(qa.render_png(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid))
    assert image.mode == "L"
    assert image.size == (16, 16)
    assert np.asarray(image).min() == 0
    assert np.asarray(image).max() == 255  # min/max windowing without a window


def test_without_a_window_the_frame_range_fills_the_grey_scale() -> None:
    frame = np.array([[100, 200], [300, 400]], dtype=np.uint16)
    pixels = np.asarray(png(qa.render(frame, grey(2, 2))))
    assert pixels.tolist() == [[0, 85], [170, 255]]


def test_the_dataset_window_is_applied() -> None:
    frame = np.array([[0, 40], [50, 1000]], dtype=np.int16)
    ds = grey(2, 2, WindowCenter=50, WindowWidth=20)  # shows 40..60
    pixels = np.asarray(png(qa.render(frame, ds)))
    assert pixels.tolist() == [[0, 0], [128, 255]]


def test_the_modality_lut_applies_before_the_window() -> None:
    frame = np.array([[0, 1024], [1034, 2048]], dtype=np.uint16)
    ds = grey(2, 2, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=20)
    pixels = np.asarray(png(qa.render(frame, ds)))
    assert pixels.tolist() == [[0, 128], [255, 255]]


def test_monochrome1_is_inverted() -> None:
    frame = np.array([[0, 10]], dtype=np.uint16)
    ds = grey(1, 2, PhotometricInterpretation="MONOCHROME1")
    assert np.asarray(png(qa.render(frame, ds))).tolist() == [[255, 0]]


def test_a_large_image_is_downscaled_to_512_keeping_its_aspect() -> None:
    frame = np.zeros((768, 1024), dtype=np.uint16)
    frame[::2] = 1000
    image = png(qa.render(frame, grey(768, 1024)))
    assert image.size == (512, 384)


def test_colour_frames_render_in_colour() -> None:
    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    frame[..., 0] = 200
    ds = grey(4, 4, PhotometricInterpretation="RGB", SamplesPerPixel=3)
    image = png(qa.render(frame, ds))
    assert image.mode == "RGB"
    assert np.asarray(image)[0, 0].tolist() == [200, 0, 0]


def test_only_the_first_frame_is_rendered(session: Session, tmp_path: Path) -> None:
    ds = ct_dataset(rows=16)
    ds.NumberOfFrames = 2
    first = np.zeros((16, 16), dtype=np.uint16)
    first[:8] = 4000
    second = np.full((16, 16), 2000, dtype=np.uint16)
    ds.PixelData = np.stack([first, second]).tobytes()
    stored = store_instance(session, tmp_path, ds)
    image = np.asarray(
        png(qa.render_png(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid))
    )
    assert image[:8].min() == 255
    assert image[8:].max() == 0


def test_an_instance_without_pixels_has_no_picture(session: Session, tmp_path: Path) -> None:
    ds = ct_dataset()
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)
    stored = store_instance(session, tmp_path, ds)
    with pytest.raises(PreviewUnavailable, match="no pixel data"):
        qa.render_png(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid)


def test_pixels_that_do_not_decode_are_reported_without_a_crash(
    session: Session, tmp_path: Path, stored: Instance
) -> None:
    path = tmp_path / stored.path
    path.write_bytes(path.read_bytes()[:-300])  # truncated pixel data
    with pytest.raises(PreviewUnavailable, match="do not decode"):
        qa.render_png(session=session, data_dir=tmp_path, sop_uid=stored.sop_uid)
