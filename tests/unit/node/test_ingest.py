"""Stage-1 ingest: arrivals made durable, pseudonymized in worker processes, stored once,
and recovered after a crash."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.crypto import Pseudonymizer
from common.deid.files import read_instance
from compose.synthetic.dicom import generate_corpus
from node.ingest import service as ingest_service
from node.ingest import spool, validate, worker
from node.ingest.exceptions import IngestStopped, InstanceUnreadable
from node.ingest.service import Ingest
from node.settings import NodeSettings
from node.store.correspondence import new_key
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from node.store.models import Base, Instance, Patient, RejectedInstance
from tests.conftest import PATIENT_ID, PATIENT_NAME, SECRET, ct_dataset

REPOSITORY = Path(__file__).resolve().parents[3]


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def sample_file(name: str) -> bytes:
    return Path(str(get_testdata_file(name, download=False))).read_bytes()


@pytest.fixture
def settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(
        data_dir=tmp_path / "node",
        site_secret=SECRET.decode(),
        correspondence_key=new_key(),
        workers=1,
    )


@pytest.fixture
def sessions(settings: NodeSettings) -> Iterator[sessionmaker[Session]]:
    settings.data_dir.mkdir(parents=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def ingest(settings: NodeSettings, sessions: sessionmaker[Session]) -> Iterator[Ingest]:
    running = Ingest(settings, sessions)
    running.start()
    yield running
    running.stop()


def instances(sessions: sessionmaker[Session]) -> list[Instance]:
    with transaction(sessions) as session:
        return list(session.execute(select(Instance)).scalars())


def store_files(settings: NodeSettings) -> list[Path]:
    return sorted(p for p in settings.store_dir.rglob("*.dcm") if ".staging" not in p.parts)


def spool_files(settings: NodeSettings) -> list[str]:
    """The arrivals a restart would find waiting in the spool."""
    return [entry.name for entry in spool.waiting(settings.spool_dir)]


def half_made(settings: NodeSettings) -> list[str]:
    folder = settings.spool_dir
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.exists() else []


def assert_consistent(settings: NodeSettings, sessions: sessionmaker[Session]) -> None:
    """Every row has its file with its hash, every file its row, nothing left half-done."""
    rows = instances(sessions)
    assert sorted(settings.data_dir / row.path for row in rows) == store_files(settings)
    for row in rows:
        assert hashlib.sha256((settings.data_dir / row.path).read_bytes()).hexdigest() == row.sha256
    assert len({row.sop_uid for row in rows}) == len(rows)
    assert list((settings.store_dir / ".staging").iterdir()) == []
    assert half_made(settings) == []


# -- the checks on arrival -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "image_dfl.dcm",
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "SC_rgb_jpeg.dcm",
        "rtplan.dcm",
        "rtdose.dcm",
        "waveform_ecg.dcm",
    ],
)
def test_a_complete_instance_passes_the_arrival_check(name: str) -> None:
    validate.check(sample_file(name))


def test_the_arrival_check_reads_every_encoding_of_the_same_instance() -> None:
    ds = ct_dataset()
    for syntax in (ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = syntax
        arrival = validate.check(encode(ds))
        assert (arrival.transfer_syntax_uid, arrival.modality) == (syntax, "CT")


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.99])
def test_a_file_cut_short_is_unreadable(keep: float) -> None:
    data = sample_file("CT_small.dcm")
    with pytest.raises(InstanceUnreadable, match=r"truncated|no DICM"):
        validate.check(data[: int(len(data) * keep)])


def test_pixel_data_shorter_than_the_image_needs_is_unreadable() -> None:
    ds = ct_dataset(rows=16)
    ds.PixelData = ds.PixelData[:100]
    with pytest.raises(InstanceUnreadable, match="pixel data is shorter"):
        validate.check(encode(ds))
    with pytest.raises(InstanceUnreadable, match="truncated"):
        validate.check(sample_file("MR_truncated.dcm"))


def test_garbage_and_damaged_lengths_are_unreadable() -> None:
    with pytest.raises(InstanceUnreadable, match="no DICM"):
        validate.check(b"not DICOM at all" * 20)
    data = bytearray(encode(ct_dataset()))
    at = data.find(b"\x08\x00\x30\x10")  # StudyDescription: make its length absurd
    data[at + 6 : at + 8] = b"\xff\x7f"
    with pytest.raises(InstanceUnreadable, match="corrupt or truncated"):
        validate.check(bytes(data))


def test_an_instance_without_a_sop_instance_uid_is_unreadable() -> None:
    ds = ct_dataset()
    del ds.SOPInstanceUID
    with pytest.raises(InstanceUnreadable, match="SOP Instance UID"):
        validate.check(encode(ds))


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"],
)
def test_a_worker_reads_spooled_bytes_as_the_engine_reads_the_file(
    name: str, tmp_path: Path
) -> None:
    path = Path(str(get_testdata_file(name, download=False)))
    from_bytes = worker.read_arrival(path.read_bytes(), tmp_path)
    from_file = read_instance(path)
    assert from_bytes == from_file
    assert from_bytes.file_meta == from_file.file_meta
    assert list(tmp_path.iterdir()) == []  # the general reader's temporary file is gone


# -- the pipeline ----------------------------------------------------------------------------


def test_an_arrival_is_pseudonymized_and_stored_with_its_rows(
    ingest: Ingest, settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    ingest.accept(encode(ct_dataset()), source="c-store PACS")
    ingest.drain(30)
    [row] = instances(sessions)
    stored = (settings.data_dir / row.path).read_bytes()
    assert PATIENT_ID.encode() not in stored
    assert PATIENT_NAME.split("^", maxsplit=1)[0].encode() not in stored
    ds = dcmread(settings.data_dir / row.path)
    assert ds.SOPInstanceUID == row.sop_uid and ds.PatientID.startswith("PS")
    assert ingest.counts() == {
        "queued": 0,
        "stored": 1,
        "duplicates": 0,
        "replaced": 0,
        "rejected": 0,
        "retried": 0,
    }
    assert spool_files(settings) == []
    assert_consistent(settings, sessions)


def test_the_last_arrivals_of_a_push_are_stored_without_waiting_for_more(
    monkeypatch: pytest.MonkeyPatch, settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    monkeypatch.setattr(ingest_service, "BATCH_WAIT", 10.0)  # how long a batch may wait
    running = Ingest(settings, sessions)
    running.start()
    try:
        for number in range(3):
            sop_uid = f"1.2.826.0.1.3680043.10.1.1.1.{number + 7}"
            running.accept(encode(ct_dataset(sop_uid=sop_uid)), source="c-store PACS")
        started = time.monotonic()
        running.drain(30)
        assert time.monotonic() - started < 5.0  # the sender sent its last: nothing to wait for
    finally:
        running.stop()
    assert len(instances(sessions)) == 3


def test_a_job_waits_for_its_own_arrivals_not_for_the_whole_node(
    ingest: Ingest, settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    blocker = sqlite3.connect(settings.data_dir / "node.db", timeout=0)
    blocker.execute("BEGIN IMMEDIATE")  # the store cannot commit: arrivals stay pending
    try:
        ingest.accept(encode(ct_dataset()), source="c-store MODALITY")
        with pytest.raises(TimeoutError):
            ingest.drain(0.5)
        ingest.drain(0.5, job_id=41)  # job 41 brought nothing: it is done at once
    finally:
        blocker.rollback()
        blocker.close()
    original = "1.2.826.0.1.3680043.10.1.1.1.41"
    ingest.accept(encode(ct_dataset(sop_uid=original)), source="job 41", job_id=41)
    ingest.drain(30, job_id=41)
    stage1_uid = Pseudonymizer(settings.secret(), settings.site_project).uid(original)
    assert stage1_uid in {i.sop_uid for i in instances(sessions)}
    ingest.drain(30)
    assert len(instances(sessions)) == 2


def test_a_corrected_resend_replaces_the_stored_file_only_with_its_row(
    ingest: Ingest, settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    first = ct_dataset()
    ingest.accept(encode(first), source="c-store PACS")
    ingest.drain(30)
    [before] = instances(sessions)
    corrected = ct_dataset()
    corrected.StudyDescription = "CT HEAD corrected"
    ingest.accept(encode(corrected), source="c-store PACS")
    ingest.drain(30)
    [after] = instances(sessions)
    assert after.sha256 != before.sha256
    assert after.path != before.path  # written beside the old file, which then went
    assert not (settings.data_dir / before.path).exists()
    assert ingest.counts()["replaced"] == 1
    assert_consistent(settings, sessions)
    ingest.accept(encode(first), source="c-store PACS")  # and back again
    ingest.drain(30)
    [again] = instances(sessions)
    assert (again.path, again.sha256) == (before.path, before.sha256)
    assert_consistent(settings, sessions)


def test_the_same_instance_received_twice_is_stored_once(
    ingest: Ingest, settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    encoded = encode(ct_dataset())
    ingest.accept(encoded, source="c-store PACS")
    ingest.drain(30)
    ingest.accept(encoded, source="c-store PACS")
    ingest.accept(encoded, source="c-store PACS")
    ingest.drain(30)
    assert len(instances(sessions)) == 1
    assert ingest.counts()["duplicates"] == 2
    assert_consistent(settings, sessions)


def test_an_instance_stage_1_refuses_is_recorded_and_not_stored(
    ingest: Ingest, settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    ds = ct_dataset()
    ds.Modality = "US"  # the stage-1 profile rejects modalities prone to burned-in text
    ingest.accept(encode(ds), source="c-store US1")
    ingest.drain(30)
    assert instances(sessions) == []
    with transaction(sessions) as session:
        [row] = session.execute(select(RejectedInstance)).scalars()
        assert (row.code, row.modality, row.source) == ("burned-in-risk", "US", "c-store US1")
        assert PATIENT_ID not in row.reason
    assert ingest.counts()["rejected"] == 1
    assert store_files(settings) == [] and spool_files(settings) == []


def test_corrupt_bytes_are_refused_at_once_and_recorded(
    ingest: Ingest, settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    encoded = encode(ct_dataset())
    with pytest.raises(InstanceUnreadable):
        ingest.accept(encoded[: len(encoded) // 2], source="c-store PACS", job_id=None)
    ingest.drain(30)
    assert spool_files(settings) == []
    with transaction(sessions) as session:
        [row] = session.execute(select(RejectedInstance)).scalars()
        assert row.code == "unreadable"


def test_an_ingest_that_is_not_running_refuses_arrivals(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    idle = Ingest(settings, sessions)
    with pytest.raises(IngestStopped):
        idle.accept(encode(ct_dataset()), source="c-store PACS")


def corpus(folder: Path, patients: int = 2, per_series: int = 10) -> list[bytes]:
    generate_corpus(folder, patients=patients, instances_per_series=per_series, rows=16, columns=16)
    return [p.read_bytes() for p in sorted(folder.rglob("*.dcm"))]


def test_killed_workers_are_replaced_and_nothing_is_lost(
    settings: NodeSettings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"workers": 2})
    files = corpus(tmp_path / "corpus", patients=3)
    running = Ingest(settings, sessions)
    running.start()
    try:
        for number, encoded in enumerate(files):
            running.accept(encoded, source="c-store PACS")
            if number == len(files) // 2:
                for pid in running.worker_pids():
                    os.kill(pid, signal.SIGKILL)
        running.drain(60)
    finally:
        running.stop()
    assert len(instances(sessions)) == len(files)
    assert_consistent(settings, sessions)


def test_stage_1_workers_yield_the_cores_to_the_receiving_process(ingest: Ingest) -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    expected = min(19, ours + ingest_service.WORKER_NICENESS)
    assert expected > ours
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in ingest.worker_pids()] == [expected]


def test_what_a_stopped_ingest_leaves_in_the_spool_is_stored_at_the_next_start(
    settings: NodeSettings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    files = corpus(tmp_path / "corpus")
    first = Ingest(settings, sessions)
    first.start()
    for encoded in files:
        first.accept(encoded, source="c-store PACS")
    first.stop()
    left = len(spool_files(settings))
    assert first.counts()["queued"] == left
    second = Ingest(settings, sessions)
    second.start()
    try:
        second.drain(60)
        assert second.counts()["stored"] + second.counts()["duplicates"] == left
    finally:
        second.stop()
    assert len(instances(sessions)) == len(files)
    assert_consistent(settings, sessions)


def test_stop_ends_in_bounded_time_with_a_stuck_worker_and_its_arrivals_are_redone(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_service, "STOP_TIMEOUT", 1.0)
    monkeypatch.setattr(ingest_service, "WORKER_EXIT_SECONDS", 0.5)
    files = corpus(tmp_path / "corpus", patients=1, per_series=3)
    first = Ingest(settings, sessions)
    first.start()
    [stuck] = first.worker_pids()
    os.kill(stuck, signal.SIGSTOP)  # stage 1 never finishes (SIGTERM cannot end it either)
    try:
        for encoded in files:
            first.accept(encoded, source="c-store PACS")
        started = time.monotonic()
        first.stop()
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGKILL)
    assert took < 5.0
    assert not _alive(stuck)
    assert len(spool_files(settings)) == len(files)  # still waiting: nothing acknowledged lost
    second = Ingest(settings, sessions)
    second.start()
    try:
        second.drain(60)
    finally:
        second.stop()
    assert len(instances(sessions)) == len(files)
    assert spool_files(settings) == []
    assert_consistent(settings, sessions)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0  # not our child (the fork server's): ask the kernel
    if waited:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:  # noqa: PTH123
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


_RECEIVER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from node.settings import NodeSettings
    from node.store.db import make_engine, make_sessionmaker
    from node.ingest.service import Ingest

    data_dir, corpus = Path(sys.argv[1]), Path(sys.argv[2])
    settings = NodeSettings(
        data_dir=data_dir,
        site_secret=os.environ["SECRET"],
        correspondence_key=os.environ["KEY"],
        workers=2,
    )
    ingest = Ingest(settings, make_sessionmaker(make_engine(settings.database)))
    ingest.start()
    files = sorted(corpus.rglob("*.dcm"))
    for number, path in enumerate(files):
        ingest.accept(path.read_bytes(), source="c-store PACS")
    print(len(files), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no clean stop: the power went out
    """
)


