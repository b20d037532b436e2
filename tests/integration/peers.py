"""Real peers for integration tests: an Orthanc PACS, the DCMTK tools and a PostgreSQL cluster.

Every peer listens on free loopback ports and keeps its files in a folder of its own, so tests
can run in parallel (pytest-xdist). Each one is stopped by its fixture, and by `atexit` as a
last resort. See README.md beside this file and /work/shared/PEERS.md.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, NoReturn, Protocol, Self

import httpx
import pytest

LOOPBACK = "127.0.0.1"
REQUIRE_PEERS_ENV = "HAVENET_REQUIRE_PEERS"
PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
# Debian puts Orthanc in /usr/sbin, which is not on every user's PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
# DCMTK and Orthanc wait on delayed ACKs for every C-STORE without it (see PEERS.md).
PEER_ENV = {"TCP_NODELAY": "1"}

PathArg = str | os.PathLike[str]
#: A DICOM modality as Orthanc's `DicomModalities` takes it: (AE title, host, port).
Modality = tuple[str, str, int]


class PeerError(RuntimeError):
    """A peer could not be started, reached or stopped."""


class PeerTimeout(PeerError, TimeoutError):
    """A peer did not answer in time."""


class PeerMissing(PeerError):
    """A peer's programs are not installed."""

    def __init__(self, peer: str, package: str, missing: Sequence[str]) -> None:
        self.peer = peer
        self.package = package
        self.missing = tuple(missing)
        super().__init__(
            f"{peer} is not installed (missing: {', '.join(self.missing)}); "
            f"install the Debian package: apt-get install -y --no-install-recommends {package}"
        )


# ---------------------------------------------------------------------------------------------
# Ports, processes, binaries


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nothing listens on right now (the kernel's pick for `host:0`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int,
    host: str = LOOPBACK,
    *,
    timeout: float = 10.0,
    what: str = "a peer",
    alive: Callable[[], bool] | None = None,
) -> None:
    """Wait until `host:port` accepts connections.

    Raises `PeerTimeout` after `timeout` seconds, or `PeerError` as soon as `alive()` (the
    process that should listen there is still running) turns false.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_open(port, host, timeout=min(0.5, timeout)):
            return
        if alive is not None and not alive():
            raise PeerError(f"{what} exited before it listened on {host}:{port}")
        if time.monotonic() >= deadline:
            raise PeerTimeout(
                f"{what}: nothing accepted TCP connections on {host}:{port} within {timeout:.1f} s"
            )
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")"
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def find_binary(name: str, search: Iterable[PathArg] = ()) -> Path | None:
    """`name` in the given folders, then on PATH, then in the sbin folders."""
    for folder in search:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(_EXTRA_BIN_DIRS)
    found = shutil.which(name, path=path)
    return Path(found) if found else None


def find_binaries(
    peer: str, package: str, names: Iterable[str], search: Iterable[PathArg] = ()
) -> dict[str, Path]:
    """Every program in `names`, or `PeerMissing` naming the Debian package to install."""
    folders = list(search)
    found = {name: find_binary(name, folders) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise PeerMissing(peer, package, missing)
    return {name: path for name, path in found.items() if path is not None}


def peers_required() -> bool:
    """Whether a missing peer must fail the test (CI sets HAVENET_REQUIRE_PEERS=1)."""
    return os.environ.get(REQUIRE_PEERS_ENV, "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(missing: PeerMissing) -> NoReturn:
    """Skip the test for a missing peer, or fail it when HAVENET_REQUIRE_PEERS=1."""
    if peers_required():
        pytest.fail(f"{missing} ({REQUIRE_PEERS_ENV}=1: a missing peer is a failure)")
    pytest.skip(str(missing))


def _peer_env() -> dict[str, str]:
    return {**os.environ, **PEER_ENV}


_libc: ctypes.CDLL | None = None


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the starting thread dies (Linux only)."""
    if _libc is not None:
        _libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)


# ---------------------------------------------------------------------------------------------
# Last resort: whatever is still running when the interpreter exits is stopped.


