"""Selection jobs: specs, CSV input, the runner (find → retrieve, retries, resumption,
cancellation, reports), clean-up and restore, the scheduler and the command line.

The PACS is a fake here (tests/integration/test_pacs.py uses a real Orthanc); the ingest is
a miniature stage 1 that stores pseudonymized rows and correspondence like node.ingest.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from alembic import command
from alembic.config import Config
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from pydantic import SecretStr
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage
from sqlalchemy import func, select
from sqlalchemy import text as sql
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from common.crypto import Pseudonymizer
from node.clinical.models import Condition, Person
from node.dicom.scu import (
    MoveOriginators,
    OnProgress,
    PacsRefused,
    PacsUnavailable,
    Progress,
    RetrieveResult,
    RetrieveTarget,
    SeriesMatch,
    SeriesQuery,
    ShouldCancel,
    StoreInstance,
    StudyMatch,
    StudyQuery,
    parse_date,
    wildcard_match,
)
from node.jobs import cli, scheduled, service
from node.jobs.exceptions import InvalidSelection, JobFinished, JobNotFound, SpecUnreadable
from node.jobs.runner import PacsOperations, RetryPolicy, Runner, StudyState, stage1_uid_mapper
from node.jobs.service import IdentifierKind, JobKind, Method, RetrieveCreate
from node.settings import NodeSettings, Pacs
from node.store import correspondence
from node.store.correspondence import new_key
from node.store.db import MIGRATIONS, make_engine, make_sessionmaker, migrate, transaction
from node.store.models import (
    AuditRecord,
    Correspondence,
    Instance,
    Job,
    JobStatus,
    Patient,
    RejectedInstance,
    Series,
    Study,
)
from tests.conftest import SECRET, ct_dataset
from tests.unit.node.test_qa import stage1

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ROOT = "1.2.826.0.1.3680043.10.543"


# -- a PACS and a stage 1 in miniature ----------------------------------------------------


@dataclass
class FakeSeries:
    uid: str
    modality: str
    protocol: str
    description: str
    instances: list[str]


@dataclass
class FakeStudy:
    uid: str
    patient_id: str
    accession: str
    date: str
    description: str
    series: list[FakeSeries]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted({s.modality for s in self.series}))

    def match(self) -> StudyMatch:
        return StudyMatch(
            study_uid=self.uid,
            patient_id=self.patient_id,
            accession_number=self.accession,
            study_date=self.date,
            description=self.description,
            modalities=self.modalities,
            series_count=len(self.series),
            instance_count=sum(len(s.instances) for s in self.series),
        )


def fake_study(
    number: int,
    *,
    patient_id: str,
    modalities: Sequence[str] = ("MR",),
    protocol: str = "DEMENTIA",
    per_series: int = 2,
    date: str = "20240105",
) -> FakeStudy:
    uid = f"{ROOT}.{number}"
    series = [
        FakeSeries(
            uid=f"{uid}.{n}",
            modality=modality,
            protocol=protocol if modality == "MR" else "",
            description=f"{modality} series {n}",
            instances=[f"{uid}.{n}.{i}" for i in range(1, per_series + 1)],
        )
        for n, modality in enumerate(modalities, start=1)
    ]
    return FakeStudy(uid, patient_id, f"ACC{number:05d}", date, "MR BRAIN", series)


class Crash(BaseException):
    """The node process dying mid-job (not an Exception: nothing may catch it)."""


@dataclass
class FakePacs:
    """Answers C-FIND like a PACS; C-MOVE delivers to the node's ingest, C-GET to ``store``."""

    studies: list[FakeStudy]
    ingest: FakeIngest
    unavailable: int = 0  # the next N operations cannot connect
    refuse: bool = False  # the PACS does not know the move destination
    failing: dict[str, int] = field(default_factory=dict)  # study uid -> failing retrievals
    crash_after: int | None = None  # die after this many retrievals
    block: bool = False  # retrieve until cancelled
    during: Callable[[], None] | None = None  # called after the first instance sent
    retrievals: list[str] = field(default_factory=list)
    cancels: int = 0

    def find_studies(self, queries: Sequence[StudyQuery]) -> list[StudyMatch]:
        self._connect()
        found: dict[str, StudyMatch] = {}
        for query in queries:
            for study in self.studies:
                match = study.match()
                if (not query.study_uid or query.study_uid == study.uid) and match.matches(query):
                    found.setdefault(study.uid, match)
        return list(found.values())

    def find_series(self, queries: Sequence[SeriesQuery]) -> list[SeriesMatch]:
        self._connect()
        result = []
        for query in queries:
            study = next(s for s in self.studies if s.uid == query.study_uid)
            for series in study.series:
                match = SeriesMatch(
                    study_uid=study.uid,
                    series_uid=series.uid,
                    modality=series.modality,
                    description=series.description,
                    protocol_name=series.protocol,
                    series_number=None,
                    instance_count=len(series.instances),
                )
                if match.matches(query):
                    result.append(match)
        return result

    def move(
        self,
        target: RetrieveTarget,
        *,
        destination: str,
        job_id: int | None = None,
        should_cancel: ShouldCancel | None = None,
        on_progress: OnProgress | None = None,
    ) -> RetrieveResult:
        if self.refuse:
            raise PacsRefused(f"the PACS does not know the move destination {destination!r}")

        def deliver(encoded: bytes) -> None:
            self.ingest.accept(encoded, source="c-store from PACS", job_id=job_id)

        return self._send(target, deliver, should_cancel, on_progress)

    def get(
        self,
        target: RetrieveTarget,
        *,
        store: StoreInstance,
        should_cancel: ShouldCancel | None = None,
        on_progress: OnProgress | None = None,
    ) -> RetrieveResult:
        return self._send(target, store, should_cancel, on_progress)

    def _connect(self) -> None:
        if self.unavailable:
            self.unavailable -= 1
            raise PacsUnavailable("PACS 'pacs' could not be reached")

    def _send(
        self,
        target: RetrieveTarget,
        store: StoreInstance,
        should_cancel: ShouldCancel | None,
        on_progress: OnProgress | None,
    ) -> RetrieveResult:
        self._connect()
        if self.crash_after is not None and len(self.retrievals) >= self.crash_after:
            raise Crash
        self.retrievals.append(target.study_uid)
        study = next(s for s in self.studies if s.uid == target.study_uid)
        chosen = [s for s in study.series if not target.series_uids or s.uid in target.series_uids]
        instances = [(s, sop) for s in chosen for sop in s.instances]
        fail = 0
        if self.failing.get(study.uid):
            self.failing[study.uid] -= 1
            fail = 1
        completed = failed = 0
        for index, (series, sop) in enumerate(instances):
            if index < fail:
                failed += 1
                continue
            store(encode(study, series, sop))
            completed += 1
            if index == 0 and self.during is not None:
                self.during()
            if on_progress is not None:
                on_progress(Progress(len(instances) - index - 1, completed, failed, 0))
            if should_cancel is not None and should_cancel():
                self.cancels += 1
                return RetrieveResult(0xFE00, completed, failed, 0, len(instances), True)
        while self.block:
            if should_cancel is not None and should_cancel():
                self.cancels += 1
                return RetrieveResult(0xFE00, completed, failed, 0, len(instances), True)
            time.sleep(0.01)
        status = 0xB000 if failed else 0x0000
        return RetrieveResult(status, completed, failed, 0, len(instances))