def test_a_receiver_killed_mid_way_restarts_into_a_consistent_store(
    settings: NodeSettings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    files = corpus(tmp_path / "corpus", patients=4)
    environment = {
        **os.environ,
        "SECRET": SECRET.decode(),
        "KEY": settings.correspondence_key.get_secret_value(),
    }
    log = tmp_path / "receiver.log"
    with log.open("w") as output:
        receiver = subprocess.Popen(
            [sys.executable, "-c", _RECEIVER, str(settings.data_dir), str(tmp_path / "corpus")],
            env=environment,
            cwd=REPOSITORY,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers too: the whole node goes down at once
        )
        try:
            receiver.wait(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(receiver.pid, signal.SIGKILL)
    assert receiver.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    assert int(log.read_text().split()[0]) == len(files)  # every one was acknowledged
    assert spool_files(settings), "the receiver finished before it was killed"
    restarted = Ingest(settings, sessions)
    restarted.start()
    try:
        restarted.drain(60)
    finally:
        restarted.stop()
    assert len(instances(sessions)) == len(files)
    assert spool_files(settings) == []
    assert_consistent(settings, sessions)
    with transaction(sessions) as session:
        assert session.execute(select(func.count()).select_from(Patient)).scalar_one() == 4


def test_start_removes_what_an_interrupted_run_left_behind(
    settings: NodeSettings, sessions: sessionmaker[Session], ingest: Ingest
) -> None:
    ingest.accept(encode(ct_dataset()), source="c-store PACS")
    ingest.drain(30)
    ingest.stop()
    staging = settings.store_dir / ".staging"
    (staging / "123-4").write_bytes(b"half a file")
    (settings.spool_dir / ".partial-spare-000000000009").write_bytes(b"half a spare")
    orphan = settings.store_dir / "PSORPHAN0000" / "1.2" / "1.2.3"
    orphan.mkdir(parents=True)
    (orphan / "1.2.3.4.dcm").write_bytes(b"a file whose rows were deleted")
    again = Ingest(settings, sessions)
    again.start()
    again.stop()
    assert not (settings.store_dir / "PSORPHAN0000").exists()
    assert list(staging.iterdir()) == [] and spool_files(settings) == []
    assert half_made(settings) == []
    assert len(store_files(settings)) == 1
    assert_consistent(settings, sessions)


def test_the_database_schema_is_the_migrated_one(sessions: sessionmaker[Session]) -> None:
    # The ingest writes through the models; the tests run it on the migrated schema.
    with transaction(sessions) as session:
        assert session.execute(select(func.count()).select_from(Instance)).scalar_one() == 0
    assert {"instance", "correspondence"} <= set(Base.metadata.tables)


def test_pixels_of_every_arrival_survive_stage_1(
    ingest: Ingest, settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    ds = ct_dataset(rows=32)
    ingest.accept(encode(ds), source="c-store PACS")
    ingest.drain(30)
    [row] = instances(sessions)
    stored = dcmread(settings.data_dir / row.path)
    assert np.array_equal(stored.pixel_array, ds.pixel_array)
