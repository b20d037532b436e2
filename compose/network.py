"""The embedded network as local processes: a hub, nodes and an Orthanc PACS on loopback.

Each process is the real program (`havenet hub serve`, `havenet node serve`, `Orthanc`) with a
data folder of its own, a log file beside it and free loopback ports. They start in their
own process group, so that Ctrl-C in the terminal reaches only the launcher, which stops them
in order (SIGTERM, then SIGKILL after a grace period); on Linux each also gets SIGKILL if
the launcher dies without stopping it.

Secrets are fresh for every network: the hub's secret goes into ``hub.env`` and each node's
settings (secrets included) into ``node.yaml``, both readable by their owner only, so that
the same commands a hub admin or hospital IT would type work on the running demo.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.association import Association

from common.crypto import SiteSecret
from compose.exceptions import AssociationRefused, CommandFailed, ProcessFailed, StepTimedOut
from node.store.correspondence import new_key

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
STOP_SECONDS = 15.0  # a process's grace period after SIGTERM
COMMAND_SECONDS = 120.0  # a one-shot `havenet` command
READY_SECONDS = 60.0  # from start until /health answers (2 busy cores, cold imports)
# DCMTK and Orthanc wait on delayed ACKs without it (11-22 instead of ~400 files/s).
PEER_ENV = {"TCP_NODELAY": "1"}
STORAGE_CLASSES = (CTImageStorage, MRImageStorage)
PUSH_ANSWER_SECONDS = 10.0  # pynetdicom: how long to wait for a C-STORE's answer
PUSH_ATTEMPTS = 4  # associations tried before the push gives up


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def havenet_command() -> list[str]:
    """The `havenet` program of this Python environment."""
    script = Path(sys.executable).with_name("havenet")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from compose.cli import main; main()"]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def wait_until(
    check: Callable[[], Any], *, step: str, seconds: float, log: Path | None = None
) -> Any:
    """Call ``check`` until it returns something true; that value, or `StepTimedOut`."""
    deadline = time.monotonic() + seconds
    pause = 0.05
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise StepTimedOut(step, seconds, log)
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


# -- processes -----------------------------------------------------------------------------------


_libc: ctypes.CDLL | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)


def _own_group_and_die_with_parent() -> None:
    """In the child before exec: a process group of its own (Ctrl-C reaches the launcher
    only), and SIGKILL when the launcher's thread that started it dies (Linux)."""
    os.setpgid(0, 0)
    if _libc is not None:
        _libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


