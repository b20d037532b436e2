"""Release benchmark: a cohort released from a node to the hub on loopback, end to end.

Run with the project's interpreter, from anywhere::

    .venv/bin/python benchmarks/release/run.py [--megabytes 512] [--file-megabytes 2]

A real hub and a real node (``havenet hub serve``, ``havenet node serve``) run on free
loopback ports with SQLite. The node's store is filled with stage-1 CT instances of random
pixels (so no two chunks are equal). Then, twice:

1. *end to end*: a data request, approval through the node's API (stage 2 and its leak
   check; the command line would add its own start-up, a few seconds of imports), upload of
   every chunk and signed manifest, and the hub's verification (signature, hashes, pydicom,
   PHI scan) — timed from approval to the hub showing ``released``;
2. *resume*: the same volume to another project, approved on the node's command line, the
   node SIGKILLed once the hub holds half of the chunks, started again — timed from the
   restart to ``released``, with the number of chunks the node sent against the number the
   hub holds.

Prints MB/s (stage-1 input megabytes per second), the CPU seconds each part used (the
machine may be shared: the whole machine's busy CPU seconds, MB per CPU-second and the load
average say how much), and the resume figures. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy  # noqa: E402
import psutil  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from node.release.models import OutboxItem, ReleaseRequest  # noqa: E402
from node.settings import load  # noqa: E402
from node.store.db import make_engine, make_sessionmaker, migrate, transaction  # noqa: E402
from tests.conftest import ct_dataset  # noqa: E402
from tests.integration.hubs import API_TOKEN, Hub, NodeProcess, havenet  # noqa: E402
from tests.integration.peers import free_port  # noqa: E402
from tests.integration.test_federation import enroll_in_process  # noqa: E402
from tests.unit.node.test_qa import store_instance  # noqa: E402


def fill(node: NodeProcess, megabytes: int, file_megabytes: float) -> tuple[list[str], int]:
    """Stage-1 CTs of random pixels, one study per 50 files; their study UIDs and bytes."""
    rows = int((file_megabytes * 1e6 / 2) ** 0.5)
    files = max(1, int(megabytes / file_megabytes))
    settings = load(None, data_dir=node.data_dir)
    migrate(settings.database)
    engine = make_engine(settings.database)
    rng = numpy.random.default_rng(7)
    uids: set[str] = set()
    size = 0
    try:
        sessions = make_sessionmaker(engine)
        for number in range(files):
            study = number // 50
            ds = ct_dataset(
                patient_id=f"MRN{study:06d}",
                study_uid=f"1.2.826.0.1.3680043.10.9.{study}",
                series_uid=f"1.2.826.0.1.3680043.10.9.{study}.1",
                sop_uid=f"1.2.826.0.1.3680043.10.9.{study}.1.{number}",
                rows=rows,
            )
            ds.PixelData = rng.integers(0, 4096, rows * rows, numpy.uint16).tobytes()
            with transaction(sessions) as session:
                stored = store_instance(session, settings.data_dir, ds)
                uids.add(stored.series.study.study_uid)
                size += stored.size
    finally:
        engine.dispose()
    return sorted(uids), size


def state(hub: Hub, token: str, request_id: int) -> str:
    answer = hub.api("GET", f"/api/v1/requests/{request_id}", token).json()
    found: str = answer["targets"][0]["state"]
    return found


def wait_for(check: object, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.2)  # polling the hub costs it CPU the release would use


def request(hub: Hub, token: str, project: str, uids: list[str], node: NodeProcess) -> int:
    body = {"project": project, "selection": {"study_uids": uids}, "nodes": ["bench"]}
    created = hub.api("POST", "/api/v1/requests", token, json=body)
    created.raise_for_status()
    request_id: int = created.json()["id"]
    wait_for(lambda: str(request_id) in node.cli("requests", "list").stdout)
    return request_id


def chunk_count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def chunks_sent(node: NodeProcess, hub_request_id: int) -> int:
    engine = make_engine(load(None, data_dir=node.data_dir).database)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            query = (
                select(func.sum(OutboxItem.chunks_sent))
                .join(ReleaseRequest, OutboxItem.request_id == ReleaseRequest.id)
                .where(ReleaseRequest.hub_request_id == hub_request_id)
            )
            return int(session.execute(query).scalar_one() or 0)
    finally:
        engine.dispose()


class BenchNode(NodeProcess):
    """The node with its API on a port the benchmark knows (approval goes through it)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.api_port = free_port()

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
                str(self.api_port),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def approve(self, request_id: int) -> None:
        base = f"http://127.0.0.1:{self.api_port}"
        wait_for(lambda: _answers(f"{base}/health"), timeout=60)
        httpx.post(
            f"{base}/api/v1/requests/{request_id}/approve",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=3600,
        ).raise_for_status()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


