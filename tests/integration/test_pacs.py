"""The PACS client and selection jobs against a real Orthanc: C-FIND at study and series
level, C-GET into the node, C-MOVE to a storage SCP, refusals and unreachable PACS.

Tests that need the node's own storage server and ingest (node.dicom.scp, node.ingest) skip
until those modules exist.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from node.dicom.scu import (
    MOVES,
    PacsClient,
    PacsUnavailable,
    RetrieveTarget,
    SeriesQuery,
    StudyQuery,
)
from node.jobs import service
from node.jobs.runner import RetryPolicy, Runner, stage1_uid_mapper
from node.jobs.service import Method, RetrieveCreate
from node.settings import NodeSettings, Pacs
from node.store.correspondence import new_key
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from node.store.models import Instance, JobStatus, Patient, Series, Study
from tests.conftest import SECRET, ct_dataset
from tests.integration.conftest import OrthancFactory
from tests.integration.peers import LOOPBACK, Orthanc, free_port
from tests.unit.node.test_jobs import FakeIngest

NODE_AE = "HAVENET"
ROOT = "1.2.826.0.1.3680043.10.544"
PATIENT_A = "MRN-INT-0001"
PATIENT_B = "MRN-INT-0002"

NODE_READY = all(
    importlib.util.find_spec(name) is not None for name in ("node.dicom.scp", "node.ingest.service")
)
needs_node = pytest.mark.skipif(
    not NODE_READY,
    reason="node.dicom.scp (StorageServer) and node.ingest.service (Ingest) are not written yet",
)


# -- a small hospital archive -------------------------------------------------------------


def instance(
    *,
    patient_id: str,
    study: int,
    series: int,
    number: int,
    modality: str,
    date: str,
    study_description: str,
    protocol: str = "",
) -> Dataset:
    study_uid = f"{ROOT}.{study}"
    series_uid = f"{study_uid}.{series}"
    ds = ct_dataset(
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=f"{series_uid}.{number}",
        study_date=date,
    )
    ds.AccessionNumber = f"ACC-INT-{study}"
    ds.StudyDescription = study_description
    ds.SeriesDescription = f"{modality} series {series}"
    ds.InstanceNumber = number
    ds.SeriesNumber = series
    if modality == "MR":
        ds.Modality = "MR"
        ds.SOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.ProtocolName = protocol
    else:
        assert ds.SOPClassUID == CTImageStorage
    return ds


ARCHIVE = [
    # (patient, study, series, instances, modality, date, study description, protocol)
    (PATIENT_A, 1, 1, 3, "MR", "20230415", "MR BRAIN", "DEMENTIA T1"),
    (PATIENT_A, 1, 2, 2, "MR", "20230415", "MR BRAIN", "DEMENTIA FLAIR"),
    (PATIENT_A, 2, 1, 2, "CT", "20210601", "CT HEAD", ""),
    (PATIENT_B, 3, 1, 2, "MR", "20240110", "MR BRAIN", "MS T2"),
]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("archive")
    for patient, study, series, count, modality, date, description, protocol in ARCHIVE:
        for number in range(1, count + 1):
            ds = instance(
                patient_id=patient,
                study=study,
                series=series,
                number=number,
                modality=modality,
                date=date,
                study_description=description,
                protocol=protocol,
            )
            ds.save_as(folder / f"{study}-{series}-{number}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture
def pacs(orthanc: Orthanc, archive: Path) -> Orthanc:
    orthanc.upload(archive)
    return orthanc


def client_for(orthanc: Orthanc, *, timeout: float = 10.0) -> PacsClient:
    target = Pacs(name="orthanc", ae_title=orthanc.aet, host=LOOPBACK, port=orthanc.dicom_port)
    return PacsClient(target, ae_title=NODE_AE, timeout=timeout, retrieve_timeout=30.0)


# -- C-FIND -------------------------------------------------------------------------------


def test_find_by_patient_id_returns_that_patients_studies_with_counts(pacs: Orthanc) -> None:
    studies = client_for(pacs).find_studies([StudyQuery(patient_id=PATIENT_A)])
    assert sorted((s.study_uid, s.instance_count, s.series_count) for s in studies) == [
        (f"{ROOT}.1", 5, 2),
        (f"{ROOT}.2", 2, 1),
    ]
    assert {s.patient_id for s in studies} == {PATIENT_A}


def test_find_by_accession_number(pacs: Orthanc) -> None:
    studies = client_for(pacs).find_studies([StudyQuery(accession_number="ACC-INT-3")])
    assert [s.study_uid for s in studies] == [f"{ROOT}.3"]


def test_find_by_modality_and_date_range(pacs: Orthanc) -> None:
    query = StudyQuery(modality="MR", date_from=dt.date(2023, 1, 1), date_to=dt.date(2023, 12, 31))
    studies = client_for(pacs).find_studies([query])
    assert [(s.study_uid, s.modalities) for s in studies] == [(f"{ROOT}.1", ("MR",))]


def test_find_by_study_description_wildcard(pacs: Orthanc) -> None:
    studies = client_for(pacs).find_studies([StudyQuery(study_description="*HEAD*")])
    assert [s.study_uid for s in studies] == [f"{ROOT}.2"]


def test_several_queries_share_one_association_and_each_study_comes_once(
    pacs: Orthanc,
) -> None:
    queries = [StudyQuery(patient_id=PATIENT_A), StudyQuery(modality="MR")]
    studies = client_for(pacs).find_studies(queries)
    assert sorted(s.study_uid for s in studies) == [f"{ROOT}.{n}" for n in (1, 2, 3)]


def test_find_series_by_protocol_name(pacs: Orthanc) -> None:
    series = client_for(pacs).find_series(
        [SeriesQuery(f"{ROOT}.1", protocol_name="*FLAIR*"), SeriesQuery(f"{ROOT}.3")]
    )
    assert sorted((s.series_uid, s.protocol_name, s.instance_count) for s in series) == [
        (f"{ROOT}.1.2", "DEMENTIA FLAIR", 2),
        (f"{ROOT}.3.1", "MS T2", 2),
    ]


def test_queries_leave_no_identifier_in_the_logs(
    pacs: Orthanc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client_for(pacs).find_studies([StudyQuery(patient_id=PATIENT_A)])
    assert caplog.records  # pynetdicom and the client did log
    assert PATIENT_A not in caplog.text
    assert "ACC-INT" not in caplog.text


# -- C-GET --------------------------------------------------------------------------------


def test_c_get_hands_every_instance_of_a_study_over_as_a_dicom_file(pacs: Orthanc) -> None:
    received: list[bytes] = []
    result = client_for(pacs).get(RetrieveTarget(f"{ROOT}.1"), store=received.append)
    assert result.ok
    assert (result.completed, result.failed, result.total) == (5, 0, 5)
    files = [dcmread(io.BytesIO(data)) for data in received]
    assert sorted(f.SOPInstanceUID for f in files) == sorted(
        f"{ROOT}.1.{series}.{n}" for series, count in ((1, 3), (2, 2)) for n in range(1, count + 1)
    )
    assert {f.PatientID for f in files} == {PATIENT_A}


def test_c_get_of_chosen_series_fetches_only_those(pacs: Orthanc) -> None:
    received: list[bytes] = []
    result = client_for(pacs).get(
        RetrieveTarget(f"{ROOT}.1", (f"{ROOT}.1.2",)), store=received.append
    )
    assert result.completed == 2
    assert {dcmread(io.BytesIO(d)).SeriesInstanceUID for d in received} == {f"{ROOT}.1.2"}


def test_an_instance_the_node_refuses_counts_as_a_failed_sub_operation(pacs: Orthanc) -> None:
    def refuse(_data: bytes) -> None:
        raise OSError("disk full")

    result = client_for(pacs).get(RetrieveTarget(f"{ROOT}.3"), store=refuse)
    assert not result.ok
    assert (result.completed, result.failed) == (0, 2)


def test_cancelling_a_c_get_ends_it_marked_cancelled(pacs: Orthanc) -> None:
    received: list[bytes] = []
    result = client_for(pacs).get(
        RetrieveTarget(f"{ROOT}.1"), store=received.append, should_cancel=lambda: True
    )
    assert result.cancelled
    assert not result.ok


# -- C-MOVE -------------------------------------------------------------------------------


class StorageScp:
    """A bare pynetdicom storage SCP that notes the job each C-STORE was moved for."""

    def __init__(self, ae_title: str) -> None:
        self.port = free_port()
        self.ae_title = ae_title
        self.received: list[tuple[str, int | None]] = []
        self.lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        self.server: ThreadedAssociationServer = ae.start_server(
            (LOOPBACK, self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self.handle_store)],
        )

    def handle_store(self, event: evt.Event) -> int:
        request = event.request
        job = MOVES.job_for(
            request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID
        )
        with self.lock:
            self.received.append((str(event.dataset.SOPInstanceUID), job))
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def storage_scp() -> Iterator[StorageScp]:
    scp = StorageScp(NODE_AE)
    try:
        yield scp
    finally:
        scp.stop()


def test_c_move_sends_the_study_to_the_node_marked_with_the_job_that_asked(
    orthanc_factory: OrthancFactory, archive: Path, storage_scp: StorageScp
) -> None:
    orthanc = orthanc_factory(modalities={"node": (NODE_AE, LOOPBACK, storage_scp.port)})
    orthanc.upload(archive)
    result = client_for(orthanc).move(RetrieveTarget(f"{ROOT}.3"), destination=NODE_AE, job_id=41)
    assert result.ok
    assert (result.completed, result.total) == (2, 2)
    assert sorted(storage_scp.received) == [(f"{ROOT}.3.1.1", 41), (f"{ROOT}.3.1.2", 41)]


def test_c_move_to_a_destination_orthanc_does_not_know_fails_before_sending_anything(
    pacs: Orthanc,
) -> None:
    result = client_for(pacs).move(RetrieveTarget(f"{ROOT}.3"), destination="NOBODY")
    assert not result.ok
    assert result.nothing_sent  # Orthanc says 0xC000, not 0xA801 (move destination unknown)


# pynetdicom 3.0.4 leaks the socket of a refused connection (AssociationSocket.connect calls
# shutdown() on an unconnected socket, which raises before close()): its ResourceWarning is
# pynetdicom's, not the client's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_pacs_that_cannot_be_reached_is_reported_as_unavailable() -> None:
    target = Pacs(name="down", ae_title="DOWN", host=LOOPBACK, port=free_port())
    client = PacsClient(target, ae_title=NODE_AE, timeout=2.0)
    with pytest.raises(PacsUnavailable, match="PACS 'down' could not be reached"):
        client.find_studies([StudyQuery(patient_id=PATIENT_A)])


def test_echo_reaches_orthanc(orthanc: Orthanc) -> None:
    client_for(orthanc).echo()


# -- jobs against Orthanc -----------------------------------------------------------------


@pytest.fixture
def node_settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(
        data_dir=tmp_path / "node",
        site_secret=SecretStr(SECRET.decode()),
        correspondence_key=SecretStr(new_key()),
        ae_title=NODE_AE,
        dicom_port=free_port(),
    )


@pytest.fixture
def node_sessions(node_settings: NodeSettings) -> Iterator[sessionmaker[Session]]:
    node_settings.data_dir.mkdir(parents=True)
    migrate(node_settings.database)
    engine = make_engine(node_settings.database)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def with_pacs(settings: NodeSettings, orthanc: Orthanc) -> NodeSettings:
    target = Pacs(name="orthanc", ae_title=orthanc.aet, host=LOOPBACK, port=orthanc.dicom_port)
    return settings.model_copy(update={"pacs": [target]})


def queue(sessions: sessionmaker[Session], settings: NodeSettings, request: RetrieveCreate) -> int:
    with transaction(sessions) as session:
        job = service.create_retrieve(
            session=session, keyring=settings.keyring(), request=request, actor="test"
        )
        return job.id


def test_a_c_get_job_against_orthanc_reports_found_retrieved_and_stored(
    pacs: Orthanc, node_settings: NodeSettings, node_sessions: sessionmaker[Session]
) -> None:
    settings = with_pacs(node_settings, pacs)
    ingest = FakeIngest(settings, node_sessions)
    job_id = queue(
        node_sessions,
        settings,
        RetrieveCreate(patient_ids=(PATIENT_A, "MRN-NOT-THERE"), method=Method.GET),
    )
    runner = Runner(settings=settings, sessions=node_sessions, ingest=ingest)
    assert runner.run(job_id) == JobStatus.DONE
    with transaction(node_sessions) as session:
        view = service.describe(service.get(session=session, job_id=job_id))
    assert (view["found"], view["retrieved"], view["stored"], view["rejected"]) == (7, 7, 7, 0)
    assert view["report"]["unmatched"] == {"patient_ids": 1, "accession_numbers": 0}
    assert set(ingest.accepted) == {(f"c-get job {job_id}", job_id)}


def test_a_protocol_job_against_orthanc_fetches_only_matching_series(
    pacs: Orthanc, node_settings: NodeSettings, node_sessions: sessionmaker[Session]
) -> None:
    settings = with_pacs(node_settings, pacs)
    ingest = FakeIngest(settings, node_sessions)
    request = RetrieveCreate(modality="MR", protocol_name="DEMENTIA*", method=Method.GET)
    job_id = queue(node_sessions, settings, request)
    runner = Runner(settings=settings, sessions=node_sessions, ingest=ingest)
    assert runner.run(job_id) == JobStatus.DONE
    with transaction(node_sessions) as session:
        job = service.get(session=session, job_id=job_id)
        assert (job.found, job.stored, job.total) == (5, 5, 1)


def test_a_c_move_job_to_a_pacs_that_does_not_know_the_node_fails_with_advice(
    pacs: Orthanc, node_settings: NodeSettings, node_sessions: sessionmaker[Session]
) -> None:
    settings = with_pacs(node_settings, pacs)
    job_id = queue(node_sessions, settings, RetrieveCreate(accession_numbers=("ACC-INT-3",)))
    runner = Runner(
        settings=settings,
        sessions=node_sessions,
        ingest=FakeIngest(settings, node_sessions),
        retry=RetryPolicy(max_attempts=1),
    )
    assert runner.run(job_id) == JobStatus.FAILED
    with transaction(node_sessions) as session:
        error = service.get(session=session, job_id=job_id).error
    assert "1 studies incomplete after 1 attempts" in error
    assert "check that it knows the node's AE title 'HAVENET'" in error


def stored_instances(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as session:
        return int(session.execute(select(func.count(Instance.id))).scalar_one())


@needs_node
@pytest.mark.parametrize("method", [Method.MOVE, Method.GET])
def test_a_job_through_the_real_node_stores_stage_1_instances(
    method: Method,
    orthanc_factory: OrthancFactory,
    archive: Path,
    node_settings: NodeSettings,
    node_sessions: sessionmaker[Session],
) -> None:
    storage_server = importlib.import_module("node.dicom.scp").StorageServer
    ingest_class = importlib.import_module("node.ingest.service").Ingest
    modality = (NODE_AE, LOOPBACK, node_settings.dicom_port)
    orthanc = orthanc_factory(modalities={"node": modality})
    orthanc.upload(archive)
    settings = with_pacs(node_settings, orthanc)
    ingest = ingest_class(settings, node_sessions)
    ingest.start()
    scp = storage_server(settings, ingest)
    scp.start()
    try:
        job_id = queue(
            node_sessions, settings, RetrieveCreate(patient_ids=(PATIENT_A,), method=method)
        )
        runner = Runner(settings=settings, sessions=node_sessions, ingest=ingest)
        assert runner.run(job_id) == JobStatus.DONE
    finally:
        scp.stop()
        ingest.stop()
    with transaction(node_sessions) as session:
        job = service.get(session=session, job_id=job_id)
        assert (job.found, job.retrieved, job.stored, job.rejected) == (7, 7, 7, 0)
        stage1 = stage1_uid_mapper(settings)
        uids = set(session.execute(select(Study.study_uid)).scalars())
    assert uids == {stage1(f"{ROOT}.1"), stage1(f"{ROOT}.2")}
    assert stored_instances(node_sessions) == 7


def store_snapshot(sessions: sessionmaker[Session]) -> set[tuple[str, str, str, str]]:
    with transaction(sessions) as session:
        rows = session.execute(
            select(Patient.subject_key, Study.study_uid, Series.series_uid, Instance.sop_uid)
            .join(Study, Study.patient_id == Patient.id)
            .join(Series, Series.study_id == Study.id)
            .join(Instance, Instance.series_id == Series.id)
        )
        return {(a, b, c, d) for a, b, c, d in rows}


@needs_node
def test_a_clean_up_and_a_restore_through_the_real_node_give_back_the_same_store(
    pacs: Orthanc, node_settings: NodeSettings, node_sessions: sessionmaker[Session]
) -> None:
    settings = with_pacs(node_settings, pacs)
    ingest = importlib.import_module("node.ingest.service").Ingest(settings, node_sessions)
    ingest.start()
    try:
        runner = Runner(settings=settings, sessions=node_sessions, ingest=ingest)
        request = RetrieveCreate(modality="MR", method=Method.GET)
        assert runner.run(queue(node_sessions, settings, request)) == JobStatus.DONE
        before = store_snapshot(node_sessions)
        subjects = sorted({row[0] for row in before})
        assert len(before) == 7 and len(subjects) == 2
        with transaction(node_sessions) as session:
            delete_id = service.create_delete(
                session=session, subject_keys=subjects[:1], actor="test"
            ).id
        assert runner.run(delete_id) == JobStatus.DONE
        assert store_snapshot(node_sessions) < before
        with transaction(node_sessions) as session:
            restore_id = service.create_restore(
                session=session, actor="test", restore_of=delete_id, method=Method.GET
            ).id
        assert runner.run(restore_id) == JobStatus.DONE
    finally:
        ingest.stop()
    assert store_snapshot(node_sessions) == before
