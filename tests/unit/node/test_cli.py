"""`havenet node`: serve stops cleanly and refuses weak secrets; the local admin commands."""

from __future__ import annotations

import base64
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from compose.cli import app
from node.settings import NodeSettings, load
from node.store import correspondence
from node.store.db import make_engine, make_sessionmaker, migrate, transaction
from node.store.models import AuditRecord, Correspondence, Job, JobStatus, RejectedInstance
from tests.conftest import PATIENT_ID, ct_dataset
from tests.unit.node.test_qa import store_instance

runner = CliRunner()
SITE_SECRET = "site-secret-for-cli-tests-0123456789abcdef"
API_TOKEN = "api-token-for-cli-tests-0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HAVENET_NODE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The correspondence key, in the environment as a node admin would have it."""
    value = correspondence.new_key()
    monkeypatch.setenv("HAVENET_NODE_CORRESPONDENCE_KEY", value)
    return value


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def engine(data_dir: Path) -> Iterator[Engine]:
    """A migrated node database in ``data_dir``, as `havenet node serve` leaves it."""
    settings: NodeSettings = load(None, data_dir=data_dir)
    data_dir.mkdir(parents=True)
    migrate(settings.database)
    engine = make_engine(settings.database)
    yield engine
    engine.dispose()


@pytest.fixture
def subject_key(engine: Engine, data_dir: Path, key: str) -> str:
    """One stored patient, with its hospital ID in the correspondence table."""
    with transaction(make_sessionmaker(engine)) as session:
        instance = store_instance(session, data_dir)
        pseudonym = instance.series.study.patient.subject_key
        correspondence.record(
            session=session,
            keyring=correspondence.Keyring(current=correspondence.parse_key(key)),
            kind="patient",
            original=PATIENT_ID,
            pseudonym=pseudonym,
        )
    return pseudonym


def node(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["node", *args])
    return result.exit_code, result.stdout, result.stderr


def audit_records(engine: Engine) -> list[AuditRecord]:
    with Session(engine) as session:
        return list(session.execute(select(AuditRecord).order_by(AuditRecord.id)).scalars())


# -- serve ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def havenet() -> list[str]:
    script = Path(sys.executable).with_name("havenet")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from compose.cli import main; main()"]