class CpuClock:
    """CPU seconds the release uses: the hub's process; the node's with its descendants
    (stage 2's worker processes are grandchildren whose times no parent collects, so they
    are sampled while they run: the last fraction of a second of each may be missed); and
    the whole machine's, which includes whatever else the machine runs."""

    def __init__(self, hub: Hub, node: NodeProcess) -> None:
        assert hub.process is not None and node.process is not None
        self.hub = psutil.Process(hub.process.pid)
        self.node = psutil.Process(node.process.pid)
        self.hub_start = self._cpu(self.hub)
        self.node_start = self._cpu(self.node)
        self.machine = self._busy()
        self.descendants: dict[int, float] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            for child in self.node.children(recursive=True):
                try:
                    self.descendants[child.pid] = self._cpu(child)
                except psutil.Error:
                    continue  # ended between the listing and the reading

    def seconds(self) -> dict[str, float]:
        self._stop.set()
        self._sampler.join()
        return {
            "hub": self._cpu(self.hub) - self.hub_start,
            "node": self._cpu(self.node) - self.node_start,
            "workers": sum(self.descendants.values()),
            "machine": self._busy() - self.machine,
        }


def end_to_end(hub: Hub, admin: str, node: BenchNode, uids: list[str], size: int) -> None:
    first = request(hub, admin, "bench-a", uids, node)
    load = os.getloadavg()[0]
    cpu = CpuClock(hub, node)
    started = time.perf_counter()
    node.approve(first)
    stage2 = time.perf_counter() - started
    wait_for(lambda: state(hub, admin, first) == "released")
    seconds = time.perf_counter() - started
    upload = seconds - stage2
    used = cpu.seconds()
    print(f"end to end: {size / 1e6 / seconds:.1f} MB/s ({seconds:.1f} s; approval with "
          f"stage 2 and leak check {stage2:.1f} s, studies uploading as they are done; "
          f"upload and hub verification after it {upload:.1f} s)")  # fmt: skip
    ours = used["hub"] + used["node"] + used["workers"]
    print(f"cpu: hub {used['hub']:.1f} s, node {used['node']:.1f} s (upload, stage 2's "
          f"dispatch), stage 2 workers {used['workers']:.1f} s = {size / 1e6 / ours:.0f} MB per "
          f"CPU-second; whole machine {used['machine']:.1f} s busy; load average {load:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores)")  # fmt: skip


def resume(hub: Hub, admin: str, node: NodeProcess, uids: list[str], chunks: Path) -> None:
    second = request(hub, admin, "bench-b", uids, node)
    before = chunk_count(chunks)
    node.cli("requests", "approve", str(second))
    expected = len(list((node.data_dir / "store").rglob("*.dcm")))  # a chunk a file
    wait_for(lambda: chunk_count(chunks) - before >= max(1, expected // 2))
    assert node.process is not None
    node.process.kill()
    node.process.wait()
    at_kill = chunk_count(chunks) - before
    started = time.perf_counter()
    node.start()
    wait_for(lambda: state(hub, admin, second) == "released")
    resumed = time.perf_counter() - started
    held = chunk_count(chunks) - before
    sent = chunks_sent(node, second)
    print(f"resume: node killed with {at_kill} of {held} chunks at the hub; restarted and "
          f"released in {resumed:.1f} s; chunks sent in all {sent} "
          f"(re-sent: {max(0, sent - held)})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=512)
    parser.add_argument("--file-megabytes", type=float, default=2.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="havenet-release-bench-"))
    hub = Hub(work / "hub").start()
    node = BenchNode(work / "node")
    try:
        admin = hub.cli("user", "add", "admin", "--role", "admin")
        for project in ("bench-a", "bench-b"):
            hub.api("POST", "/api/v1/projects", admin, json={"name": project}).raise_for_status()
        created = hub.api("POST", "/api/v1/nodes", admin, json={"name": "bench"})
        enroll_in_process(node, hub, created.json()["enrollment_token"])
        started = time.perf_counter()
        uids, size = fill(node, args.megabytes, args.file_megabytes)
        os.sync()  # the store is on disk before a release, as in a hospital; not timed
        print(f"store: {size / 1e6:.0f} MB of stage-1 CT in {len(uids)} studies "
              f"({time.perf_counter() - started:.0f} s to make)")  # fmt: skip
        node.start()
        chunks = hub.folder / "storage" / "chunks"

        end_to_end(hub, admin, node, uids, size)
        resume(hub, admin, node, uids, chunks)
    except httpx.HTTPError as exc:
        raise SystemExit(f"the hub failed: {exc}") from None
    finally:
        node.stop()
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
