"""The node's storage server against real senders: DCMTK's storescu and Orthanc.

Instances pushed to the node are pseudonymized and stored once; bad input gets a DIMSE
failure status while the server keeps serving; a node killed mid-push restarts into a
consistent store. The same on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.dsutils import create_file_meta
from pynetdicom.dsutils import encode_file_meta as pynetdicom_file_meta
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from compose.synthetic.dicom import AnswerKey, generate_corpus
from node.dicom.scp import Peer, StorageServer, allowed, encode_file_meta
from node.ingest import spool
from node.ingest.service import Ingest
from node.settings import NodeSettings
from node.store.correspondence import new_key
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from node.store.models import Instance, RejectedInstance
from tests.conftest import SECRET, ct_dataset
from tests.integration.peers import Dcmtk, Orthanc, free_port

REPOSITORY = Path(__file__).resolve().parents[2]
NODE_AE = "HAVENET"


@dataclass
class Node:
    settings: NodeSettings
    sessions: sessionmaker[Session]
    ingest: Ingest
    server: StorageServer

    @property
    def port(self) -> int:
        return self.server.port

    def instances(self) -> list[Instance]:
        with transaction(self.sessions) as session:
            return list(session.execute(select(Instance)).scalars())

    def rejected(self) -> list[RejectedInstance]:
        with transaction(self.sessions) as session:
            return list(session.execute(select(RejectedInstance)).scalars())


NodeFactory = Callable[..., Node]


def node_settings(data_dir: Path, **overrides: object) -> NodeSettings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "site_secret": SECRET.decode(),
        "correspondence_key": new_key(),
        "ae_title": NODE_AE,
        "dicom_port": free_port(),
        "workers": 2,
    }
    values.update(overrides)
    return NodeSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[NodeFactory]:
    """Start nodes (ingest + storage server) on free loopback ports; stop them after."""
    started: list[Node] = []

    def start(settings: NodeSettings | None = None, **overrides: object) -> Node:
        settings = settings or node_settings(tmp_path / f"node-{len(started)}", **overrides)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate(settings.database)
        sessions = make_sessionmaker(make_engine(settings.database))
        ingest = Ingest(settings, sessions)
        ingest.start()
        server = StorageServer(settings, ingest)
        server.start()
        node = Node(settings, sessions, ingest, server)
        started.append(node)
        return node

    yield start
    for node in started:
        node.server.stop()
        node.ingest.stop()
        bind = node.sessions.kw["bind"]
        bind.dispose()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AnswerKey]:
    folder = tmp_path_factory.mktemp("corpus")
    key = generate_corpus(folder, patients=2, instances_per_series=5, rows=64, columns=64)
    return folder, key


def identifiers(key: AnswerKey) -> list[bytes]:
    values = [v for p in key.patients for v in (p.patient_id, p.name.split("^")[0])]
    return [v.encode() for v in values if len(v) >= 6]


def store_files(node: Node) -> list[Path]:
    return sorted(p for p in node.settings.store_dir.rglob("*.dcm") if ".staging" not in p.parts)


def successes(output: str) -> int:
    """C-STOREs storescu saw answered with success (it prints one line each with -v)."""
    return len(re.findall(r"Received Store Response \(Success\)", output))


# -- pushes ----------------------------------------------------------------------------------


def test_instances_pushed_with_storescu_are_stored_pseudonymized(
    start_node: NodeFactory, dcmtk: Dcmtk, corpus: tuple[Path, AnswerKey]
) -> None:
    folder, key = corpus
    node = start_node()
    files = sorted(folder.rglob("*.dcm"))
    result = dcmtk.storescu("127.0.0.1", node.port, folder, aet="PACS", aec=NODE_AE)
    assert result.ok, result.output
    node.ingest.drain(60)
    rows = node.instances()
    assert len(rows) == len(files)
    assert sorted(node.settings.data_dir / r.path for r in rows) == store_files(node)
    for path in store_files(node):
        data = path.read_bytes()
        assert not [value for value in identifiers(key) if value in data]
    first = dcmread(store_files(node)[0])
    assert first.PatientIdentityRemoved == "YES"


def test_a_second_push_of_the_same_instances_stores_nothing_new(
    start_node: NodeFactory, dcmtk: Dcmtk, corpus: tuple[Path, AnswerKey]
) -> None:
    folder, _ = corpus
    node = start_node()
    assert dcmtk.storescu("127.0.0.1", node.port, folder, aec=NODE_AE).ok
    node.ingest.drain(60)
    before = {(r.sop_uid, r.sha256) for r in node.instances()}
    assert dcmtk.storescu("127.0.0.1", node.port, folder, aec=NODE_AE).ok
    node.ingest.drain(60)
    assert {(r.sop_uid, r.sha256) for r in node.instances()} == before
    assert node.ingest.counts()["duplicates"] == len(before)
    assert len(store_files(node)) == len(before)


def test_instances_pushed_by_orthanc_are_stored(
    start_node: NodeFactory, orthanc: Orthanc, corpus: tuple[Path, AnswerKey]
) -> None:
    folder, _ = corpus
    node = start_node()
    ids = orthanc.upload(folder)
    orthanc.add_modality("havenet", NODE_AE, "127.0.0.1", node.port)
    answer = orthanc.client.post(
        "/modalities/havenet/store", json={"Resources": ids, "Synchronous": True}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    node.ingest.drain(60)
    assert len(node.instances()) == len(ids)


@pytest.mark.parametrize(
    ("name", "propose", "syntax"),
    [
        ("MR_small_RLE.dcm", "-xr", "1.2.840.10008.1.2.5"),
        ("MR_small_jpeg_ls_lossless.dcm", "-xt", "1.2.840.10008.1.2.4.80"),
        ("MR2_J2KR.dcm", "-xv", "1.2.840.10008.1.2.4.90"),
        ("MR_small_bigendian.dcm", "-xb", "1.2.840.10008.1.2.2"),
        ("MR_small_implicit.dcm", "-xi", "1.2.840.10008.1.2"),
    ],
)
def test_compressed_and_uncompressed_transfer_syntaxes_are_accepted(
    start_node: NodeFactory, dcmtk: Dcmtk, name: str, propose: str, syntax: str
) -> None:
    node = start_node(workers=1)
    path = get_testdata_file(name, download=False)
    assert path is not None
    result = dcmtk.storescu("127.0.0.1", node.port, path, aec=NODE_AE, extra_args=[propose])
    assert result.ok, result.output
    node.ingest.drain(60)
    [row] = node.instances()
    assert row.transfer_syntax_uid == syntax


# -- bad input -------------------------------------------------------------------------------


def test_a_truncated_image_gets_a_failure_status_and_the_server_keeps_serving(
    start_node: NodeFactory, dcmtk: Dcmtk, tmp_path: Path
) -> None:
    node = start_node(workers=1)
    ds = ct_dataset(rows=64)
    ds.PixelData = ds.PixelData[:1000]  # cut short, yet well-formed enough for DCMTK to send
    truncated = tmp_path / "truncated.dcm"
    ds.save_as(truncated, enforce_file_format=True)
    result = dcmtk.storescu("127.0.0.1", node.port, truncated, aec=NODE_AE, extra_args=["-v"])
    assert "Error: CannotUnderstand" in result.output, result.output  # 0xC210
    assert successes(result.output) == 0
    assert dcmtk.echoscu("127.0.0.1", node.port, aec=NODE_AE).ok
    good = tmp_path / "good.dcm"
    ct_dataset().save_as(good, enforce_file_format=True)
    assert dcmtk.storescu("127.0.0.1", node.port, good, aec=NODE_AE).ok
    node.ingest.drain(60)
    assert len(node.instances()) == 1
    assert [r.code for r in node.rejected()] == ["unreadable"]


def test_corrupt_bytes_sent_raw_get_a_failure_status(start_node: NodeFactory) -> None:
    """storescu will not send a file it cannot parse; pynetdicom sends bytes as they are."""
    node = start_node(workers=1)
    buffer = io.BytesIO()
    ct_dataset().save_as(buffer, enforce_file_format=True)
    encoded = buffer.getvalue()
    at = encoded.find(b"\x08\x00\x30\x10")  # StudyDescription: an absurd length
    damaged = encoded[:at] + b"\x08\x00\x30\x10LO\xff\x7f" + encoded[at + 8 :]
    scu = AE(ae_title="RAWSENDER")
    scu.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", node.port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        status = _send_raw(assoc, damaged, node.settings.data_dir.parent)
        assert status == 0xC210
        assert assoc.send_c_echo().Status == 0x0000  # still serving, same association
    finally:
        assoc.release()


def test_a_request_sent_the_moment_the_association_is_accepted_is_answered(
    start_node: NodeFactory,
) -> None:
    """The DUL thread serves requests; the peer may send one before the association thread
    has marked the association established (it is slow to here, on purpose)."""
    node = start_node(workers=1)
    assert node.server._server is not None
    node.server._server.bind(evt.EVT_ACCEPTED, lambda event: time.sleep(0.3))
    scu = AE(ae_title="EAGER")
    scu.add_requested_context(Verification)
    for _ in range(3):
        assoc = scu.associate("127.0.0.1", node.port, ae_title=NODE_AE)
        assert assoc.is_established
        try:
            assert assoc.send_c_echo().Status == 0x0000
        finally:
            assoc.release()


def test_an_instance_the_spool_cannot_make_durable_is_refused_and_then_taken(
    start_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = start_node(workers=1)
    buffer = io.BytesIO()
    ct_dataset().save_as(buffer, enforce_file_format=True)
    scu = AE(ae_title="SENDER")
    scu.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = scu.associate("127.0.0.1", node.port, ae_title=NODE_AE)
    assert assoc.is_established
    folder = node.settings.data_dir.parent
    try:
        with monkeypatch.context() as patched:
            patched.setattr(os, "fdatasync", _failing_flush)
            assert _send_raw(assoc, buffer.getvalue(), folder) == 0xA700  # out of resources
        assert _send_raw(assoc, buffer.getvalue(), folder) == 0x0000  # the sender tries again
    finally:
        assoc.release()
    node.ingest.drain(60)
    assert len(node.instances()) == 1


def _failing_flush(descriptor: int) -> None:
    raise OSError(5, "Input/output error")


def test_stopping_the_server_ends_associations_in_progress(start_node: NodeFactory) -> None:
    node = start_node(workers=1)
    scu = AE(ae_title="HOLDER")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", node.port, ae_title=NODE_AE)
    assert assoc.is_established
    node.server.stop()
    assoc.join(timeout=10)
    assert not assoc.is_alive()
    assert assoc.is_aborted
    assert not assoc.is_established


def test_stopping_the_server_drops_a_connection_that_never_asked(
    start_node: NodeFactory,
) -> None:
    """PS3.8 has no abort before the A-ASSOCIATE-RQ: the connection is closed instead."""
    node = start_node(workers=1)
    failures: list[threading.ExceptHookArgs] = []
    previous = threading.excepthook
    threading.excepthook = failures.append
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as silent:
            _wait_for_association(node.server)
            node.server.stop()
            assert silent.recv(1) == b""  # closed by the node, nothing sent
    finally:
        threading.excepthook = previous
    assert failures == []


def _wait_for_association(server: StorageServer) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        running = server._server.active_associations if server._server else []
        if running:
            return
        time.sleep(0.01)
    raise AssertionError("the node never took the connection")


def _send_raw(assoc: object, encoded: bytes, folder: Path) -> int:
    """C-STORE the data set of ``encoded`` byte for byte (pynetdicom's file-path mode)."""
    path = folder / "damaged.dcm"
    path.write_bytes(encoded)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(path)  # type: ignore[attr-defined]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        path.unlink(missing_ok=True)
    return int(status.Status)


def test_a_calling_ae_title_not_allowed_is_rejected(start_node: NodeFactory, dcmtk: Dcmtk) -> None:
    node = start_node(workers=1, allowed_peers=["MODALITY1", "PACS@127.0.0.1"])
    refused = dcmtk.echoscu("127.0.0.1", node.port, aet="INTRUDER", aec=NODE_AE)
    assert not refused.ok
    assert "rejected" in refused.output.lower() or "calling ae title" in refused.output.lower()
    assert dcmtk.echoscu("127.0.0.1", node.port, aet="MODALITY1", aec=NODE_AE).ok
    assert dcmtk.echoscu("127.0.0.1", node.port, aet="PACS", aec=NODE_AE).ok


def test_a_flood_of_associations_beyond_the_cap_is_refused_and_the_server_recovers(
    start_node: NodeFactory, dcmtk: Dcmtk
) -> None:
    node = start_node(workers=1, max_associations=2)
    outcomes: list[str] = []
    held = []
    lock = threading.Lock()

    def open_one() -> None:
        scu = AE(ae_title="FLOOD")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", node.port, ae_title=NODE_AE)
        with lock:
            outcomes.append("established" if assoc.is_established else "refused")
            if assoc.is_established:
                held.append(assoc)

    try:
        for _ in range(2):  # the cap, taken and held
            open_one()
        assert outcomes == ["established", "established"]
        flood = [threading.Thread(target=open_one) for _ in range(6)]
        for thread in flood:
            thread.start()
        for thread in flood:
            thread.join(timeout=60)
        assert outcomes[2:] == ["refused"] * 6
    finally:
        for assoc in held:
            assoc.release()
    assert dcmtk.echoscu("127.0.0.1", node.port, aec=NODE_AE).ok  # serving again


# -- crashes ---------------------------------------------------------------------------------

_RECEIVER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from node.settings import NodeSettings
    from node.store.db import make_engine, make_sessionmaker, migrate
    from node.ingest.service import Ingest
    from node.dicom.scp import StorageServer

    settings = NodeSettings(
        data_dir=Path(sys.argv[1]),
        site_secret=os.environ["SECRET"],
        correspondence_key=os.environ["KEY"],
        database_url=os.environ.get("DATABASE_URL", ""),
        dicom_port=int(sys.argv[2]),
        ae_title="HAVENET",
        workers=2,
    )
    migrate(settings.database)
    ingest = Ingest(settings, make_sessionmaker(make_engine(settings.database)))
    ingest.start()
    StorageServer(settings, ingest).start()
    print("listening", flush=True)
    time.sleep(600)
    """
)


def _kill_mid_push(
    settings: NodeSettings, dcmtk: Dcmtk, folder: Path, tmp_path: Path
) -> tuple[int, int]:
    """Run a receiver in its own process, push ``folder`` to it and SIGKILL it (and its
    workers) half-way. Returns (files sent, stores acknowledged)."""
    environment = {
        **os.environ,
        "SECRET": SECRET.decode(),
        "KEY": settings.correspondence_key.get_secret_value(),
        "DATABASE_URL": settings.database_url,
    }
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "receiver.log"
    with log.open("w") as output:
        receiver = subprocess.Popen(
            [sys.executable, "-c", _RECEIVER, str(settings.data_dir), str(settings.dicom_port)],
            env=environment,
            cwd=REPOSITORY,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        for _ in range(600):
            if "listening" in log.read_text():
                break
            assert receiver.poll() is None, log.read_text()
            threading.Event().wait(0.1)
        command = [
            str(dcmtk.binaries.get("storescu", "storescu")),
            *("-v", "-aec", NODE_AE, "+sd", "+r", "127.0.0.1", str(settings.dicom_port)),
            str(folder),
        ]
        acknowledged = 0
        with subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
            text=True,
        ) as push:
            assert push.stdout is not None
            for line in push.stdout:
                acknowledged += successes(line)
                if acknowledged == 60:
                    os.killpg(receiver.pid, signal.SIGKILL)  # the node and its workers at once
            push.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(receiver.pid, signal.SIGKILL)
        receiver.wait(timeout=30)
    return len(list(folder.rglob("*.dcm"))), acknowledged


def _restart_after_kill(
    start_node: NodeFactory, dcmtk: Dcmtk, tmp_path: Path, **overrides: object
) -> None:
    folder = tmp_path / "push"
    generate_corpus(folder, patients=4, instances_per_series=25, rows=32, columns=32)
    settings = node_settings(tmp_path / "killed", **overrides)
    sent, acknowledged = _kill_mid_push(settings, dcmtk, folder, tmp_path)
    assert 60 <= acknowledged < sent
    node = start_node(settings)  # the same data folder, database and keys
    node.ingest.drain(60)
    rows = node.instances()
    assert len(rows) >= acknowledged  # nothing acknowledged was lost
    assert len({r.sop_uid for r in rows}) == len(rows)
    assert sorted(node.settings.data_dir / r.path for r in rows) == store_files(node)
    assert spool.waiting(node.settings.spool_dir) == []
    assert list((node.settings.store_dir / ".staging").iterdir()) == []
    result = dcmtk.storescu("127.0.0.1", node.port, folder, aec=NODE_AE)  # the PACS re-sends
    assert result.ok, result.output
    node.ingest.drain(60)
    assert len(node.instances()) == sent
    assert len(store_files(node)) == sent


def test_a_node_killed_mid_push_restarts_without_loss_or_duplicates(
    start_node: NodeFactory, dcmtk: Dcmtk, tmp_path: Path
) -> None:
    _restart_after_kill(start_node, dcmtk, tmp_path)


# -- PostgreSQL ------------------------------------------------------------------------------


def test_a_push_is_stored_once_on_postgresql(
    start_node: NodeFactory,
    dcmtk: Dcmtk,
    corpus: tuple[Path, AnswerKey],
    postgres_database_url: str,
    tmp_path: Path,
) -> None:
    folder, _ = corpus
    node = start_node(node_settings(tmp_path / "pg", database_url=postgres_database_url))
    for _ in range(2):
        assert dcmtk.storescu("127.0.0.1", node.port, folder, aec=NODE_AE).ok
        node.ingest.drain(60)
    files = list(folder.rglob("*.dcm"))
    assert len(node.instances()) == len(files)
    assert node.ingest.counts()["duplicates"] == len(files)
    with transaction(node.sessions) as session:
        assert session.execute(select(func.count()).select_from(Instance)).scalar_one() == len(
            files
        )


def test_a_node_on_postgresql_killed_mid_push_restarts_consistent(
    start_node: NodeFactory, dcmtk: Dcmtk, tmp_path: Path, postgres_database_url: str
) -> None:
    _restart_after_kill(start_node, dcmtk, tmp_path, database_url=postgres_database_url)


# -- pieces of the server --------------------------------------------------------------------


def test_the_file_meta_is_encoded_as_pynetdicom_encodes_it() -> None:
    ours = encode_file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2.4.50")
    theirs = pynetdicom_file_meta(
        create_file_meta(
            sop_class_uid=UID("1.2.840.10008.5.1.4.1.1.2"),
            sop_instance_uid=UID("1.2.3.45"),
            transfer_syntax=UID("1.2.840.10008.1.2.4.50"),
        )
    )
    assert ours == theirs


def test_the_allow_list_admits_titles_hosts_and_both() -> None:
    peers = [Peer.parse("MODALITY1"), Peer.parse("PACS@127.0.0.1"), Peer.parse("@10.1.2.3")]
    assert allowed(peers, "MODALITY1", "192.168.1.9")
    assert allowed(peers, "PACS", "127.0.0.1")
    assert not allowed(peers, "PACS", "127.0.0.2")
    assert allowed(peers, "ANYONE", "10.1.2.3")
    assert allowed(peers, "ANYONE", "::ffff:10.1.2.3")
    assert not allowed(peers, "ANYONE", "127.0.0.1")
    assert allowed([], "ANYONE", "127.0.0.1")