class _Stoppable(Protocol):
    def emergency_stop(self) -> None: ...


_LEFTOVERS: list[_Stoppable] = []


def _register(peer: _Stoppable) -> None:
    _LEFTOVERS.append(peer)


def _unregister(peer: _Stoppable) -> None:
    with contextlib.suppress(ValueError):
        _LEFTOVERS.remove(peer)


@atexit.register
def _stop_leftovers() -> None:
    while _LEFTOVERS:
        peer = _LEFTOVERS.pop()
        with contextlib.suppress(Exception):
            peer.emergency_stop()


# ---------------------------------------------------------------------------------------------
# Orthanc


def orthanc_binary() -> Path:
    """The Orthanc program, or `PeerMissing`."""
    return find_binaries("Orthanc", "orthanc", ["Orthanc"])["Orthanc"]


class Orthanc:
    """A running Orthanc PACS on free loopback ports, with its files in `workdir`.

    Start it with `Orthanc.start(...)`; use it as a context manager or call `stop()`.
    """

    host = LOOPBACK

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        workdir: Path,
        config_path: Path,
        log_path: Path,
        http_port: int,
        dicom_port: int,
        aet: str,
        name: str,
    ) -> None:
        self.process = process
        self.workdir = workdir
        self.config_path = config_path
        self.log_path = log_path
        self.http_port = http_port
        self.dicom_port = dicom_port
        self.aet = aet
        self.name = name
        self.url = f"http://{LOOPBACK}:{http_port}"
        # trust_env=False: a proxy from the environment must never see loopback traffic.
        self.client = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)

    @staticmethod
    def config(
        workdir: Path,
        *,
        name: str,
        http_port: int,
        dicom_port: int,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Modality] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> dict[str, object]:
        """The configuration `start` writes: absolute paths, no plugins, open to any AE."""
        storage = str((workdir / "storage").resolve())
        config: dict[str, object] = {
            "Name": name,
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,  # HTTP from loopback only (DICOM has no such option)
            "AuthenticationEnabled": False,
            "HttpDescribeErrors": True,
            "DicomServerEnabled": True,
            "DicomAet": aet,
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            # C-FIND/C-GET/C-MOVE from AEs not in DicomModalities are refused without these.
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {
                key: [m_aet, m_host, m_port]
                for key, (m_aet, m_host, m_port) in (modalities or {}).items()
            },
            "DicomModalitiesInDatabase": False,
            "OrthancPeers": {},
            "StableAge": 2,
            "SaveJobs": False,
            "HttpThreadsCount": 10,
            "DicomThreadsCount": 4,
        }
        config.update(overrides or {})
        return config

    @classmethod
    def start(
        cls,
        workdir: PathArg,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Modality] | None = None,
        overrides: Mapping[str, object] | None = None,
        binary: PathArg | None = None,
        timeout: float = 20.0,
        attempts: int = 3,
        die_with_parent: bool = True,
    ) -> Orthanc:
        """Start Orthanc with a config written into `workdir`; wait until it answers.

        `modalities` maps a name to (AE title, host, port), e.g. a node's storage SCP for
        C-MOVE. `overrides` are merged last into the configuration. A port taken between
        `free_port()` and Orthanc's bind is retried with new ports (`attempts` in all).
        `die_with_parent` kills Orthanc if the thread that started it dies (e.g. a crashed
        xdist worker), so start it from a thread that lives as long as it should.
        Raises `PeerMissing` if Orthanc is not installed, `PeerError` with the log's tail if
        it does not start.
        """
        folder = Path(workdir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        program = Path(binary) if binary is not None else orthanc_binary()
        last_error: PeerError | None = None
        for attempt in range(1, attempts + 1):
            try:
                return cls._start_once(
                    folder,
                    program,
                    attempt=attempt,
                    aet=aet,
                    modalities=modalities,
                    overrides=overrides,
                    timeout=timeout,
                    die_with_parent=die_with_parent,
                )
            except _PortTaken as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    @classmethod
    def _start_once(
        cls,
        folder: Path,
        program: Path,
        *,
        attempt: int,
        aet: str,
        modalities: Mapping[str, Modality] | None,
        overrides: Mapping[str, object] | None,
        timeout: float,
        die_with_parent: bool,
    ) -> Orthanc:
        http_port, dicom_port = free_port(), free_port()
        while dicom_port == http_port:
            dicom_port = free_port()
        name = f"havenet-test-{uuid.uuid4().hex[:12]}"
        config_path = folder / "orthanc.json"
        log_path = folder / "orthanc.log"
        config = cls.config(
            folder,
            name=name,
            http_port=http_port,
            dicom_port=dicom_port,
            aet=aet,
            modalities=modalities,
            overrides=overrides,
        )
        config_path.write_text(json.dumps(config, indent=2))
        with log_path.open("ab") as log:
            log.write(f"--- havenet: start attempt {attempt}\n".encode())
            log.flush()
            process = subprocess.Popen(
                [str(program), str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env=_peer_env(),
                preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509
            )
        orthanc = cls(
            process=process,
            workdir=folder,
            config_path=config_path,
            log_path=log_path,
            http_port=http_port,
            dicom_port=dicom_port,
            aet=aet,
            name=name,
        )
        _register(orthanc)
        try:
            orthanc._wait_ready(timeout)
        except BaseException:
            orthanc.kill()
            raise
        return orthanc

    def _wait_ready(self, timeout: float) -> None:
        """Poll /system until this very Orthanc (its unique Name) answers."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.process.wait()
                tail = log_tail(self.log_path)
                error = _PortTaken if "already in use" in tail else PeerError
                raise error(
                    f"Orthanc exited with code {self.process.returncode} while starting "
                    f"(HTTP {self.http_port}, DICOM {self.dicom_port}); "
                    f"log {self.log_path}:\n{tail}"
                )
            with contextlib.suppress(httpx.HTTPError, ValueError):
                answer = self.client.get("/system", timeout=1.0)
                if answer.status_code == 200 and answer.json().get("Name") == self.name:
                    break
                # Another process answering on our port: ours will fail to bind and exit.
            if time.monotonic() >= deadline:
                raise PeerTimeout(
                    f"Orthanc did not answer on {self.url}/system within {timeout:.1f} s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)
        # The DICOM server starts before the HTTP one; check anyway.
        wait_for_port(
            self.dicom_port, timeout=max(1.0, deadline - time.monotonic()), what="Orthanc DICOM"
        )

    # -- use ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def upload(self, path: PathArg, *, skip_rejected: bool = False) -> list[str]:
        """POST a DICOM file, or every file under a folder, to /instances; their Orthanc IDs.

        A file Orthanc rejects (not DICOM, say) raises `PeerError` unless `skip_rejected`.
        """
        root = Path(path)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        if not files:
            raise PeerError(f"nothing to upload at {root}")
        ids: list[str] = []
        for file in files:
            answer = self.client.post(
                "/instances",
                content=file.read_bytes(),
                headers={"Content-Type": "application/dicom"},
            )
            if answer.status_code != 200:
                if skip_rejected:
                    continue
                raise PeerError(
                    f"Orthanc rejected {file}: HTTP {answer.status_code} {answer.text[:500]}"
                )
            ids.append(str(answer.json()["ID"]))
        return ids

    def statistics(self) -> dict[str, object]:
        """GET /statistics."""
        answer = self.client.get("/statistics")
        answer.raise_for_status()
        result: dict[str, object] = answer.json()
        return result

    def instances(self) -> int:
        """How many instances Orthanc holds."""
        return int(str(self.statistics()["CountInstances"]))

    def delete_all(self) -> None:
        """Delete every patient, and so every study, series and instance."""
        answer = self.client.get("/patients")
        answer.raise_for_status()
        for patient in answer.json():
            self.client.delete(f"/patients/{patient}").raise_for_status()

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Declare (or replace) a DICOM modality at run time, e.g. a C-MOVE destination."""
        answer = self.client.put(
            f"/modalities/{name}", json={"AET": aet, "Host": host, "Port": port}
        )
        answer.raise_for_status()

    # -- stop ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask Orthanc to shut down (POST /tools/shutdown, else SIGTERM) without waiting.

        A clean shutdown takes Orthanc 1.10 about 3.5 s, whatever it holds.
        """
        if not self.running:
            return
        try:
            self.client.post("/tools/shutdown", timeout=5.0).raise_for_status()
        except httpx.HTTPError:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()

    def wait_stopped(self, timeout: float = 15.0) -> None:
        """Wait for Orthanc to exit; SIGKILL it if it has not after `timeout` seconds."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        finally:
            self.client.close()
            _unregister(self)

    def stop(self, timeout: float = 15.0) -> None:
        """Shut Orthanc down cleanly and wait; kill it if it takes longer than `timeout`."""
        self.request_stop()
        self.wait_stopped(timeout)

    def kill(self) -> None:
        """SIGKILL Orthanc and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        self.client.close()
        _unregister(self)

    def emergency_stop(self) -> None:
        self.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"Orthanc(aet={self.aet!r}, http={self.url}, dicom={LOOPBACK}:{self.dicom_port}, "
            f"pid={self.pid})"
        )


class _PortTaken(PeerError):
    """Orthanc or PostgreSQL lost the race for a free port; start again with others."""


# ---------------------------------------------------------------------------------------------
# DCMTK


class DcmtkResult(NamedTuple):
    """What a DCMTK tool did: its exit code and its stdout and stderr, merged."""

    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


#: C-FIND/C-MOVE/C-GET keys: {"QueryRetrieveLevel": "STUDY", "PatientName": ""} or
#: ["QueryRetrieveLevel=STUDY", "PatientName"] (a bare key asks for the attribute back).
Keys = Mapping[str, str] | Sequence[str]


class Dcmtk:
    """Thin wrappers around the DCMTK network tools, run with TCP_NODELAY=1 and a timeout.

    Each returns a `DcmtkResult` (exit code, output); a tool still running after `timeout`
    seconds is killed and raises `PeerTimeout`.
    """

    TOOLS = ("echoscu", "storescu", "findscu", "movescu", "getscu")
    PACKAGE = "dcmtk"

    def __init__(self, binaries: Mapping[str, Path], *, timeout: float = 60.0) -> None:
        self.binaries = dict(binaries)
        self.timeout = timeout

    @classmethod
    def find(cls, *, timeout: float = 60.0) -> Dcmtk:
        """The installed tools, or `PeerMissing` naming the Debian package."""
        return cls(find_binaries("DCMTK", cls.PACKAGE, cls.TOOLS), timeout=timeout)

    def run(
        self,
        tool: str,
        args: Sequence[PathArg],
        *,
        timeout: float | None = None,
        cwd: PathArg | None = None,
    ) -> DcmtkResult:
        """Run one tool with `args`; its exit code and merged output."""
        program = self.binaries.get(tool) or find_binary(tool)
        if program is None:
            raise PeerMissing("DCMTK", self.PACKAGE, [tool])
        command = [str(program), *(os.fspath(arg) for arg in args)]
        limit = self.timeout if timeout is None else timeout
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=_peer_env(),
                cwd=cwd,
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            partial = (exc.output or b"").decode(errors="replace")
            raise PeerTimeout(
                f"{shlex.join(command)} still running after {limit:.1f} s (killed); "
                f"output so far:\n{partial[-3000:]}"
            ) from exc
        return DcmtkResult(done.returncode, done.stdout.decode(errors="replace"))

    @staticmethod
    def key_args(keys: Keys) -> list[str]:
        """`-k` options for `keys`."""
        items = (
            [f"{key}={value}" if value != "" else key for key, value in keys.items()]
            if isinstance(keys, Mapping)
            else list(keys)
        )
        return [arg for item in items for arg in ("-k", item)]

    @classmethod
    def _query_args(cls, model: str, aet: str, aec: str, keys: Keys) -> list[PathArg]:
        """-S/-P/-O/-W (study, patient, patient-study only, worklist), AE titles, keys."""
        if model not in {"S", "P", "O", "W"}:
            raise ValueError(f"query model {model!r} is not one of S, P, O, W")
        return [f"-{model}", "-aet", aet, "-aec", aec, *cls.key_args(keys)]

    def echoscu(
        self,
        host: str,
        port: int,
        aet: str = "HAVENET",
        aec: str = "ANY-SCP",
        *,
        extra_args: Sequence[PathArg] = (),
        timeout: float | None = None,
    ) -> DcmtkResult:
        """C-ECHO."""
        return self.run(
            "echoscu", ["-aet", aet, "-aec", aec, *extra_args, host, str(port)], timeout=timeout
        )

    def storescu(
        self,
        host: str,
        port: int,
        files: PathArg | Sequence[PathArg],
        aet: str = "HAVENET",
        aec: str = "ANY-SCP",
        *,
        extra_args: Sequence[PathArg] = (),
        timeout: float | None = None,
    ) -> DcmtkResult:
        """C-STORE files; a folder is sent whole (`+sd +r`).

        storescu proposes only uncompressed syntaxes unless `extra_args` says otherwise
        (`-xs` JPEG lossless, `-xr` RLE, ...: one family per run).
        """
        paths = [files] if isinstance(files, str | os.PathLike) else list(files)
        if not paths:
            raise ValueError("storescu needs at least one file or folder")
        scan = ["+sd", "+r"] if any(Path(p).is_dir() for p in paths) else []
        return self.run(
            "storescu",
            ["-aet", aet, "-aec", aec, *scan, *extra_args, host, str(port), *paths],
            timeout=timeout,
        )

    def findscu(
        self,
        host: str,
        port: int,
        keys: Keys,
        aet: str = "HAVENET",
        aec: str = "ANY-SCP",
        *,
        model: str = "S",
        extra_args: Sequence[PathArg] = (),
        timeout: float | None = None,
    ) -> DcmtkResult:
        """C-FIND (study root by default).

        Runs with `-v`: DCMTK 3.6.7 prints the responses only in verbose mode.
        """
        args = ["-v", *self._query_args(model, aet, aec, keys), *extra_args, host, str(port)]
        return self.run("findscu", args, timeout=timeout)

    def movescu(
        self,
        host: str,
        port: int,
        keys: Keys,
        aet: str = "HAVENET",
        aec: str = "ANY-SCP",
        *,
        move_destination: str | None = None,
        receive_port: int | None = None,
        output_dir: PathArg | None = None,
        model: str = "S",
        extra_args: Sequence[PathArg] = (),
        timeout: float | None = None,
    ) -> DcmtkResult:
        """C-MOVE to `move_destination` (default: `aet`).

        With `receive_port`, movescu runs its own storage SCP there (`--port`) and writes what
        it receives to `output_dir`; the peer must know `move_destination` at that port.
        """
        args = [*self._query_args(model, aet, aec, ()), "-aem", move_destination or aet]
        if receive_port is not None:
            args += ["--port", str(receive_port)]
        if output_dir is not None:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            args += ["-od", output_dir]
        args += [*self.key_args(keys), *extra_args, host, str(port)]
        return self.run("movescu", args, timeout=timeout)

    def getscu(
        self,
        host: str,
        port: int,
        keys: Keys,
        aet: str = "HAVENET",
        aec: str = "ANY-SCP",
        *,
        output_dir: PathArg | None = None,
        model: str = "S",
        extra_args: Sequence[PathArg] = (),
        timeout: float | None = None,
    ) -> DcmtkResult:
        """C-GET; what arrives is written to `output_dir` (default: the current folder)."""
        args = self._query_args(model, aet, aec, ())
        if output_dir is not None:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            args += ["-od", output_dir]
        args += [*self.key_args(keys), *extra_args, host, str(port)]
        return self.run("getscu", args, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# PostgreSQL

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PG_PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb", "dropdb")
_PG_SERVER_USER = "postgres"
_PG_PREFIX = "havenet-pg-"
_PG_OWNER_FILE = "havenet-owner.pid"


def postgres_binaries(bin_dir: PathArg = PG_BIN_DIR) -> dict[str, Path]:
    """initdb, pg_ctl, postgres, createdb and dropdb from `bin_dir`, or `PeerMissing`."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in _PG_PROGRAMS:
        path = Path(bin_dir) / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path
        else:
            missing.append(str(path))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_PG_SERVER_USER)
        except KeyError:
            missing.append(f"user {_PG_SERVER_USER!r}")
        if find_binary("su", ["/usr/bin", "/bin"]) is None:
            missing.append("su")
    if missing:
        raise PeerMissing("PostgreSQL 15", "postgresql", missing)
    return found


class Postgres:
    """A throwaway PostgreSQL 15 cluster on a free loopback port, trust authentication.

    As root the server runs as the `postgres` user (PostgreSQL refuses root) in a folder it
    owns under the system temp folder (pytest's own tmp folders are closed to other users);
    otherwise as the current user. `url` is an SQLAlchemy URL for psycopg 3.
    """

    host = LOOPBACK

    def __init__(
        self,
        *,
        workdir: Path,
        port: int,
        user: str,
        dbname: str,
        binaries: Mapping[str, Path],
    ) -> None:
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.socket_dir = workdir
        self.log_path = workdir / "postgres.log"
        self.port = port
        self.user = user
        self.dbname = dbname
        self.binaries = dict(binaries)
        self.pid: int | None = None

    @property
    def url(self) -> str:
        """postgresql+psycopg://USER@127.0.0.1:PORT/DBNAME, the database made at start."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{LOOPBACK}:{self.port}/{dbname}"

    @classmethod
    def start(
        cls,
        *,
        base_dir: PathArg | None = None,
        bin_dir: PathArg = PG_BIN_DIR,
        user: str = "havenet",
        dbname: str = "havenet",
        timeout: float = 60.0,
        attempts: int = 3,
    ) -> Postgres:
        """initdb a cluster in a new folder under `base_dir`, start it, create `dbname`.

        Raises `PeerMissing` if PostgreSQL 15 is not installed, `PeerError` with the log's
        tail if it does not start.
        """
        for name in (user, dbname):
            _check_identifier(name)
        binaries = postgres_binaries(bin_dir)
        sweep_stale_clusters(base_dir, bin_dir)
        workdir = Path(tempfile.mkdtemp(prefix=_PG_PREFIX, dir=base_dir)).resolve()
        (workdir / _PG_OWNER_FILE).write_text(str(os.getpid()))
        if os.geteuid() == 0:
            shutil.chown(workdir, user=_PG_SERVER_USER)
        pg = cls(workdir=workdir, port=0, user=user, dbname=dbname, binaries=binaries)
        _register(pg)
        try:
            pg._initdb(timeout)
            for attempt in range(1, attempts + 1):
                pg.port = free_port()
                try:
                    pg._pg_ctl_start(timeout)
                    break
                except _PortTaken:
                    if attempt == attempts:
                        raise
            wait_for_port(pg.port, timeout=timeout, what="PostgreSQL")
            pg.create_database(dbname)
        except BaseException:
            pg.emergency_stop()
            raise
        return pg

    def _as_server_user(self, command: Sequence[str]) -> list[str]:
        if os.geteuid() != 0:
            return list(command)
        su = find_binary("su", ["/usr/bin", "/bin"]) or Path("su")
        return [str(su), "-s", "/bin/sh", _PG_SERVER_USER, "-c", shlex.join(command)]

    def _server_command(
        self, command: Sequence[str], timeout: float, what: str
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                self._as_server_user(command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PeerTimeout(
                f"PostgreSQL {what} still running after {timeout:.1f} s; "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            ) from exc

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(self.binaries["pg_ctl"]), "-D", str(self.datadir), *args]

    def _initdb(self, timeout: float) -> None:
        # fmt: off
        command = [
            str(self.binaries["initdb"]), "-D", str(self.datadir), "-A", "trust",
            "-U", self.user, "-E", "UTF8", "--no-locale", "--no-sync",
        ]
        # fmt: on
        done = self._server_command(command, timeout, "initdb")
        if done.returncode != 0:
            raise PeerError(
                f"initdb failed with code {done.returncode}:\n"
                f"{done.stdout.decode(errors='replace')[-3000:]}"
            )

    def _pg_ctl_start(self, timeout: float) -> None:
        # fmt: off
        options = [
            "-p", str(self.port), "-k", str(self.socket_dir),
            "-c", f"listen_addresses={LOOPBACK}",
            # A throwaway cluster: durability only costs time.
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]
        command = self._pg_ctl(
            "-o", shlex.join(options), "-l", str(self.log_path),
            "-w", "-t", str(max(1, int(timeout))), "start",
        )
        # fmt: on
        done = self._server_command(command, timeout + 5, "pg_ctl start")
        if done.returncode == 0:
            self.pid = self._read_pid()
            return
        tail = log_tail(self.log_path)
        error = _PortTaken if "already in use" in tail else PeerError
        raise error(
            f"pg_ctl start failed with code {done.returncode} on port {self.port}:\n"
            f"{done.stdout.decode(errors='replace')[-2000:]}\nlog {self.log_path}:\n{tail}"
        )

    def _read_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def _client(self, program: str, args: Sequence[str], timeout: float = 30.0) -> None:
        connect = ["-h", LOOPBACK, "-p", str(self.port), "-U", self.user]
        command = [str(self.binaries[program]), *connect, *args]
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise PeerError(
                f"{shlex.join(command)} failed with code {done.returncode}: "
                f"{done.stdout.decode(errors='replace')[-2000:]}"
            )

    def create_database(self, dbname: str) -> str:
        """Create an empty database owned by `user`; its SQLAlchemy URL."""
        _check_identifier(dbname)
        self._client("createdb", ["--template=template0", dbname])
        return self.url_for(dbname)

    def drop_database(self, dbname: str) -> None:
        """Drop a database, closing whatever connections are still open to it."""
        _check_identifier(dbname)
        self._client("dropdb", ["--if-exists", "--force", dbname])

    @property
    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """pg_ctl stop -m fast; kill the postmaster if that fails; remove the folder."""
        try:
            if self.pid is not None and pid_alive(self.pid):
                self._pg_ctl_stop("fast", timeout)
                if not wait_pid_gone(self.pid, timeout):
                    self._kill()
        finally:
            self._cleanup()

    def _pg_ctl_stop(self, mode: str, timeout: float) -> None:
        command = self._pg_ctl("-m", mode, "-w", "-t", str(max(1, int(timeout))), "stop")
        with contextlib.suppress(PeerError):
            self._server_command(command, timeout + 5, "pg_ctl stop")

    def _kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)
            wait_pid_gone(self.pid, 5.0)

    def _cleanup(self) -> None:
        _unregister(self)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def emergency_stop(self) -> None:
        try:
            if self.pid is None:
                self.pid = self._read_pid()
            if self.pid is not None and pid_alive(self.pid):
                self._pg_ctl_stop("immediate", 10.0)
                if not wait_pid_gone(self.pid, 10.0):
                    self._kill()
        finally:
            self._cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Postgres(url={self.url!r}, pid={self.pid}, workdir={str(self.workdir)!r})"


def sweep_stale_clusters(base_dir: PathArg | None = None, bin_dir: PathArg = PG_BIN_DIR) -> int:
    """Stop and remove clusters left by test processes that died (SIGKILL, OOM); how many.

    A cluster belongs to the process whose pid is in its folder: those still running are
    left alone, so parallel sessions and xdist workers never touch each other's clusters.
    """
    swept = 0
    for workdir in Path(base_dir or tempfile.gettempdir()).glob(f"{_PG_PREFIX}*"):
        try:
            owner = int((workdir / _PG_OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being made
        if pid_alive(owner):
            continue
        leftover = Postgres(
            workdir=workdir,
            port=0,
            user="havenet",
            dbname="havenet",
            binaries={"pg_ctl": Path(bin_dir) / "pg_ctl"},
        )
        leftover.emergency_stop()
        swept += 1
    return swept


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain lower-case PostgreSQL identifier")
