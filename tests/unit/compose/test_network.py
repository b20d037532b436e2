"""The local launcher's parts: settings files, one-shot commands, waiting, stopping processes
and pushing images over C-STORE."""

from __future__ import annotations

import gc
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from compose import network
from compose.exceptions import AssociationRefused, CommandFailed, ProcessFailed, StepTimedOut
from compose.network import HubProcess, NodeProcess, PacsEntry, Service, run_command, wait_until
from compose.synthetic.dicom import generate_corpus
from node import settings as node_settings


def test_a_node_settings_file_is_private_and_makes_valid_node_settings(tmp_path: Path) -> None:
    node = NodeProcess.create(
        "a node", tmp_path / "node", ae_title="HAVENET7", pacs=(PacsEntry("pacs", "PACS", 4242),)
    )
    node.write_config()
    assert stat.S_IMODE(node.config_path.stat().st_mode) == 0o600
    settings = node_settings.load(node.config_path)
    settings.validate_secrets()  # fresh, strong secrets: the node would start
    assert settings.ae_title == "HAVENET7"
    assert (settings.dicom_port, settings.api_port) == (node.dicom_port, node.api_port)
    assert settings.check_api_token() == node.api_token
    assert [(p.ae_title, p.port) for p in settings.pacs] == [("PACS", 4242)]
    assert settings.data_dir == tmp_path / "node"


def test_two_networks_never_share_secrets(tmp_path: Path) -> None:
    first, second = HubProcess.create(tmp_path / "a"), HubProcess.create(tmp_path / "b")
    assert first.secret != second.secret
    assert len(first.secret) >= 32
    assert first.settings["HAVENET_HUB_DATA_DIR"] == str(tmp_path / "a")


def test_a_failed_command_names_itself_and_its_last_error_line_never_its_input() -> None:
    script = "import sys; sys.stdin.read(); print('first', file=sys.stderr); sys.exit('last')"
    with pytest.raises(CommandFailed) as failed:
        run_command(
            [sys.executable, "-c", script],
            env=dict(os.environ),
            shown="havenet node enroll URL -",
            stdin="one-time-token-1234",
        )
    message = str(failed.value)
    assert "`havenet node enroll URL -` exited with status 1: last" in message
    assert "one-time-token-1234" not in message


def test_waiting_returns_the_first_true_answer() -> None:
    answers = iter([None, {}, {"done": 1}])
    assert wait_until(lambda: next(answers), step="x", seconds=5) == {"done": 1}


def test_waiting_too_long_names_the_step_and_the_log(tmp_path: Path) -> None:
    with pytest.raises(StepTimedOut, match=r"stage 1: not done after 0 s; see .*node.log"):
        wait_until(lambda: False, step="stage 1", seconds=0.1, log=tmp_path / "node.log")


# -- processes -----------------------------------------------------------------------------------


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Service]:
    service = Service("a sleeper", tmp_path / "sleeper.log")
    yield service
    if service.process is not None and service.process.poll() is None:
        service.process.kill()
        service.process.wait()


def spawn(service: Service, code: str) -> None:
    service.spawn([sys.executable, "-c", code], dict(os.environ))


def test_a_process_runs_in_a_group_of_its_own(sleeper: Service) -> None:
    """Ctrl-C in the terminal reaches the launcher only, which stops the rest in order."""
    spawn(sleeper, "import time; time.sleep(60)")
    assert sleeper.process is not None
    deadline = time.monotonic() + 5
    while os.getpgid(sleeper.process.pid) != sleeper.process.pid:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert os.getpgid(sleeper.process.pid) != os.getpgid(0)


def test_stopping_ends_every_process_at_once(tmp_path: Path) -> None:
    services = [Service(f"s{n}", tmp_path / f"s{n}.log") for n in range(3)]
    for service in services:
        spawn(service, "import time; time.sleep(60)")
    started = time.monotonic()
    network.stop_all(services)
    assert time.monotonic() - started < 5
    assert not any(service.running for service in services)


def test_a_process_that_ignores_sigterm_is_killed(sleeper: Service) -> None:
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    code += "print('ready', flush=True); time.sleep(60)"
    spawn(sleeper, code)
    wait_until(lambda: "ready" in sleeper.log_path.read_text(), step="start", seconds=10)
    sleeper.stop(timeout=0.5)
    assert sleeper.process is not None
    assert sleeper.process.returncode == -9


def test_a_process_that_exits_is_reported_with_its_log(sleeper: Service) -> None:
    spawn(sleeper, "import sys; sys.exit(3)")
    with pytest.raises(ProcessFailed, match=r"a sleeper exited with status 3; its log: .*"):
        sleeper.wait_ready(lambda: False, seconds=10)


# -- C-STORE -------------------------------------------------------------------------------------


@pytest.fixture
def storage_scp() -> Iterator[tuple[int, list[str]]]:
    """A storage SCP on a free loopback port; the SOP Instance UIDs it received."""
    received: list[str] = []

    def handle_store(event: Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="RECEIVER")
    ae.supported_contexts = AllStoragePresentationContexts
    port = network.free_port()
    server: ThreadedAssociationServer = ae.start_server(
        (network.LOOPBACK, port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    try:
        yield port, received
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    key = generate_corpus(
        folder, patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=3
    )
    return [folder / name for name in key.files]


def test_pynetdicom_sends_every_image_when_storescu_is_missing(
    storage_scp: tuple[int, list[str]], images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, received = storage_scp
    monkeypatch.setattr(network, "storescu_program", lambda: None)
    result = network.push(images, port=port, called_ae="RECEIVER", calling_ae="MODALITY1")
    assert (result.sent, result.refused, result.tool) == (len(images), 0, "pynetdicom")
    assert len(received) == len(set(received)) == len(images)


@pytest.mark.skipif(network.storescu_program() is None, reason="DCMTK's storescu is not installed")
def test_storescu_sends_every_image_when_installed(
    storage_scp: tuple[int, list[str]], images: list[Path]
) -> None:
    port, received = storage_scp
    result = network.push(images, port=port, called_ae="RECEIVER", calling_ae="MODALITY1")
    assert (result.sent, result.tool) == (len(images), "storescu")
    assert len(set(received)) == len(images)


# pynetdicom leaves the refused connection's socket to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_refused_push_fails_with_the_address(
    images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(network, "storescu_program", lambda: None)
    port = network.free_port()  # nothing listens there
    with pytest.raises(AssociationRefused, match=f"RECEIVER at 127.0.0.1:{port}"):
        network.push(images, port=port, called_ae="RECEIVER", calling_ae="MODALITY1")
    gc.collect()  # here, where the warning is ignored
