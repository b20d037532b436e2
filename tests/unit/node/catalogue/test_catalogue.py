"""The node's catalogue: counts of its own store, normalized, suppressed, rounded."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from common.schemas.catalogue import CataloguePublication, CubeCell, MarginalDimension
from node.catalogue import service as catalogue
from node.clinical.models import Condition
from node.store.db import make_engine, make_sessionmaker, transaction
from node.store.models import Base, Patient, Series, Study

_uids = itertools.count(1)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def add_patients(
    session: Session,
    count: int,
    *,
    description: str,
    modality: str = "MR",
    sex: str = "F",
    birth_year: int = 1950,
    study_date: dt.date = dt.date(2021, 3, 4),
    series_per_study: int = 1,
    manufacturer: str = "SIEMENS",
    thickness: float = 1.0,
) -> None:
    for _ in range(count):
        n = next(_uids)
        patient = Patient(subject_key=f"SK{n:010d}", sex=sex, birth_year=birth_year)
        study = Study(study_uid=f"2.25.{n}", study_date=study_date, modalities=modality)
        study.patient = patient
        for s in range(series_per_study):
            study.series.append(
                Series(
                    series_uid=f"2.25.{n}.{s}",
                    modality=modality,
                    body_part="HEAD",
                    description=description,
                    manufacturer=manufacturer,
                    field_strength=3.0 if modality == "MR" else None,
                    slice_thickness=thickness,
                )
            )
        session.add(patient)


def view(publication: CataloguePublication, name: str) -> list[CubeCell]:
    return [cell for cell in publication.cells if cell.view == name]


def build(sessions: sessionmaker[Session]) -> CataloguePublication:
    with transaction(sessions) as session:
        return catalogue.build(session=session)


def test_series_are_counted_under_their_normalized_sequence_type(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        add_patients(session, 12, description="t1_mprage_sag_p2_iso", series_per_study=2)
        add_patients(session, 11, description="Ax T2 FLAIR", manufacturer="Philips Medical Systems")
    publication = build(sessions)
    by_type = {cell.sequence_type: cell for cell in view(publication, "sequence")}
    assert set(by_type) == {"T1w", "FLAIR"}
    t1 = by_type["T1w"]
    assert (t1.patients, t1.studies, t1.series) == (10, 10, 25)  # 12, 12, 24 rounded to 5
    assert (t1.modality, t1.body_part, t1.slice_band) == ("MR", "HEAD", "0-1")
    assert t1.manufacturer is None  # not a dimension of this view
    devices = {(c.manufacturer, c.field_strength) for c in view(publication, "device")}
    assert devices == {("Siemens", 3.0), ("Philips", 3.0)}
    years = {(c.sequence_type, c.study_year) for c in view(publication, "year")}
    assert years == {("T1w", 2021), ("FLAIR", 2021)}


def test_a_small_cell_is_withheld_and_so_is_its_complement(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        add_patients(session, 40, description="t1_mprage")
        add_patients(session, 14, description="t2_tse_tra")
        add_patients(session, 3, description="ep2d_diff_b1000")  # 3 DWI patients
    publication = build(sessions)
    published = {cell.sequence_type for cell in view(publication, "sequence")}
    # DWI alone would follow from "all MR" minus the rest: T2w (the smallest) goes too.
    assert published == {"T1w"}
    assert {cell.sequence_type for cell in view(publication, "year")} == {"T1w"}
    (device,) = view(publication, "device")  # all 57 patients on one kind of scanner
    assert device.patients == 55
    assert publication.suppressed_cells == 4
    assert publication.threshold == 10


def test_a_node_smaller_than_the_threshold_publishes_no_cell(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        add_patients(session, 9, description="t1_mprage")
    publication = build(sessions)
    assert publication.cells == []
    assert publication.marginals == []
    assert publication.suppressed_cells == 3  # one cell in each of the three views


def test_patients_are_counted_by_sex_and_age_at_their_first_study(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        add_patients(session, 20, description="t1", sex="F", birth_year=1950)  # 71 in 2021
        add_patients(session, 15, description="t1", sex="M", birth_year=1990)  # 31 in 2021
        add_patients(session, 2, description="t1", sex="O", birth_year=1990)
    publication = build(sessions)
    marginals = {(m.dimension, m.code): m.patients for m in publication.marginals}
    # "O" (2) alone would be the total minus F and M: M (15) is withheld with it.
    assert marginals[(MarginalDimension.SEX, "F")] == 20
    assert (MarginalDimension.SEX, "O") not in marginals
    assert (MarginalDimension.SEX, "M") not in marginals
    assert marginals[(MarginalDimension.AGE_BAND, "60-79")] == 20
    assert marginals[(MarginalDimension.AGE_BAND, "18-39")] == 15


def test_the_publication_holds_no_pseudonym_or_uid(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        add_patients(session, 30, description="t1_mprage")
    text = build(sessions).model_dump_json()
    assert "SK0" not in text
    assert "2.25." not in text


def test_the_same_store_gives_the_same_publication(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        add_patients(session, 25, description="t1_mprage")
        add_patients(session, 4, description="t2_tse")
        add_patients(session, 12, description="flair", modality="MR", thickness=5.0)
    first, second = build(sessions), build(sessions)
    assert first.cells == second.cells
    assert first.marginals == second.marginals


@pytest.mark.parametrize(
    ("text", "name"),
    [("SIEMENS", "Siemens"), ("GE MEDICAL SYSTEMS", "GE"), ("Toshiba", "Canon"), ("Acme", "Acme")],
)
def test_manufacturer_spellings_fold_to_one_name(text: str, name: str) -> None:
    assert catalogue.manufacturer(text) == name


def test_diagnoses_are_counted_by_patient_under_the_ontologys_system_names(
    sessions: sessionmaker[Session],
) -> None:
    icd10cm = "http://hl7.org/fhir/sid/icd-10-cm"
    with transaction(sessions) as session:
        for n in range(12):
            for part in range(2):  # two records of the same diagnosis: one patient
                session.add(
                    Condition(
                        subject_key=f"SKC{n:04d}", system=icd10cm, code="G30.1",
                        date=dt.date(2020, 1, 1 + part), source=f"fhir:Condition/{n}#{part}",
                    )
                )  # fmt: skip
        for n in range(4):
            session.add(
                Condition(subject_key=f"SKD{n:04d}", system=icd10cm, code="G30.9",
                          source=f"fhir:Condition/d{n}")
            )  # fmt: skip
    publication = build(sessions)
    conditions = {
        (m.system, m.code): m.patients
        for m in publication.marginals
        if m.dimension is MarginalDimension.CONDITION
    }
    assert conditions == {("ICD10CM", "G30.1"): 10}  # 12 rounded; G30.9's 4 withheld
