"""A real hub and real nodes as processes (`havenet hub serve`, `havenet node serve`) on free
loopback ports, each with its own data folder and database; always stopped by their owner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from node.store.correspondence import new_key
from tests.integration.peers import free_port, log_tail

HUB_SECRET = "hub-secret-for-federation-tests-0123456789"
SITE_SECRET = "site-secret-for-federation-tests-0123456789"
API_TOKEN = "api-token-for-federation-tests-0123456789"
# Short waits keep the tests fast: a node polls for 1 s, retries after 0.2 … 1 s.
NODE_FEDERATION_ENV = {
    "HAVENET_NODE_HUB_POLL_WAIT_SECONDS": "1",
    "HAVENET_NODE_HUB_RETRY_MIN_SECONDS": "0.2",
    "HAVENET_NODE_HUB_RETRY_MAX_SECONDS": "1",
    "HAVENET_NODE_WORKERS": "1",
}


def havenet() -> list[str]:
    script = Path(sys.executable).with_name("havenet")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from compose.cli import main; main()"]


def _stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Hub:
    folder: Path
    database_url: str = ""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        values = {
            **os.environ,
            "HAVENET_HUB_SECRET": HUB_SECRET,
            "HAVENET_HUB_DATA_DIR": str(self.folder),
            "HAVENET_HUB_POLL_RECHECK_SECONDS": "0.5",
            "HAVENET_HUB_ONTOLOGY_AT_START": "false",  # the tests that need it load it
        }
        if self.database_url:
            values["HAVENET_HUB_DATABASE_URL"] = self.database_url
        return values

    def cli(self, *args: str) -> str:
        """Run `havenet hub ARGS`; its standard output (a token, JSON)."""
        done = subprocess.run(
            [*havenet(), "hub", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"havenet hub {' '.join(args)}: {done.stderr}")
        return done.stdout.strip()

    def start(self) -> Hub:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "hub.log").open("wb") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [*havenet(), "hub", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the hub exited:\n{log_tail(self.folder / 'hub.log')}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("the hub did not answer /health in time")

    def stop(self) -> None:
        _stop(self.process)

    def api(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)


@dataclass
class NodeProcess:
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    correspondence_key: str = field(default_factory=new_key)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **NODE_FEDERATION_ENV,
            "HAVENET_NODE_SITE_SECRET": SITE_SECRET,
            "HAVENET_NODE_API_TOKEN": API_TOKEN,
            "HAVENET_NODE_CORRESPONDENCE_KEY": self.correspondence_key,
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*havenet(), "node", *args, "--data-dir", str(self.data_dir)],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"havenet node {' '.join(args)}: {done.stderr}")
        return done

    def enroll(self, hub: Hub, token: str) -> None:
        self.cli("enroll", hub.url, token)

    def start(self) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "node.log").open("ab") as log:
            self.process = self._serve(log)
        return self

    def _serve(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                *havenet(),
                "node",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--dicom-port",
                str(free_port()),
                "--api-port",
                str(free_port()),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        _stop(self.process)

    def log(self) -> str:
        return log_tail(self.data_dir / "node.log", 60)