def serve(data_dir: Path, dicom_port: int, api_port: int, **env: str) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "HAVENET_NODE_SITE_SECRET": SITE_SECRET,
        "HAVENET_NODE_CORRESPONDENCE_KEY": correspondence.new_key(),
        "HAVENET_NODE_API_TOKEN": API_TOKEN,
        "HAVENET_NODE_WORKERS": "1",
        "HAVENET_NODE_ONTOLOGY_AT_START": "false",
        **env,
    }
    command = [
        *havenet(),
        "node",
        "serve",
        "--data-dir",
        str(data_dir),
        "--dicom-port",
        str(dicom_port),
        "--api-port",
        str(api_port),
    ]
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_health(process: subprocess.Popen[str], api_port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the node exited with {process.returncode}:\n{err}")
        try:
            if httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("the node did not answer /health in time")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_on_a_signal(data_dir: Path, stop_signal: signal.Signals) -> None:
    dicom_port, api_port = free_port(), free_port()
    process = serve(data_dir, dicom_port, api_port)
    try:
        wait_for_health(process, api_port)
        assert listening(dicom_port)
        started = time.monotonic()
        process.send_signal(stop_signal)
        _, err = process.communicate(timeout=15)
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert stopped_in < 5
    assert not listening(dicom_port)
    assert not listening(api_port)
    assert "Traceback" not in err
    assert "node stopped" in err


def test_a_served_node_shows_an_instance_sent_over_dicom(data_dir: Path) -> None:
    dicom_port, api_port = free_port(), free_port()
    process = serve(data_dir, dicom_port, api_port)
    api_url, auth = f"http://127.0.0.1:{api_port}", {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        wait_for_health(process, api_port)
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        association = ae.associate("127.0.0.1", dicom_port, ae_title="HAVENET")
        assert association.is_established
        assert association.send_c_store(ct_dataset()).Status == 0x0000
        association.release()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = httpx.get(f"{api_url}/status", headers=auth).json()
            if status["counts"]["instances"] == 1:
                break
            time.sleep(0.1)
        (study,) = httpx.get(f"{api_url}/studies", headers=auth).json()
        assert study["subject_key"].startswith("PS")
        assert PATIENT_ID not in httpx.get(f"{api_url}/studies", headers=auth).text
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert PATIENT_ID not in err  # nor in the log


@pytest.mark.parametrize("secret", ["", "changeme"])
def test_serve_refuses_an_empty_or_default_site_secret(data_dir: Path, secret: str) -> None:
    process = serve(data_dir, free_port(), free_port(), HAVENET_NODE_SITE_SECRET=secret)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "site_secret (HAVENET_NODE_SITE_SECRET or site_secret_file)" in err
    assert "Traceback" not in err
    assert not data_dir.exists()  # nothing was started or created


def test_serve_names_every_weak_secret_at_once(data_dir: Path) -> None:
    code, _, err = node("serve", "--data-dir", str(data_dir))
    assert code == 2
    assert "site_secret" in err
    assert "correspondence_key (HAVENET_NODE_CORRESPONDENCE_KEY)" in err
    assert "api_token (HAVENET_NODE_API_TOKEN)" in err


@pytest.mark.parametrize("setting", ["dicom_port", "api_port"])
def test_serve_says_which_port_is_taken(
    data_dir: Path, key: str, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv("HAVENET_NODE_SITE_SECRET", SITE_SECRET)
    monkeypatch.setenv("HAVENET_NODE_API_TOKEN", API_TOKEN)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = {"dicom_port": free_port(), "api_port": free_port()}
        ports[setting] = taken.getsockname()[1]
        code, _, err = node(
            "serve",
            "--data-dir",
            str(data_dir),
            "--dicom-port",
            str(ports["dicom_port"]),
            "--api-port",
            str(ports["api_port"]),
        )
    assert code == 1
    flag = "--" + setting.replace("_", "-")
    assert f"{setting} ({flag}): cannot listen on 127.0.0.1:{ports[setting]}" in err


def test_serve_names_a_data_folder_it_cannot_use(
    tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAVENET_NODE_SITE_SECRET", SITE_SECRET)
    monkeypatch.setenv("HAVENET_NODE_API_TOKEN", API_TOKEN)
    (tmp_path / "file").write_text("")
    inside_a_file = tmp_path / "file" / "data"
    code, _, err = node("serve", "--data-dir", str(inside_a_file))
    assert code == 1
    assert f"data_dir (--data-dir): cannot use {inside_a_file} as the node's data folder" in err


def test_serve_names_a_missing_settings_file(tmp_path: Path) -> None:
    code, _, err = node("serve", "--config", str(tmp_path / "node.yaml"))
    assert code == 2
    assert "node.yaml: no such settings file" in err


# -- status -----------------------------------------------------------------------------------


def test_status_prints_the_counts_as_json(engine: Engine, data_dir: Path, subject_key: str) -> None:
    with transaction(make_sessionmaker(engine)) as session:
        session.add(Job(kind="retrieve", status=JobStatus.QUEUED, spec={}, report={}))
        session.add(Job(kind="retrieve", status=JobStatus.DONE, spec={}, report={}))
        session.add(RejectedInstance(code="not-dicom", reason="truncated"))
    code, out, _ = node("status", "--data-dir", str(data_dir), "--json")
    assert code == 0
    assert json.loads(out) == {
        "patients": 1,
        "studies": 1,
        "series": 1,
        "instances": 1,
        "rejected": 1,
        "queued_jobs": 1,
    }


def test_status_prints_a_table_for_people(engine: Engine, data_dir: Path) -> None:
    code, out, _ = node("status", "--data-dir", str(data_dir))
    assert code == 0
    assert "instances" in out
    assert "queued jobs" in out


def test_status_reads_the_data_folder_from_the_settings_file(
    engine: Engine, data_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"data_dir: {data_dir}\n")
    code, out, _ = node("status", "--config", str(config), "--json")
    assert code == 0
    assert json.loads(out)["patients"] == 0


def test_status_without_a_database_says_where_it_looked(tmp_path: Path) -> None:
    code, _, err = node("status", "--data-dir", str(tmp_path), "--json")
    assert code == 1
    assert f"{tmp_path / 'node.db'}: no node database here" in err
    assert not (tmp_path / "node.db").exists()


# -- reidentify -------------------------------------------------------------------------------


def test_reidentify_prints_the_hospital_identifier_and_audits_who_asked(
    engine: Engine, data_dir: Path, subject_key: str
) -> None:
    code, out, _ = node("reidentify", subject_key, "--data-dir", str(data_dir))
    assert code == 0
    assert out.splitlines() == [f"patient\t{PATIENT_ID}"]
    (record,) = audit_records(engine)
    assert (record.actor, record.action, record.subject) == (
        getpass.getuser(),
        "reidentify",
        subject_key,
    )
    assert json.loads(record.details) == {"kinds": ["patient"], "identifiers": 1}
    assert PATIENT_ID not in record.details


def test_reidentify_as_json(engine: Engine, data_dir: Path, subject_key: str) -> None:
    code, out, _ = node("reidentify", subject_key, "--data-dir", str(data_dir), "--json")
    assert code == 0
    assert json.loads(out) == {"patient": [PATIENT_ID]}


def test_reidentifying_an_unknown_pseudonym_fails_and_is_audited(
    engine: Engine, data_dir: Path, key: str
) -> None:
    code, out, err = node("reidentify", "PSUNKNOWN", "--data-dir", str(data_dir))
    assert code == 1
    assert out == ""
    assert "PSUNKNOWN: not in the correspondence table" in err
    assert [r.subject for r in audit_records(engine)] == ["PSUNKNOWN"]


def test_reidentify_needs_the_correspondence_key(
    engine: Engine, data_dir: Path, subject_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HAVENET_NODE_CORRESPONDENCE_KEY")
    code, out, err = node("reidentify", subject_key, "--data-dir", str(data_dir))
    assert code == 2
    assert "HAVENET_NODE_CORRESPONDENCE_KEY" in err
    assert PATIENT_ID not in out + err


def test_reidentify_with_a_wrong_key_reveals_nothing_and_is_audited(
    engine: Engine, data_dir: Path, subject_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAVENET_NODE_CORRESPONDENCE_KEY", correspondence.new_key())
    code, out, err = node("reidentify", subject_key, "--data-dir", str(data_dir))
    assert code == 1
    assert "not configured" in err
    assert PATIENT_ID not in out + err
    (record,) = audit_records(engine)
    assert "failed" in json.loads(record.details)


# -- audit verify -----------------------------------------------------------------------------


def test_audit_verify_passes_an_intact_log(
    engine: Engine, data_dir: Path, subject_key: str
) -> None:
    for _ in range(3):
        node("reidentify", subject_key, "--data-dir", str(data_dir))
    code, out, _ = node("audit", "verify", "--data-dir", str(data_dir))
    assert code == 0
    assert "audit log intact: 3 records" in out


def test_audit_verify_names_the_broken_record(
    engine: Engine, data_dir: Path, subject_key: str
) -> None:
    for _ in range(3):
        node("reidentify", subject_key, "--data-dir", str(data_dir))
    second = audit_records(engine)[1]
    with transaction(make_sessionmaker(engine)) as session:
        session.execute(
            update(AuditRecord).where(AuditRecord.id == second.id).values(actor="nobody")
        )
    code, _, err = node("audit", "verify", "--data-dir", str(data_dir))
    assert code == 1
    assert f"broken at record {second.id}: it was changed after it was written" in err


# -- keys -------------------------------------------------------------------------------------


def test_keys_new_prints_a_fresh_32_byte_key() -> None:
    first, second = node("keys", "new")[1].strip(), node("keys", "new")[1].strip()
    assert len(base64.b64decode(first)) == 32
    assert first != second


def test_keys_rotate_re_encrypts_the_table_and_says_what_to_do_next(
    engine: Engine, data_dir: Path, subject_key: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = correspondence.new_key()
    code, out, _ = node("keys", "rotate", "--new-key", new, "--data-dir", str(data_dir))
    assert code == 0
    old_id = correspondence.key_id(correspondence.parse_key(key))
    new_id = correspondence.key_id(correspondence.parse_key(new))
    assert f"re-encrypted 1 correspondence rows: key {old_id} -> key {new_id}" in out
    assert "correspondence_key" in out
    assert "correspondence_old_keys" in out
    with Session(engine) as session:
        assert {row.key_id for row in session.execute(select(Correspondence)).scalars()} == {new_id}
    (record,) = audit_records(engine)
    assert record.action == "keys.rotate"
    assert record.actor == getpass.getuser()
    assert json.loads(record.details)["rows"] == 1
    assert key not in record.details and new not in record.details
    monkeypatch.setenv("HAVENET_NODE_CORRESPONDENCE_KEY", new)
    code, out, _ = node("reidentify", subject_key, "--data-dir", str(data_dir))
    assert (code, out.strip()) == (0, f"patient\t{PATIENT_ID}")


def test_keys_rotate_reads_the_new_key_from_stdin(
    engine: Engine, data_dir: Path, subject_key: str
) -> None:
    new = correspondence.new_key()
    result = runner.invoke(
        app,
        ["node", "keys", "rotate", "--new-key", "-", "--data-dir", str(data_dir)],
        input=new + "\n",
    )
    assert result.exit_code == 0, result.stderr
    with Session(engine) as session:
        row = session.execute(select(Correspondence)).scalar_one()
    assert row.key_id == correspondence.key_id(correspondence.parse_key(new))


@pytest.mark.parametrize("bad", ["not-a-key", "same"])
def test_keys_rotate_refuses_a_bad_or_unchanged_key(
    engine: Engine, data_dir: Path, subject_key: str, key: str, bad: str
) -> None:
    code, _, err = node(
        "keys", "rotate", "--new-key", key if bad == "same" else bad, "--data-dir", str(data_dir)
    )
    assert code == 2
    assert "--new-key" in err
    assert audit_records(engine) == []


# -- the jobs commands ------------------------------------------------------------------------


def test_the_pacs_and_jobs_commands_are_mounted() -> None:
    code, out, _ = node("--help")
    assert code == 0
    assert "pacs" in out
    assert "jobs" in out