def encode(study: FakeStudy, series: FakeSeries, sop: str) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = UID(sop)
    ds.PatientID = study.patient_id
    ds.AccessionNumber = study.accession
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.Modality = series.modality
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class FakeIngest:
    """Stage 1 in miniature: pseudonymized rows, files and correspondence, or a rejection."""

    def __init__(self, settings: NodeSettings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.mapper = Pseudonymizer(settings.secret(), settings.site_project, "PS")
        self.keyring = settings.keyring()
        self.accepted: list[tuple[str, int | None]] = []
        self.drained = 0
        self.lock = threading.Lock()

    def accept(self, encoded: bytes, *, source: str, job_id: int | None = None) -> None:
        ds = dcmread(io.BytesIO(encoded))
        with self.lock, transaction(self.sessions) as session:
            self.accepted.append((source, job_id))
            if ds.Modality == "US":
                session.add(
                    RejectedInstance(
                        source=source,
                        modality="US",
                        code="burned-in-risk",
                        reason="modality US may carry burned-in text",
                        job_id=job_id,
                    )
                )
                return
            self._store(session, ds)

    def _store(self, session: Session, ds: Dataset) -> None:
        subject = self.mapper.subject_key(ds.PatientID)
        patient = session.execute(
            select(Patient).where(Patient.subject_key == subject)
        ).scalar_one_or_none() or Patient(subject_key=subject)
        session.add(patient)
        study_uid = self.mapper.uid(ds.StudyInstanceUID)
        study = session.execute(
            select(Study).where(Study.study_uid == study_uid)
        ).scalar_one_or_none() or Study(study_uid=study_uid, patient=patient)
        session.add(study)
        series_uid = self.mapper.uid(ds.SeriesInstanceUID)
        series = session.execute(
            select(Series).where(Series.series_uid == series_uid)
        ).scalar_one_or_none() or Series(series_uid=series_uid, study=study, modality=ds.Modality)
        sop_uid = self.mapper.uid(ds.SOPInstanceUID)
        session.add(series)
        if session.execute(select(Instance).where(Instance.sop_uid == sop_uid)).first():
            return
        path = f"store/{subject}/{sop_uid}.dcm"
        file = self.settings.data_dir / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"pseudonymized")
        session.add(
            Instance(
                sop_uid=sop_uid,
                series=series,
                sop_class_uid=str(ds.SOPClassUID),
                path=path,
                size=13,
                sha256="0" * 64,
                transfer_syntax_uid=ExplicitVRLittleEndian,
            )
        )
        for kind, original, pseudonym in (
            ("patient", ds.PatientID, subject),
            ("study", ds.StudyInstanceUID, study_uid),
        ):
            correspondence.record(
                session=session,
                keyring=self.keyring,
                kind=kind,
                original=str(original),
                pseudonym=pseudonym,
            )

    def drain(self, timeout: float, *, job_id: int | None = None) -> bool:
        assert job_id is not None  # a job waits for its own arrivals only
        self.drained += 1
        return True


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(
        data_dir=tmp_path / "node",
        site_secret=SecretStr(SECRET.decode()),
        correspondence_key=SecretStr(new_key()),
        ae_title="HAVENET",
        pacs=[Pacs(name="pacs", ae_title="PACS", host="127.0.0.1", port=11999)],
    )


