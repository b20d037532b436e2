"""The store service: rows for de-identified instances, deduplication, deletion, counts."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.deid.engine import Engine
from node.ingest import worker
from node.ingest.spool import SpoolEntry
from node.store import correspondence
from node.store import service as store
from node.store.correspondence import Keyring, new_key, parse_key
from node.store.db import make_engine, make_sessionmaker, transaction
from node.store.models import (
    Base,
    Correspondence,
    DeidReport,
    Instance,
    Job,
    JobStatus,
    Patient,
    RejectedInstance,
    Series,
    Study,
)
from tests.conftest import PATIENT_ID, SECRET, ct_dataset


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
def sessions(data_dir: Path) -> Iterator[sessionmaker[Session]]:
    data_dir.mkdir(parents=True)
    engine = make_engine(f"sqlite:///{data_dir / 'node.db'}")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(current=parse_key(new_key()))


@pytest.fixture
def stage1(data_dir: Path) -> tuple[Engine, worker.StoreWriter]:
    config = worker.WorkerConfig(
        profile="pseudonymize", project="site", secret=SECRET, store_dir=data_dir / "store"
    )
    return worker.build_engine(config), worker.StoreWriter(config.store_dir)


def arrive(
    stage1: tuple[Engine, worker.StoreWriter], tmp_path: Path, ds: Dataset
) -> store.InstanceRecord:
    """Run stage 1 on ``ds`` as a worker would; the record the writer would store."""
    path = tmp_path / f"arrival-{ds.SOPInstanceUID}.dcm"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())
    entry = SpoolEntry(0, 0, path, 0, len(buffer.getvalue()), source="test", job_id=None)
    outcome = worker.deidentify_and_store(*stage1, entry)
    assert isinstance(outcome, worker.Stored), outcome
    return outcome.record


def count(session: Session, model: type[Base]) -> int:
    return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_a_new_instance_gets_patient_study_series_instance_and_report_rows(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
) -> None:
    record = arrive(stage1, tmp_path, ct_dataset())
    with transaction(sessions) as session:
        [result] = store.store_batch(session=session, keyring=keyring, records=[record])
    assert result.status is store.StoreStatus.STORED
    with transaction(sessions) as session:
        instance = session.execute(select(Instance)).scalar_one()
        assert instance.sop_uid == record.sop_uid
        assert instance.path == record.path and instance.path.startswith("store/")
        assert instance.sha256 == record.sha256 and instance.size == record.size
        assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.1"
        series, study = instance.series, instance.series.study
        assert (series.modality, series.manufacturer, series.model) == (
            "CT",
            "ACME Medical",
            "Scanner 9000",
        )
        assert series.description == "AX HEAD 5mm"
        assert study.study_date is not None and study.study_date.isoformat() == "2023-04-15"
        assert study.modalities == "CT"
        assert study.patient_age_years == 76
        assert study.patient.sex == "F" and study.patient.birth_year == 1947
        assert study.patient.subject_key == record.subject_key
        report = session.execute(select(DeidReport)).scalar_one()
        assert report.profile == "pseudonymize"
        assert "FileMetaInformation" in report.actions["rewritten"]


def test_the_hospital_identifiers_are_only_in_the_encrypted_correspondence_table(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
    data_dir: Path,
) -> None:
    ds = ct_dataset()
    originals = [PATIENT_ID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID]
    record = arrive(stage1, tmp_path, ds)
    with transaction(sessions) as session:
        store.store_batch(session=session, keyring=keyring, records=[record])
    with transaction(sessions) as session:
        kinds = {
            row.kind: row.pseudonym for row in session.execute(select(Correspondence)).scalars()
        }
        assert kinds == {
            "patient": record.subject_key,
            "study": record.study_uid,
            "series": record.series_uid,
            "instance": record.sop_uid,
        }
        found = correspondence.originals_for(
            session=session, keyring=keyring, kind="patient", pseudonym=record.subject_key
        )
        assert found == [PATIENT_ID]
    database = (data_dir / "node.db").read_bytes()
    stored_file = (data_dir / record.path).read_bytes()
    for original in originals:
        assert original.encode() not in database
        assert original.encode() not in stored_file


def test_the_same_instance_twice_is_a_duplicate_and_writes_nothing(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
) -> None:
    record = arrive(stage1, tmp_path, ct_dataset())
    again = arrive(stage1, tmp_path, ct_dataset())
    assert again == record  # stage 1 is deterministic
    with transaction(sessions) as session:
        store.store_batch(session=session, keyring=keyring, records=[record])
    with transaction(sessions) as session:
        results = store.store_batch(session=session, keyring=keyring, records=[again, again])
    assert [r.status for r in results] == [store.StoreStatus.DUPLICATE] * 2
    with transaction(sessions) as session:
        assert [count(session, m) for m in (Patient, Study, Series, Instance)] == [1, 1, 1, 1]
        assert count(session, Correspondence) == 4


def test_two_copies_in_one_batch_store_one_instance(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
) -> None:
    record = arrive(stage1, tmp_path, ct_dataset())
    with transaction(sessions) as session:
        results = store.store_batch(session=session, keyring=keyring, records=[record, record])
    assert [r.status for r in results] == [store.StoreStatus.STORED, store.StoreStatus.DUPLICATE]


def test_a_series_of_several_instances_shares_its_rows(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
) -> None:
    records = [
        arrive(stage1, tmp_path, ct_dataset(sop_uid=f"1.2.826.0.1.3680043.10.1.1.1.{n}"))
        for n in range(1, 6)
    ]
    with transaction(sessions) as session:
        store.store_batch(session=session, keyring=keyring, records=records[:2])
    with transaction(sessions) as session:
        store.store_batch(session=session, keyring=keyring, records=records[2:])
    with transaction(sessions) as session:
        assert [count(session, m) for m in (Patient, Study, Series, Instance)] == [1, 1, 1, 5]
        assert count(session, Correspondence) == 3 + 5


def test_an_instance_resent_with_other_content_replaces_the_stored_one(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
) -> None:
    first = arrive(stage1, tmp_path, ct_dataset())
    corrected = ct_dataset()
    corrected.SeriesDescription = "AX HEAD 2.5mm"
    second = arrive(stage1, tmp_path, corrected)
    # Beside the stored file, not over it: until the new row commits, the old file and its
    # row still agree.
    assert second.path != first.path and second.sha256 != first.sha256
    assert Path(second.path).parent == Path(first.path).parent
    with transaction(sessions) as session:
        store.store_batch(session=session, keyring=keyring, records=[first])
    with transaction(sessions) as session:
        [result] = store.store_batch(session=session, keyring=keyring, records=[second])
    assert result.status is store.StoreStatus.REPLACED and result.obsolete == [first.path]
    with transaction(sessions) as session:
        instance = session.execute(select(Instance)).scalar_one()
        assert instance.sha256 == second.sha256


def test_an_instance_moved_to_another_patient_leaves_no_empty_rows_behind(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
    data_dir: Path,
) -> None:
    first = arrive(stage1, tmp_path, ct_dataset())
    moved = arrive(stage1, tmp_path, ct_dataset(patient_id="MRN00000042"))
    assert moved.sop_uid == first.sop_uid and moved.path != first.path
    with transaction(sessions) as session:
        store.store_batch(session=session, keyring=keyring, records=[first])
    with transaction(sessions) as session:
        [result] = store.store_batch(session=session, keyring=keyring, records=[moved])
    assert result.status is store.StoreStatus.REPLACED
    assert result.obsolete == [first.path]
    store.remove_files(data_dir, result.obsolete)
    assert not (data_dir / first.path).exists()
    assert not (data_dir / "store" / first.subject_key).exists()
    with transaction(sessions) as session:
        patients = list(session.execute(select(Patient.subject_key)).scalars())
        assert patients == [moved.subject_key]
        assert count(session, Instance) == 1


def test_rejections_are_recorded_and_a_vanished_job_is_forgotten(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        job = Job(kind="retrieve", status=JobStatus.RUNNING)
        session.add(job)
        session.flush()
        job_id = job.id
    rejections = [
        store.Rejection(
            "burned-in-risk", "US may hold burned-in text", "c-store PACS", "1.2", "US"
        ),
        store.Rejection("not-dicom", "truncated", "c-move job", job_id=job_id),
        store.Rejection("not-dicom", "truncated", "c-move job", job_id=job_id + 99),
    ]
    with transaction(sessions) as session:
        assert store.record_rejections(session=session, rejections=rejections) == 3
    with transaction(sessions) as session:
        rows = session.execute(select(RejectedInstance).order_by(RejectedInstance.id)).scalars()
        assert [(r.code, r.modality, r.job_id) for r in rows] == [
            ("burned-in-risk", "US", None),
            ("not-dicom", "", job_id),
            ("not-dicom", "", None),
        ]


def test_status_counts_count_what_the_node_holds(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
) -> None:
    records = [
        arrive(stage1, tmp_path, ct_dataset(sop_uid="1.2.826.0.1.3680043.10.1.1.1.11")),
        arrive(
            stage1,
            tmp_path,
            ct_dataset(
                sop_uid="1.2.826.0.1.3680043.10.1.1.2.12", series_uid="1.2.826.0.1.3680043.10.1.1.2"
            ),
        ),
    ]
    with transaction(sessions) as session:
        store.store_batch(session=session, keyring=keyring, records=records)
        store.record_rejection(session=session, rejection=store.Rejection("x", "y"))
        session.add(Job(kind="find", status=JobStatus.QUEUED))
        session.add(Job(kind="find", status=JobStatus.DONE))
    with transaction(sessions) as session:
        assert store.status_counts(session=session) == {
            "patients": 1,
            "studies": 1,
            "series": 2,
            "instances": 2,
            "rejected": 1,
            "queued_jobs": 1,
        }


def test_deleting_a_patient_removes_rows_then_files_and_keeps_the_correspondence(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
    data_dir: Path,
) -> None:
    record = arrive(stage1, tmp_path, ct_dataset())
    other = arrive(
        stage1,
        tmp_path,
        ct_dataset(
            patient_id="MRN2",
            sop_uid="1.2.826.0.1.3680043.10.1.9.1.1",
            study_uid="1.2.826.0.1.3680043.10.1.9",
            series_uid="1.2.826.0.1.3680043.10.1.9.1",
        ),
    )
    with transaction(sessions) as session:
        store.store_batch(session=session, keyring=keyring, records=[record, other])
    with transaction(sessions) as session:
        paths = store.delete_patient(session=session, subject_key=record.subject_key)
        assert store.delete_patient(session=session, subject_key="PSNOBODY") == []
    assert paths == [Path(record.path)]
    assert store.remove_files(data_dir, paths) == 1
    assert not (data_dir / "store" / record.subject_key).exists()
    assert (data_dir / other.path).is_file()
    with transaction(sessions) as session:
        assert count(session, Instance) == 1 and count(session, DeidReport) == 1
        assert (
            store.stored_instance_for(
                session=session, keyring=keyring, original_sop_uid=ct_dataset().SOPInstanceUID
            )
            is None
        )
        assert count(session, Correspondence) == 8  # restoring gives the same pseudonyms back
    with transaction(sessions) as session:  # and a restore stores it again
        [result] = store.store_batch(session=session, keyring=keyring, records=[record])
    assert result.status is store.StoreStatus.STORED


def test_a_patient_folder_without_a_patient_row_is_an_orphan(
    sessions: sessionmaker[Session],
    keyring: Keyring,
    stage1: tuple[Engine, worker.StoreWriter],
    tmp_path: Path,
    data_dir: Path,
) -> None:
    record = arrive(stage1, tmp_path, ct_dataset())
    orphan = arrive(
        stage1,
        tmp_path,
        ct_dataset(
            patient_id="MRN3",
            sop_uid="1.2.826.0.1.3680043.10.1.7.1.1",
            study_uid="1.2.826.0.1.3680043.10.1.7",
            series_uid="1.2.826.0.1.3680043.10.1.7.1",
        ),
    )
    with transaction(sessions) as session:
        store.store_batch(session=session, keyring=keyring, records=[record])
    with transaction(sessions) as session:
        found = store.orphan_subject_folders(session=session, store_dir=data_dir / "store")
    assert found == [data_dir / "store" / orphan.subject_key]
    assert store.remove_folders(found) == 1
    assert (data_dir / record.path).is_file()


def test_a_record_keeps_the_hospital_identifiers_out_of_its_repr(
    stage1: tuple[Engine, worker.StoreWriter], tmp_path: Path
) -> None:
    record = arrive(stage1, tmp_path, ct_dataset())
    assert PATIENT_ID not in repr(record)
    assert ct_dataset().SOPInstanceUID not in repr(record.originals)
    assert dataclasses.asdict(record)["originals"]["patient_id"] == PATIENT_ID


def test_the_stored_file_is_the_pseudonymized_instance(
    stage1: tuple[Engine, worker.StoreWriter], tmp_path: Path, data_dir: Path
) -> None:
    record = arrive(stage1, tmp_path, ct_dataset())
    ds = dcmread(data_dir / record.path)
    assert ds.PatientID == record.subject_key
    assert ds.SOPInstanceUID == record.sop_uid
    assert ds.StudyInstanceUID == record.study_uid
