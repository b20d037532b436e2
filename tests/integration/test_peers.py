"""The peer fixtures themselves: each starts a real, working peer and stops it for good."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from sqlalchemy import create_engine, text

from tests.integration.conftest import OrthancFactory
from tests.integration.peers import (
    LOOPBACK,
    REQUIRE_PEERS_ENV,
    Dcmtk,
    Orthanc,
    PeerError,
    PeerMissing,
    PeerTimeout,
    Postgres,
    free_port,
    orthanc_binary,
    pid_alive,
    port_open,
    skip_or_fail,
    sweep_stale_clusters,
    wait_for_port,
)

pytestmark = pytest.mark.peers

SAMPLES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")


def sample(name: str) -> Path:
    # Never get_testdata_files(pattern): offline it tries to download and hangs.
    found = get_testdata_file(name, download=False)
    assert found is not None, name
    return Path(str(found))


def study_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


# -- helpers -----------------------------------------------------------------------------------


def test_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind((LOOPBACK, port))


def test_wait_for_port_times_out_with_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(PeerTimeout, match=rf"{LOOPBACK}:{port} within 0.2 s"):
        wait_for_port(port, timeout=0.2, what="nobody")


def test_wait_for_port_returns_once_something_listens() -> None:
    with socket.socket() as server:
        server.bind((LOOPBACK, 0))
        server.listen()
        wait_for_port(server.getsockname()[1], timeout=2.0)


def test_a_missing_peer_skips_unless_peers_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = PeerMissing("Orthanc", "orthanc", ["Orthanc"])
    assert "apt-get install -y --no-install-recommends orthanc" in str(missing)
    monkeypatch.delenv(REQUIRE_PEERS_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="orthanc"):
        skip_or_fail(missing)
    monkeypatch.setenv(REQUIRE_PEERS_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_PEERS_ENV}=1"):
        skip_or_fail(missing)


# -- Orthanc and DCMTK -------------------------------------------------------------------------


def test_echoscu_against_orthanc(orthanc: Orthanc, dcmtk: Dcmtk) -> None:
    result = dcmtk.echoscu(orthanc.host, orthanc.dicom_port, "HAVENET", orthanc.aet)
    assert result.ok, result.output


def test_storescu_stores_files_in_orthanc(orthanc: Orthanc, dcmtk: Dcmtk) -> None:
    assert orthanc.instances() == 0
    files = [sample(name) for name in SAMPLES]
    result = dcmtk.storescu(orthanc.host, orthanc.dicom_port, files, "HAVENET", orthanc.aet)
    assert result.ok, result.output
    assert orthanc.instances() == len(files)


def test_storescu_sends_a_whole_folder(orthanc: Orthanc, dcmtk: Dcmtk, tmp_path: Path) -> None:
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    for name in SAMPLES[:2]:
        shutil.copy(sample(name), folder / name)
    result = dcmtk.storescu(orthanc.host, orthanc.dicom_port, tmp_path / "in")
    assert result.ok, result.output
    assert orthanc.instances() == 2


def test_findscu_finds_the_stored_study(orthanc: Orthanc, dcmtk: Dcmtk) -> None:
    ct = sample("CT_small.dcm")
    assert orthanc.upload(ct)
    result = dcmtk.findscu(
        orthanc.host,
        orthanc.dicom_port,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientName": ""},
        "HAVENET",
        orthanc.aet,
    )
    assert result.ok, result.output
    assert study_uid(ct) in result.output
    assert "Find Response: 1 (Pending)" in result.output


def test_upload_counts_and_delete_all(orthanc: Orthanc, tmp_path: Path) -> None:
    folder = tmp_path / "upload"  # not tmp_path itself: Orthanc's own storage is there
    folder.mkdir()
    for name in SAMPLES:
        shutil.copy(sample(name), folder / name)
    (folder / "notes.txt").write_text("not DICOM")
    with pytest.raises(PeerError, match=r"rejected .*notes\.txt"):
        orthanc.upload(folder)
    assert len(orthanc.upload(folder, skip_rejected=True)) == len(SAMPLES)
    assert orthanc.instances() == len(SAMPLES)
    orthanc.delete_all()
    assert orthanc.instances() == 0


def test_movescu_and_getscu_retrieve_from_orthanc(
    orthanc_factory: OrthancFactory, dcmtk: Dcmtk, tmp_path: Path
) -> None:
    receive_port = free_port()
    pacs = orthanc_factory(aet="PACS", modalities={"mover": ("MOVER", LOOPBACK, receive_port)})
    ct = sample("CT_small.dcm")
    pacs.upload(ct)
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid(ct)}

    moved = dcmtk.movescu(
        pacs.host,
        pacs.dicom_port,
        keys,
        "MOVER",
        "PACS",
        receive_port=receive_port,
        output_dir=tmp_path / "moved",
    )
    assert moved.ok, moved.output
    assert len(list((tmp_path / "moved").iterdir())) == 1

    got = dcmtk.getscu(
        pacs.host, pacs.dicom_port, keys, "GETTER", "PACS", output_dir=tmp_path / "got"
    )
    assert got.ok, got.output
    assert len(list((tmp_path / "got").iterdir())) == 1


def test_orthanc_stop_leaves_no_process(tmp_path: Path) -> None:
    try:
        orthanc_binary()
    except PeerMissing as missing:
        skip_or_fail(missing)
    orthanc = Orthanc.start(tmp_path, aet="STOPME")
    try:
        pid, http_port, dicom_port = orthanc.pid, orthanc.http_port, orthanc.dicom_port
        assert pid_alive(pid)
        assert port_open(http_port)
        assert port_open(dicom_port)
    finally:
        orthanc.stop()
    assert not orthanc.running
    assert not pid_alive(pid)
    assert not port_open(http_port)
    assert not port_open(dicom_port)
    assert "Orthanc has stopped" in orthanc.log_path.read_text()


def test_orthanc_start_failure_raises_with_the_log_tail(tmp_path: Path) -> None:
    try:
        orthanc_binary()
    except PeerMissing as missing:
        skip_or_fail(missing)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - occupy a port on every interface, as Orthanc binds
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PeerError, match="already in use") as failure:
            Orthanc.start(tmp_path, overrides={"DicomPort": port}, attempts=1)
    assert "exited with code" in str(failure.value)


# -- PostgreSQL --------------------------------------------------------------------------------


def test_postgres_url_accepts_sqlalchemy_connections(postgres_url: str) -> None:
    assert postgres_url.startswith(f"postgresql+psycopg://havenet@{LOOPBACK}:")
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("select 1")).scalar_one() == 1
            version = connection.execute(text("show server_version")).scalar_one()
            assert str(version).startswith("15.")
    finally:
        engine.dispose()


def test_postgres_database_url_is_a_fresh_database(
    postgres_database_url: str, postgres_url: str
) -> None:
    assert postgres_database_url != postgres_url
    engine = create_engine(postgres_database_url)
    try:
        with engine.begin() as connection:
            tables = connection.execute(
                text("select count(*) from pg_tables where schemaname = 'public'")
            ).scalar_one()
            assert tables == 0
            connection.execute(text("create table probe (id int primary key)"))
            connection.execute(text("insert into probe values (1)"))
        with engine.connect() as connection:
            assert connection.execute(text("select count(*) from probe")).scalar_one() == 1
    finally:
        engine.dispose()


def test_postgres_stop_leaves_no_process() -> None:
    try:
        server = Postgres.start(dbname="stopme")
    except PeerMissing as missing:
        skip_or_fail(missing)
    try:
        pid = server.pid
        assert pid is not None
        assert pid_alive(pid)
        assert port_open(server.port)
    finally:
        server.stop()
    assert not pid_alive(pid)
    assert not port_open(server.port)
    assert not server.workdir.exists()


def test_sweep_removes_only_clusters_whose_owner_died(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan, mine = tmp_path / "havenet-pg-orphan", tmp_path / "havenet-pg-mine"
    for folder, owner in ((orphan, gone.pid), (mine, os.getpid())):
        folder.mkdir()
        (folder / "havenet-owner.pid").write_text(str(owner))
    assert sweep_stale_clusters(tmp_path) == 1
    assert not orphan.exists()
    assert mine.exists()