@pytest.fixture
def sessions(settings: NodeSettings) -> Iterator[sessionmaker[Session]]:
    settings.data_dir.mkdir(parents=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture
def ingest(settings: NodeSettings, sessions: sessionmaker[Session]) -> FakeIngest:
    return FakeIngest(settings, sessions)


@pytest.fixture
def pacs(ingest: FakeIngest) -> FakePacs:
    return FakePacs(
        studies=[
            fake_study(1, patient_id="MRN-ALPHA-1001"),
            fake_study(2, patient_id="MRN-ALPHA-1001", date="20240301"),
            fake_study(3, patient_id="MRN-BRAVO-2002", modalities=("MR", "US")),
        ],
        ingest=ingest,
    )


RunnerFactory = Callable[..., Runner]


@pytest.fixture
def make_runner(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    ingest: FakeIngest,
    pacs: FakePacs,
) -> RunnerFactory:
    def build(
        client: PacsOperations | None = None,
        retry: RetryPolicy | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Runner:
        chosen = client or pacs
        return Runner(
            settings=settings,
            sessions=sessions,
            ingest=ingest,
            clients=lambda _pacs: chosen,
            retry=retry,
            should_stop=should_stop,
            clock=lambda: NOW,
            poll_seconds=0.0,
        )

    return build


def queue_retrieve(
    sessions: sessionmaker[Session], settings: NodeSettings, **criteria: object
) -> int:
    with transaction(sessions) as session:
        job = service.create_retrieve(
            session=session,
            keyring=settings.keyring(),
            request=RetrieveCreate(**criteria),  # type: ignore[arg-type]
            actor="test",
        )
        return job.id


def job_view(sessions: sessionmaker[Session], job_id: int) -> dict[str, object]:
    with transaction(sessions) as session:
        return service.describe(service.get(session=session, job_id=job_id))


def load(sessions: sessionmaker[Session], job_id: int) -> Job:
    with transaction(sessions) as session:
        return service.get(session=session, job_id=job_id)


def stored_count(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as session:
        return int(session.execute(select(func.count(Instance.id))).scalar_one())


IDENTIFIERS = ("MRN-ALPHA-1001", "MRN-BRAVO-2002", "ACC00001", "ACC00002", "ACC00003", ROOT)


# -- the spec and its encryption ----------------------------------------------------------


def test_identifiers_of_a_retrieval_are_stored_only_encrypted(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    job_id = queue_retrieve(
        sessions,
        settings,
        patient_ids=("MRN-ALPHA-1001",),
        accession_numbers=("ACC00003",),
        modality="mr",
    )
    job = load(sessions, job_id)
    plain = json.dumps(job.spec)
    assert job.spec_ciphertext is not None
    for identifier in ("MRN-ALPHA-1001", "ACC00003"):
        assert identifier not in plain
        assert identifier.encode() not in job.spec_ciphertext
    assert job.spec["modality"] == "MR"
    assert job.spec["patient_ids"] == 1
    chosen = service.selection(job=job, keyring=settings.keyring())
    assert chosen.patient_ids == ("MRN-ALPHA-1001",)
    assert chosen.accession_numbers == ("ACC00003",)


def test_the_selection_does_not_decrypt_under_another_key(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    job_id = queue_retrieve(sessions, settings, patient_ids=("MRN-ALPHA-1001",))
    other = NodeSettings(correspondence_key=SecretStr(new_key())).keyring()
    with pytest.raises(SpecUnreadable, match=f"job {job_id}"):
        service.selection(job=load(sessions, job_id), keyring=other)


def test_a_retrieval_without_any_criterion_is_refused() -> None:
    with pytest.raises(InvalidSelection, match="at least one criterion"):
        RetrieveCreate(patient_ids=("  ",))


def test_an_accession_number_too_long_for_dicom_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidSelection) as caught:
        RetrieveCreate(accession_numbers=("OK1", "X" * 17))
    assert "accession number number 2" in str(caught.value)
    assert "XXXX" not in str(caught.value)


def test_a_date_range_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(InvalidSelection, match="date-from is after date-to"):
        RetrieveCreate(date_from=dt.date(2024, 2, 1), date_to=dt.date(2024, 1, 1))


def test_creating_a_job_is_audited_without_identifiers(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    queue_retrieve(sessions, settings, patient_ids=("MRN-ALPHA-1001",), modality="MR")
    with transaction(sessions) as session:
        record = session.execute(select(AuditRecord)).scalar_one()
    assert record.action == "job.retrieve"
    assert record.actor == "test"
    assert "MRN-ALPHA-1001" not in record.details
    assert json.loads(record.details)["patient_ids"] == 1


# -- CSV input ----------------------------------------------------------------------------


def test_a_csv_column_of_accession_numbers_becomes_the_selection(tmp_path: Path) -> None:
    path = tmp_path / "selection.csv"
    path.write_text(
        "\ufeffPatient;Accession Number;Protocol\n"
        "x;ACC1;dementia\n"
        "\n"
        "y;ACC2;ms\n"
        "x;ACC1;dementia\n"
        "z;;open\n",
        encoding="utf-8",
    )
    assert service.identifiers_from_csv(path, IdentifierKind.ACCESSION) == ["ACC1", "ACC2"]


def test_a_csv_without_the_column_names_the_file_and_the_accepted_headers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "selection.csv"
    path.write_text("name,code\nMRN-ALPHA-1001,1\n")
    with pytest.raises(InvalidSelection, match=r"selection.csv: line 1: no patient_id column"):
        service.identifiers_from_csv(path, IdentifierKind.PATIENT_ID)


def test_a_bad_csv_value_names_its_line_but_not_the_value(tmp_path: Path) -> None:
    path = tmp_path / "selection.csv"
    path.write_text("mrn\nMRN-ALPHA-1001\nMRN\\WITH-BACKSLASH\n")
    with pytest.raises(InvalidSelection) as caught:
        service.identifiers_from_csv(path, "patient_id")
    assert "line 3" in str(caught.value)
    assert "BACKSLASH" not in str(caught.value)


# -- cancelling and restarting ------------------------------------------------------------


def test_cancelling_a_queued_job_stops_it_at_once(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="MR")
    with transaction(sessions) as session:
        service.cancel(session=session, job_id=job_id, actor="test")
    assert load(sessions, job_id).status == JobStatus.CANCELLED


def test_cancelling_a_finished_job_is_refused(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="MR")
    with transaction(sessions) as session:
        service.get(session=session, job_id=job_id).status = JobStatus.DONE
    with pytest.raises(JobFinished, match="already ended"), transaction(sessions) as session:
        service.cancel(session=session, job_id=job_id, actor="test")


def test_asking_for_a_job_that_does_not_exist_says_so(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(JobNotFound, match="no job 42"), transaction(sessions) as session:
        service.get(session=session, job_id=42)


def test_jobs_left_running_by_a_dead_node_go_back_to_the_queue(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="MR")
    with transaction(sessions) as session:
        assert service.claim(session=session, job_id=job_id, now=NOW)
    with transaction(sessions) as session:
        assert service.requeue_interrupted(session=session) == 1
    job = load(sessions, job_id)
    assert job.status == JobStatus.QUEUED
    assert job.attempts == 1


# -- retrieval ----------------------------------------------------------------------------


def test_a_retrieval_by_c_move_reports_found_retrieved_stored_and_rejected(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    ingest: FakeIngest,
    make_runner: RunnerFactory,
) -> None:
    job_id = queue_retrieve(
        sessions, settings, patient_ids=("MRN-ALPHA-1001", "MRN-BRAVO-2002"), method=Method.MOVE
    )
    assert make_runner().run(job_id) == JobStatus.DONE
    view = job_view(sessions, job_id)
    assert (view["found"], view["retrieved"], view["stored"], view["rejected"]) == (8, 8, 6, 2)
    assert (view["total"], view["done_items"]) == (3, 3)
    report = view["report"]
    assert isinstance(report, dict)
    assert report["rejected"] == [
        {"code": "burned-in-risk", "reason": "modality US may carry burned-in text", "count": 2}
    ]
    assert report["summary"]["storage_rate"] == 0.75
    assert {source for source, _ in ingest.accepted} == {"c-store from PACS"}
    assert {job for _, job in ingest.accepted} == {job_id}


def test_a_retrieval_by_c_get_hands_each_instance_to_the_ingest_with_the_job_id(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    ingest: FakeIngest,
    make_runner: RunnerFactory,
) -> None:
    job_id = queue_retrieve(sessions, settings, accession_numbers=("ACC00002",), method="get")
    assert make_runner().run(job_id) == JobStatus.DONE
    assert ingest.accepted == [(f"c-get job {job_id}", job_id)] * 2
    assert job_view(sessions, job_id)["stored"] == 2


def test_a_query_by_date_range_fetches_only_the_studies_in_it(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    job_id = queue_retrieve(
        sessions, settings, date_from=dt.date(2024, 2, 1), date_to=dt.date(2024, 12, 31)
    )
    make_runner().run(job_id)
    assert pacs.retrievals == [f"{ROOT}.2"]


def test_a_protocol_filter_fetches_only_the_matching_series(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    pacs.studies.append(fake_study(4, patient_id="MRN-C", protocol="MS PROTOCOL"))
    job_id = queue_retrieve(sessions, settings, protocol_name="*dementia*")
    make_runner().run(job_id)
    assert sorted(pacs.retrievals) == [f"{ROOT}.1", f"{ROOT}.2", f"{ROOT}.3"]
    view = job_view(sessions, job_id)
    assert (view["found"], view["stored"], view["rejected"]) == (6, 6, 0)


def test_a_modality_filter_narrows_a_mixed_study_to_that_modality(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    make_runner: RunnerFactory,
) -> None:
    job_id = queue_retrieve(sessions, settings, patient_ids=("MRN-BRAVO-2002",), modality="MR")
    make_runner().run(job_id)
    view = job_view(sessions, job_id)
    assert (view["found"], view["stored"], view["rejected"]) == (2, 2, 0)


def test_identifiers_the_pacs_does_not_know_are_counted_not_named(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    make_runner: RunnerFactory,
) -> None:
    job_id = queue_retrieve(
        sessions, settings, patient_ids=("MRN-ALPHA-1001", "MRN-NOBODY"), accession_numbers=("X",)
    )
    make_runner().run(job_id)
    report = job_view(sessions, job_id)["report"]
    assert isinstance(report, dict)
    assert report["unmatched"] == {"patient_ids": 1, "accession_numbers": 1}
    assert "MRN-NOBODY" not in json.dumps(report)


def test_nothing_matching_ends_the_job_done_with_nothing_found(
    settings: NodeSettings, sessions: sessionmaker[Session], make_runner: RunnerFactory
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="CT")
    assert make_runner().run(job_id) == JobStatus.DONE
    assert job_view(sessions, job_id)["total"] == 0


def test_a_job_report_and_the_logs_hold_no_identifier(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    make_runner: RunnerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    job_id = queue_retrieve(sessions, settings, patient_ids=("MRN-ALPHA-1001", "MRN-BRAVO-2002"))
    make_runner().run(job_id)
    view = json.dumps(job_view(sessions, job_id))
    job = load(sessions, job_id)
    assert "selection" in job.report  # kept, encrypted, for resumption
    for identifier in IDENTIFIERS:
        assert identifier not in view
        assert identifier not in json.dumps(job.report)
        assert identifier not in caplog.text


def test_a_pacs_that_cannot_be_reached_makes_the_job_wait_with_growing_pauses(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    pacs.unavailable = 2
    job_id = queue_retrieve(sessions, settings, modality="MR")
    runner = make_runner(retry=RetryPolicy(first_delay=dt.timedelta(seconds=30)))
    pauses = []
    for _ in range(2):
        assert runner.run(job_id) == JobStatus.RETRYING
        job = load(sessions, job_id)
        assert job.next_attempt_at is not None
        pauses.append(job.next_attempt_at.replace(tzinfo=dt.UTC) - NOW)
        assert "could not be reached" in job.error
    assert pauses == [dt.timedelta(seconds=30), dt.timedelta(seconds=60)]
    assert runner.run(job_id) == JobStatus.DONE
    assert load(sessions, job_id).stored == 6


def test_a_job_waiting_for_its_back_off_is_not_picked_before_its_time(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    pacs.unavailable = 1
    job_id = queue_retrieve(sessions, settings, modality="MR")
    runner = make_runner()
    assert runner.run_due() == 1
    assert runner.run_due() == 0  # next attempt is 30 s after NOW
    assert load(sessions, job_id).status == JobStatus.RETRYING


def test_a_job_fails_once_its_attempts_are_used_up(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    pacs.unavailable = 10
    job_id = queue_retrieve(sessions, settings, modality="MR")
    runner = make_runner(retry=RetryPolicy(max_attempts=3))
    statuses = [runner.run(job_id) for _ in range(3)]
    assert statuses == [JobStatus.RETRYING, JobStatus.RETRYING, JobStatus.FAILED]
    assert "gave up after 3 attempts" in load(sessions, job_id).error


def test_failed_sub_operations_fetch_that_study_again_on_the_next_attempt(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    pacs.failing[f"{ROOT}.2"] = 1
    job_id = queue_retrieve(sessions, settings, patient_ids=("MRN-ALPHA-1001",))
    runner = make_runner()
    assert runner.run(job_id) == JobStatus.RETRYING
    report = job_view(sessions, job_id)["report"]
    states = [entry["state"] for entry in report["studies"].values()]  # type: ignore[index]
    assert states == [StudyState.RETRIEVED.value, StudyState.INCOMPLETE.value]
    assert runner.run(job_id) == JobStatus.DONE
    assert pacs.retrievals == [f"{ROOT}.1", f"{ROOT}.2", f"{ROOT}.2"]
    view = job_view(sessions, job_id)
    assert (view["found"], view["retrieved"], view["stored"]) == (4, 4, 4)


def test_a_study_still_incomplete_after_the_last_attempt_is_reported_as_such(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    pacs.failing[f"{ROOT}.2"] = 5
    job_id = queue_retrieve(sessions, settings, patient_ids=("MRN-ALPHA-1001",))
    runner = make_runner(retry=RetryPolicy(max_attempts=2))
    runner.run(job_id)
    assert runner.run(job_id) == JobStatus.DONE
    job = load(sessions, job_id)
    assert "1 studies incomplete after 2 attempts" in job.error
    assert job.report["summary"]["studies_retrieved"] == 1  # type: ignore[index]


def test_each_study_s_progress_is_a_row_of_its_own_not_part_of_the_job_s_report(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="MR")
    assert make_runner().run(job_id) == JobStatus.DONE
    assert "studies" not in load(sessions, job_id).report  # recording a study rewrites no list
    with transaction(sessions) as session:
        rows = service.job_studies(session=session, job_id=job_id)
        assert [(r.position, r.state, r.retrieved) for r in rows] == [
            (0, StudyState.RETRIEVED.value, 2),
            (1, StudyState.RETRIEVED.value, 2),
            (2, StudyState.RETRIEVED.value, 2),
        ]
    studies = job_view(sessions, job_id)["report"]["studies"]  # type: ignore[index]
    assert [e["stored"] for e in studies.values()] == [2, 2, 2]


def test_the_progress_of_jobs_planned_before_the_upgrade_moves_into_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0005")
    entry = {"state": "incomplete", "found": 3, "series": None, "retrieved": 2, "failed": 1}
    entry |= {"stored": 2, "attempts": 1, "error": "1 of 3 sub-operations failed"}
    report = {"selection": "x", "studies": {"2.25.7": entry, "2.25.8": {"state": "pending"}}}
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sql(
                "INSERT INTO job (id, kind, status, spec, attempts, found, retrieved, stored, "
                "rejected, total, done_items, report, error, created_at, updated_at) VALUES "
                "(1, 'retrieve', 'retrying', '{}', 1, 3, 2, 2, 0, 2, 0, :report, '', "
                "'2026-11-01', '2026-11-01')"
            ),
            {"report": json.dumps(report)},
        )
    command.upgrade(config, "head")
    with transaction(make_sessionmaker(engine)) as session:
        job = service.get(session=session, job_id=1)
        assert "studies" not in job.report and job.report["selection"] == "x"
        view = service.describe(job)
    engine.dispose()
    studies = view["report"]["studies"]
    assert list(studies) == ["2.25.7", "2.25.8"]
    assert studies["2.25.7"] == entry
    assert studies["2.25.8"]["state"] == "pending" and studies["2.25.8"]["retrieved"] == 0


def test_a_crashed_job_resumes_without_fetching_its_studies_again(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    pacs.crash_after = 2
    job_id = queue_retrieve(sessions, settings, modality="MR")
    with pytest.raises(Crash):
        make_runner().run(job_id)
    assert load(sessions, job_id).status == JobStatus.RUNNING
    with transaction(sessions) as session:
        service.requeue_interrupted(session=session)
    pacs.crash_after = None
    assert make_runner().run(job_id) == JobStatus.DONE
    assert pacs.retrievals == [f"{ROOT}.1", f"{ROOT}.2", f"{ROOT}.3"]
    view = job_view(sessions, job_id)
    # study 3 holds MR and US series: the modality filter fetched its MR series only
    assert (view["found"], view["retrieved"], view["stored"], view["done_items"]) == (6, 6, 6, 3)


def test_cancelling_a_running_job_cancels_the_retrieval_and_it_stays_cancelled(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="MR")

    def cancel() -> None:
        with transaction(sessions) as session:
            service.cancel(session=session, job_id=job_id, actor="test")

    pacs.during = cancel
    assert make_runner().run(job_id) == JobStatus.CANCELLED
    assert pacs.cancels == 1
    assert pacs.retrievals == [f"{ROOT}.1"]


def test_a_node_stopping_puts_the_running_job_back_in_the_queue_without_using_an_attempt(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    stopping = threading.Event()
    pacs.during = stopping.set
    job_id = queue_retrieve(sessions, settings, modality="MR")
    assert make_runner(should_stop=stopping.is_set).run(job_id) == JobStatus.QUEUED
    job = load(sessions, job_id)
    assert job.attempts == 0
    assert pacs.cancels == 1


def test_a_pacs_refusing_the_move_destination_fails_the_job_at_once(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    pacs.refuse = True
    job_id = queue_retrieve(sessions, settings, modality="MR")
    assert make_runner().run(job_id) == JobStatus.FAILED
    assert "move destination 'HAVENET'" in load(sessions, job_id).error


def test_a_job_naming_an_unknown_pacs_fails_with_the_names_configured(
    settings: NodeSettings, sessions: sessionmaker[Session], make_runner: RunnerFactory
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="MR", pacs="elsewhere")
    assert make_runner().run(job_id) == JobStatus.FAILED
    assert "configured: pacs" in load(sessions, job_id).error


def test_the_runner_predicts_the_study_uid_stage_1_gives(settings: NodeSettings) -> None:
    done = stage1().deidentify(ct_dataset(study_uid=f"{ROOT}.77"))
    assert stage1_uid_mapper(settings)(f"{ROOT}.77") == done.report.study_instance_uid


# -- clean-up and restore -----------------------------------------------------------------


def subject_key(settings: NodeSettings, patient_id: str) -> str:
    return Pseudonymizer(settings.secret(), settings.site_project, "PS").subject_key(patient_id)


def fetch_everything(
    sessions: sessionmaker[Session], settings: NodeSettings, runner: Runner
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="MR")
    assert runner.run(job_id) == JobStatus.DONE


def store_snapshot(sessions: sessionmaker[Session]) -> set[tuple[str, str, str, str]]:
    with transaction(sessions) as session:
        rows = session.execute(
            select(Patient.subject_key, Study.study_uid, Series.series_uid, Instance.sop_uid)
            .join(Study, Study.patient_id == Patient.id)
            .join(Series, Series.study_id == Study.id)
            .join(Instance, Instance.series_id == Series.id)
        )
        return {(a, b, c, d) for a, b, c, d in rows}


def test_a_clean_up_removes_the_subjects_rows_and_files_but_keeps_the_correspondence(
    settings: NodeSettings, sessions: sessionmaker[Session], make_runner: RunnerFactory
) -> None:
    runner = make_runner()
    fetch_everything(sessions, settings, runner)
    alpha = subject_key(settings, "MRN-ALPHA-1001")
    with transaction(sessions) as session:
        session.add(Person(subject_key=alpha, sex="F", birth_year=1950))
        session.add(Condition(subject_key=alpha, system="s", code="G30.1", source="fhir:c/1"))
        session.add(Condition(subject_key="PSSOMEONE", system="s", code="G30.1", source="x/2"))
    with transaction(sessions) as session:
        rows = correspondence_rows(session)
        job_id = service.create_delete(
            session=session, subject_keys=[alpha, "PSNOSUCHKEY"], actor="test", project="p1"
        ).id
    assert runner.run(job_id) == JobStatus.DONE
    assert stored_count(sessions) == 2
    assert not (settings.data_dir / "store" / alpha).exists()
    with transaction(sessions) as session:
        assert correspondence_rows(session) == rows
        actions = session.execute(select(AuditRecord.action, AuditRecord.subject)).all()
    assert ("store.delete", alpha) in actions
    subjects = load(sessions, job_id).report["subjects"]
    assert subjects[alpha]["state"] == "deleted"  # type: ignore[index]
    assert subjects[alpha]["instances"] == 4  # type: ignore[index]
    assert subjects[alpha]["clinical_rows"] == 2  # type: ignore[index]  # the record goes too
    assert subjects["PSNOSUCHKEY"]["state"] == "not_found"  # type: ignore[index]
    with transaction(sessions) as session:
        left = session.execute(select(Condition.subject_key)).scalars().all()
    assert left == ["PSSOMEONE"]


def correspondence_rows(session: Session) -> int:
    return int(session.execute(select(func.count(Correspondence.id))).scalar_one())


def test_a_restore_fetches_what_a_clean_up_removed_with_the_same_pseudonyms_and_uids(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    runner = make_runner()
    fetch_everything(sessions, settings, runner)
    before = store_snapshot(sessions)
    alpha = subject_key(settings, "MRN-ALPHA-1001")
    with transaction(sessions) as session:
        delete_id = service.create_delete(session=session, subject_keys=[alpha], actor="t").id
    runner.run(delete_id)
    assert store_snapshot(sessions) != before
    pacs.retrievals.clear()
    with transaction(sessions) as session:
        restore_id = service.create_restore(session=session, actor="t", restore_of=delete_id).id
    assert runner.run(restore_id) == JobStatus.DONE
    assert store_snapshot(sessions) == before
    assert sorted(pacs.retrievals) == [f"{ROOT}.1", f"{ROOT}.2"]
    assert load(sessions, restore_id).stored == 4
    with transaction(sessions) as session:
        looked_up = session.execute(
            select(AuditRecord.actor, AuditRecord.subject).where(AuditRecord.action == "reidentify")
        ).all()
    assert looked_up == [(f"job {restore_id}", alpha)]  # each re-identification is audited


def test_a_restore_of_chosen_study_uids_fetches_only_those(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    pacs: FakePacs,
    make_runner: RunnerFactory,
) -> None:
    runner = make_runner()
    fetch_everything(sessions, settings, runner)
    mapper = Pseudonymizer(settings.secret(), settings.site_project)
    wanted = mapper.uid(f"{ROOT}.2")
    alpha = subject_key(settings, "MRN-ALPHA-1001")
    with transaction(sessions) as session:
        delete_id = service.create_delete(session=session, subject_keys=[alpha], actor="t").id
    runner.run(delete_id)
    pacs.retrievals.clear()
    with transaction(sessions) as session:
        restore_id = service.create_restore(session=session, actor="t", study_uids=[wanted]).id
    assert runner.run(restore_id) == JobStatus.DONE
    assert pacs.retrievals == [f"{ROOT}.2"]
    with transaction(sessions) as session:
        assert session.execute(select(Study.study_uid)).scalars().all().count(wanted) == 1


def test_a_restore_reports_subjects_unknown_to_the_correspondence_table(
    settings: NodeSettings, sessions: sessionmaker[Session], make_runner: RunnerFactory
) -> None:
    with transaction(sessions) as session:
        job_id = service.create_restore(session=session, actor="t", subject_keys=["PSUNKNOWN1"]).id
    assert make_runner().run(job_id) == JobStatus.DONE
    report = load(sessions, job_id).report
    assert report["unresolved_subjects"] == ["PSUNKNOWN1"]


def test_a_restore_can_only_follow_a_clean_up_job(
    settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="MR")
    with pytest.raises(InvalidSelection, match="not a clean-up"), transaction(sessions) as s:
        service.create_restore(session=s, actor="t", restore_of=job_id)


# -- the scheduler ------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_registering_queues_interrupted_jobs_again_and_schedules_the_picker(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    ingest: FakeIngest,
) -> None:
    job_id = queue_retrieve(sessions, settings, modality="MR")
    with transaction(sessions) as session:
        service.claim(session=session, job_id=job_id, now=NOW)
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    scheduled.register(scheduler, settings, sessions, ingest)
    assert load(sessions, job_id).status == JobStatus.QUEUED
    assert scheduler.get_job(scheduled.JOB_ID) is not None


def test_the_scheduler_runs_due_jobs(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    ingest: FakeIngest,
    pacs: FakePacs,
) -> None:
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    scheduled.register(
        scheduler, settings, sessions, ingest, interval_seconds=0.1, clients=lambda _p: pacs
    )
    scheduler.start()
    try:
        job_id = queue_retrieve(sessions, settings, modality="MR")
        wait_until(lambda: load(sessions, job_id).status == JobStatus.DONE)
    finally:
        scheduler.shutdown(wait=True)
    assert load(sessions, job_id).stored == 6


def test_shutting_the_scheduler_down_interrupts_a_long_retrieval_promptly(
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    ingest: FakeIngest,
    pacs: FakePacs,
) -> None:
    pacs.block = True
    job_id = queue_retrieve(sessions, settings, modality="MR")
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    scheduled.register(
        scheduler, settings, sessions, ingest, interval_seconds=0.1, clients=lambda _p: pacs
    )
    scheduler.start()
    wait_until(lambda: len(pacs.retrievals) == 1)
    started = time.monotonic()
    scheduler.shutdown(wait=True)
    assert time.monotonic() - started < 5.0
    job = load(sessions, job_id)
    assert (job.status, job.attempts, pacs.cancels) == (JobStatus.QUEUED, 0, 1)


# -- the PACS client's pure parts ---------------------------------------------------------


def test_dicom_wildcards_match_without_regard_to_case() -> None:
    assert wildcard_match("*brain*", "MR BRAIN W/O")
    assert wildcard_match("MR?BRAIN", "mr brain")
    assert not wildcard_match("*spine*", "MR BRAIN")
    assert wildcard_match("[x]*", "[X] BRAIN")


def test_a_study_query_sends_an_open_ended_date_range() -> None:
    query = StudyQuery(date_from=parse_date("2024-01-05", name="--date-from"))
    assert query.date_range == "20240105-"
    assert query.identifier().StudyDate == "20240105-"


def test_a_wrong_date_names_the_option_and_the_format() -> None:
    with pytest.raises(ValueError, match="--date-to: expected a date as YYYYMMDD"):
        parse_date("05/01/2024", name="--date-to")


def test_answers_are_checked_again_against_optional_keys_a_pacs_may_ignore() -> None:
    match = fake_study(1, patient_id="P", modalities=("CT",)).match()
    assert not match.matches(StudyQuery(modality="MR"))
    assert not match.matches(StudyQuery(study_description="*SPINE*"))
    assert not match.matches(StudyQuery(date_from=dt.date(2025, 1, 1)))
    assert match.matches(StudyQuery(modality="ct", study_description="mr*"))


def test_matches_keep_identifiers_out_of_their_repr() -> None:
    match = fake_study(1, patient_id="MRN-ALPHA-1001").match()
    query = StudyQuery(patient_id="MRN-ALPHA-1001", accession_number="ACC00001")
    for text in (repr(match), repr(query), repr(RetrieveTarget(f"{ROOT}.1", (f"{ROOT}.1.1",)))):
        assert "MRN-ALPHA-1001" not in text
        assert "ACC00001" not in text
        assert ROOT not in text
    assert "MRN" not in repr(RetrieveCreate(patient_ids=("MRN-ALPHA-1001",)))


def test_move_originators_map_a_c_move_message_back_to_its_job() -> None:
    moves = MoveOriginators()
    message_id = moves.next_message_id()
    assert 1 <= message_id <= 65535
    with moves.registered("HAVENET", message_id, 7):
        assert moves.job_for("HAVENET ", message_id) == 7
        assert moves.job_for("OTHER", message_id) is None
        assert moves.job_for(None, None) is None
    assert moves.job_for("HAVENET", message_id) is None


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def config_file(settings: NodeSettings, tmp_path: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(settings.data_dir),
                "site_secret": SECRET.decode(),
                "correspondence_key": settings.correspondence_key.get_secret_value(),
                "ae_title": "HAVENET",
                "pacs": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 11999}],
            }
        )
    )
    return path


def test_the_cli_queues_a_retrieval_from_a_csv_of_accession_numbers(
    config_file: Path, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    csv_file = tmp_path / "acc.csv"
    csv_file.write_text("AccessionNumber\nACC00001\nACC00002\n")
    result = CliRunner().invoke(
        cli.pacs_app,
        ["retrieve", "--config", str(config_file), "--csv", str(csv_file), "--method", "get"],
    )
    assert result.exit_code == 0, result.output
    assert "queued as job 1" in result.output
    job = load(sessions, 1)
    assert (job.kind, job.spec["method"], job.spec["accession_numbers"]) == ("retrieve", "get", 2)


def test_the_cli_names_the_csv_line_that_is_wrong(config_file: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "ids.csv"
    csv_file.write_text("patient_id\nMRN-1\n" + "X" * 65 + "\n")
    result = CliRunner().invoke(
        cli.pacs_app,
        [
            "retrieve",
            "--config",
            str(config_file),
            "--csv",
            str(csv_file),
            "--column",
            "patient_id",
        ],
    )
    assert result.exit_code == 1
    assert "ids.csv: line 3" in result.output
    assert "XXXX" not in result.output


def test_the_cli_find_hides_identifiers_unless_asked(
    config_file: Path, pacs: FakePacs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "PacsClient", lambda *_args, **_kwargs: pacs)
    args = ["find", "--config", str(config_file), "--modality", "MR"]
    hidden = CliRunner().invoke(cli.pacs_app, args)
    assert hidden.exit_code == 0, hidden.output
    assert "3 studies of 2 patients, 8 instances" in hidden.output
    assert "MRN-ALPHA-1001" not in hidden.output
    shown = CliRunner().invoke(cli.pacs_app, [*args, "--show-identifiers", "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)
    assert {row["patient_id"] for row in rows} == {"MRN-ALPHA-1001", "MRN-BRAVO-2002"}


def test_the_cli_find_lists_series_matching_a_protocol(
    config_file: Path, pacs: FakePacs, monkeypatch: pytest.MonkeyPatch
) -> None:
    pacs.studies.append(fake_study(4, patient_id="MRN-C", protocol="MS PROTOCOL"))
    monkeypatch.setattr(cli, "PacsClient", lambda *_args, **_kwargs: pacs)
    result = CliRunner().invoke(
        cli.pacs_app, ["find", "--config", str(config_file), "--protocol", "MS*", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 1
    assert rows[0]["instances"] == 2


def test_the_cli_lists_shows_and_cancels_jobs(
    config_file: Path, settings: NodeSettings, sessions: sessionmaker[Session]
) -> None:
    job_id = queue_retrieve(sessions, settings, patient_ids=("MRN-ALPHA-1001",), modality="MR")
    runner = CliRunner()
    listed = runner.invoke(cli.jobs_app, ["list", "--config", str(config_file), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [view["id"] for view in json.loads(listed.output)] == [job_id]
    shown = runner.invoke(cli.jobs_app, ["show", str(job_id), "--config", str(config_file)])
    assert shown.exit_code == 0, shown.output
    assert f"job {job_id} queued" in shown.output
    assert "MRN-ALPHA-1001" not in shown.output
    cancelled = runner.invoke(cli.jobs_app, ["cancel", str(job_id), "--config", str(config_file)])
    assert cancelled.exit_code == 0, cancelled.output
    again = runner.invoke(cli.jobs_app, ["cancel", str(job_id), "--config", str(config_file)])
    assert again.exit_code == 1
    assert "already ended (cancelled)" in again.output


def test_the_cli_queues_a_clean_up_and_a_restore_of_it(
    config_file: Path, sessions: sessionmaker[Session]
) -> None:
    runner = CliRunner()
    cleanup = runner.invoke(
        cli.pacs_app,
        ["cleanup", "--config", str(config_file), "--subject-key", "PSABC", "--project", "p1"],
    )
    assert cleanup.exit_code == 0, cleanup.output
    with transaction(sessions) as session:
        job = service.get(session=session, job_id=1)
        job.status = JobStatus.DONE
        job.report = {"subjects": {"PSABC": {"state": "deleted", "studies": ["2.25.1"]}}}
    restore = runner.invoke(
        cli.pacs_app, ["restore", "--config", str(config_file), "--from-job", "1"]
    )
    assert restore.exit_code == 0, restore.output
    spec = load(sessions, 2).spec
    assert (spec["kind"], spec["subject_keys"], spec["study_uids"]) == (
        JobKind.RESTORE.value,
        ["PSABC"],
        ["2.25.1"],
    )


def test_the_cli_follows_a_job_to_its_end_with_wait(
    config_file: Path,
    settings: NodeSettings,
    sessions: sessionmaker[Session],
    make_runner: RunnerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "POLL_SECONDS", 0.05)
    runner = make_runner()

    def node() -> None:  # the running node, picking the job up
        wait_until(lambda: runner.run_due() == 1)

    worker = threading.Thread(target=node)
    worker.start()
    result = CliRunner().invoke(
        cli.pacs_app,
        ["retrieve", "--config", str(config_file), "--accession", "ACC00001", "--wait"],
    )
    worker.join()
    assert result.exit_code == 0, result.output
    assert "job 1 done: 1/1 studies, 2 instances found, 2 retrieved, 2 stored, 0 rejected" in (
        result.output
    )