@dataclass
class Service:
    """A long-running process with its log file. Start it from the thread that lives as
    long as it should (the main thread): it is killed when that thread ends."""

    name: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def spawn(self, args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_own_group_and_die_with_parent,  # noqa: PLW1509 - started from one thread
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ProcessFailed(
                self.name, f"exited with status {self.process.returncode}", self.log_path
            )

    def wait_ready(self, ready: Callable[[], bool], seconds: float = READY_SECONDS) -> None:
        def answered() -> bool:
            self.check_running()
            return ready()

        wait_until(answered, step=f"{self.name} start", seconds=seconds, log=self.log_path)

    def request_stop(self) -> None:
        """SIGTERM: a clean stop for each of these programs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = STOP_SECONDS) -> None:
        """Wait for the end; SIGKILL if it takes longer than ``timeout`` seconds."""
        process = self.process
        if process is not None:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
                process.kill()
                process.wait()
        self.close()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        self.request_stop()
        self.wait_stopped(timeout)

    def close(self) -> None:
        """Let go of what talks to the process (its HTTP client)."""


def stop_all(services: Sequence[Service], timeout: float = STOP_SECONDS) -> None:
    """Stop every service at once: each gets SIGTERM, then each is waited for."""
    for service in services:
        service.request_stop()
    for service in services:
        service.wait_stopped(timeout)


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path, timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def run_command(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    shown: str,
    stdin: str | None = None,
    timeout: float = COMMAND_SECONDS,
) -> str:
    """Run a one-shot command; its standard output, or `CommandFailed` naming ``shown``
    (the command as a reader would type it, without secrets)."""
    try:
        done = subprocess.run(
            list(args),
            env=dict(env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise StepTimedOut(f"`{shown}`", timeout) from None
    if done.returncode != 0:
        raise CommandFailed(shown, done.returncode, done.stderr)
    return done.stdout


# -- the hub -------------------------------------------------------------------------------------


@dataclass
class HubProcess(Service):
    """`havenet hub serve` on a free port, on SQLite and local storage in ``folder``."""

    folder: Path = Path("hub")
    port: int = field(default_factory=free_port)
    secret: str = field(default_factory=new_token, repr=False)
    load_ontology: bool = False
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(cls, folder: Path, *, load_ontology: bool = False) -> HubProcess:
        return cls(
            name="the hub",
            log_path=folder / "hub.log",
            folder=folder,
            load_ontology=load_ontology,
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def settings(self) -> dict[str, str]:
        return {
            "HAVENET_HUB_SECRET": self.secret,
            "HAVENET_HUB_DATA_DIR": str(self.folder),
            # A node's long poll is answered within half a second of a new task.
            "HAVENET_HUB_POLL_RECHECK_SECONDS": "0.5",
            "HAVENET_HUB_ONTOLOGY_AT_START": "true" if self.load_ontology else "false",
        }

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings}

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            # trust_env=False: a proxy from the environment must never see loopback traffic.
            self._client = httpx.Client(base_url=self.url, timeout=60.0, trust_env=False)
        return self._client

    def launch(self) -> None:
        """Start `havenet hub serve`; its settings also go to ``hub.env`` for the hub's
        commands (``set -a; . hub.env; set +a``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"{key}={value}\n" for key, value in self.settings.items())
        write_private(self.folder / "hub.env", lines)
        self.spawn([*havenet_command(), "hub", "serve", "--port", str(self.port)], self.env)

    def wait_started(self) -> None:
        self.wait_ready(lambda: _answers(self.client, "/health"))

    def start(self) -> HubProcess:
        self.launch()
        self.wait_started()
        return self

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """`havenet hub ARGS` on this hub's data; its standard output."""
        return run_command(
            [*havenet_command(), "hub", *args],
            env=self.env,
            shown=" ".join(("havenet", "hub", *args)),
            stdin=stdin,
        )

    def api(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return self.client.request(method, path, headers=headers, **kwargs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# -- a node --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacsEntry:
    """A PACS the node may query and retrieve from (``NodeSettings.pacs``)."""

    name: str
    ae_title: str
    port: int
    host: str = LOOPBACK


@dataclass
class NodeProcess(Service):
    """`havenet node serve --config FOLDER/node.yaml` with its DICOM server and API on free
    ports and its SQLite database and store in ``folder``."""

    folder: Path = Path("node")
    ae_title: str = "HAVENET"
    dicom_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    api_token: str = field(default_factory=new_token, repr=False)
    pacs: tuple[PacsEntry, ...] = ()
    load_ontology: bool = False
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(
        cls,
        name: str,
        folder: Path,
        *,
        ae_title: str,
        pacs: tuple[PacsEntry, ...] = (),
        load_ontology: bool = False,
    ) -> NodeProcess:
        return cls(
            name=name,
            log_path=folder / "node.log",
            folder=folder,
            ae_title=ae_title,
            pacs=pacs,
            load_ontology=load_ontology,
        )

    @property
    def config_path(self) -> Path:
        return self.folder / "node.yaml"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.api_url,
                headers={"Authorization": f"Bearer {self.api_token}"},
                timeout=120.0,  # approving runs stage 2 within the request
                trust_env=False,
            )
        return self._client

    def write_config(self) -> None:
        """The node's settings file, fresh secrets included (readable by its owner only)."""
        settings: dict[str, Any] = {
            "data_dir": str(self.folder),
            "site_secret": SiteSecret.generate(),
            "correspondence_key": new_key(),
            "api_token": self.api_token,
            "ae_title": self.ae_title,
            "dicom_host": LOOPBACK,
            "dicom_port": self.dicom_port,
            "api_host": LOOPBACK,
            "api_port": self.api_port,
            # Two nodes and a hub share the machine: one stage-1 and one stage-2 process each.
            "workers": 1,
            "release_workers": 1,
            "pacs": [
                {"name": p.name, "ae_title": p.ae_title, "host": p.host, "port": p.port}
                for p in self.pacs
            ],
            # Tasks reach the node within a second; a lost hub is retried within seconds.
            "hub_poll_wait_seconds": 5,
            "hub_retry_min_seconds": 0.5,
            "hub_retry_max_seconds": 5,
            "catalogue_publish_hours": 0,  # published on demand
            "ontology_at_start": self.load_ontology,
        }
        header = "# havenet demo node: settings and secrets for `havenet node ... --config`\n"
        write_private(self.config_path, header + yaml.safe_dump(settings, sort_keys=False))

    def launch(self) -> None:
        if not self.config_path.is_file():
            self.write_config()
        self.spawn(
            [*havenet_command(), "node", "serve", "--config", str(self.config_path)],
            {**os.environ, **PEER_ENV},
        )

    def wait_started(self) -> None:
        self.wait_ready(lambda: _answers(self.client, "/health"))

    def start(self) -> NodeProcess:
        self.launch()
        self.wait_started()
        return self

    def cli(self, *args: str, stdin: str | None = None, timeout: float = COMMAND_SECONDS) -> str:
        """`havenet node ARGS --config node.yaml`; its standard output."""
        return run_command(
            [*havenet_command(), "node", *args, "--config", str(self.config_path)],
            env={**os.environ, **PEER_ENV},
            shown=" ".join(("havenet", "node", *args, "--config", str(self.config_path))),
            stdin=stdin,
            timeout=timeout,
        )

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, **kwargs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# -- a PACS --------------------------------------------------------------------------------------


def orthanc_program() -> Path | None:
    """Debian's `Orthanc`, if installed."""
    for folder in (*os.environ.get("PATH", os.defpath).split(os.pathsep), "/usr/sbin", "/sbin"):
        candidate = Path(folder) / "Orthanc"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class OrthancProcess(Service):
    """An Orthanc PACS with its own storage in ``folder``, on free loopback ports. Orthanc
    listens on every interface and has no bind address: its HTTP side takes loopback only."""

    folder: Path = Path("pacs")
    program: Path = Path("Orthanc")
    ae_title: str = "HOSPITALPACS"
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(cls, folder: Path, program: Path) -> OrthancProcess:
        return cls(
            name="the hospital's PACS (Orthanc)",
            log_path=folder / "orthanc.log",
            folder=folder,
            program=program,
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)
        return self._client

    def start(self, modalities: Mapping[str, tuple[str, str, int]]) -> OrthancProcess:
        """Start it; ``modalities`` (name → AE title, host, port) may receive C-MOVEs."""
        storage = str((self.folder / "storage").resolve())
        config = {
            "Name": f"havenet-demo-{self.http_port}",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "Plugins": [],
            "LuaScripts": [],
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True,
            "DicomModalities": {name: list(target) for name, target in modalities.items()},
            "DicomModalitiesInDatabase": False,
            "SaveJobs": False,
            "StableAge": 2,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        config_path = self.folder / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=1))
        self.spawn(
            [str(self.program), str(config_path.resolve())],
            {**os.environ, **PEER_ENV},
            cwd=self.folder,
        )
        self.wait_ready(lambda: _answers(self.client, "/system"), seconds=30.0)
        return self

    def instances(self) -> int:
        answer = self.client.get("/statistics")
        answer.raise_for_status()
        return int(answer.json()["CountInstances"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# -- C-STORE -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    sent: int
    refused: int
    tool: str  # what sent them: DCMTK's storescu, or pynetdicom


def storescu_program() -> Path | None:
    """DCMTK's `storescu`, if installed."""
    found = shutil.which("storescu")
    return Path(found) if found else None


def push(
    files: Sequence[Path], *, port: int, called_ae: str, calling_ae: str, host: str = LOOPBACK
) -> PushResult:
    """Send ``files`` (CT and MR images, Explicit VR Little Endian) over one association, as
    a modality or a PACS pushes a batch of studies: with DCMTK's `storescu` when installed
    (what hospital IT would use), else with pynetdicom's storage SCU."""
    program = storescu_program()
    if program is None:
        return _push_with_pynetdicom(
            files, port=port, called_ae=called_ae, calling_ae=calling_ae, host=host
        )
    run_command(
        [str(program), "-aet", calling_ae, "-aec", called_ae, host, str(port), *map(str, files)],
        env={**os.environ, **PEER_ENV},
        shown=f"storescu -aet {calling_ae} -aec {called_ae} {host} {port} ({len(files)} files)",
    )
    return PushResult(sent=len(files), refused=0, tool="storescu")


def _push_with_pynetdicom(
    files: Sequence[Path], *, port: int, called_ae: str, calling_ae: str, host: str
) -> PushResult:
    """pynetdicom's reactor thread may take a C-STORE response meant for the sender (a race
    that shows under heavy load): the sender then hears nothing, the association is aborted,
    and the rest is sent again on a new one (the node counts a file sent twice once)."""
    ae = AE(ae_title=calling_ae)
    ae.dimse_timeout = PUSH_ANSWER_SECONDS
    for sop_class in STORAGE_CLASSES:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    pending = list(files)
    sent = refused = 0
    for _attempt in range(PUSH_ATTEMPTS):
        association = ae.associate(host, port, ae_title=called_ae)
        if not association.is_established:
            raise AssociationRefused(called_ae, host, port)
        _no_delay(association)
        try:
            while pending:
                status = association.send_c_store(pending[0])
                if not status:  # no answer in time: the association was aborted
                    break
                # 0x0000 success; 0xB000, 0xB006, 0xB007 stored with a warning.
                if int(status.Status) in (0x0000, 0xB000, 0xB006, 0xB007):
                    sent += 1
                else:
                    refused += 1
                pending.pop(0)
        finally:
            if association.is_established:
                association.release()
        if not pending:
            return PushResult(sent=sent, refused=refused, tool="pynetdicom")
    raise StepTimedOut(f"C-STORE to {called_ae}", PUSH_ANSWER_SECONDS * PUSH_ATTEMPTS)


def _no_delay(association: Association) -> None:
    """Send each PDU at once: with Nagle's algorithm, a C-STORE's command and data segments
    wait on the peer's delayed ACK (~18 instead of hundreds of files/s into Orthanc)."""
    transport = association.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
