"""Ingest benchmark: storescu pushing the same corpus into the node and into Orthanc.

Run with the project's interpreter, from anywhere::

    .venv/bin/python benchmarks/ingest/run.py [--small 2000] [--large 300] [--repeat 2]

Two corpora from ``compose.synthetic.dicom`` (CT/MR, realistic fake PHI, 16-bit pixels):
``--small`` files of 128x128 (~36 KB) and ``--large`` slices of 512x512 (~520 KB). For each
one, in the same run and alternately:

* Orthanc (Debian package), plain storage, started with a fresh folder: the time is from
  storescu's start to its exit (Orthanc has stored an instance when it acknowledges it);
* the node (``Ingest`` + ``StorageServer``, stage 1 included, ``--workers`` processes) in a
  process of its own with a fresh data folder: the time is from storescu's start until the
  node has pseudonymized and stored the last instance (its rows committed), which the node
  process reports. The time storescu took (until the last acknowledgement) is shown too.

Both receive with one association from one storescu (``TCP_NODELAY=1``), as a PACS pushing a
study does. The node's memory is the peak summed RSS of its process tree (the node, its
workers, the fork server) sampled every 20 ms; "end" is the same sum when the last instance
was stored. "CPU ms/file" is the processor time each receiver's process tree spent per
instance (user + system, from its start of the push to its end): unlike the rates, it hardly
depends on what else the machine runs, so it is the figure to compare across runs. Prints a
table; asserts nothing. Needs ``dcmtk`` and ``orthanc``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from compose.synthetic.dicom import generate_corpus  # noqa: E402
from tests.integration.peers import Orthanc, free_port  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "ingest"
MB = 1e6
NODE_AE = "HAVENET"

_NODE = textwrap.dedent(
    """
    import logging, os, sys, threading, time
    from pathlib import Path
    from node.settings import NodeSettings
    from node.store.correspondence import new_key
    from node.store.db import make_engine, make_sessionmaker, migrate
    from node.ingest.service import Ingest
    from node.dicom.scp import StorageServer

    def main():
        logging.basicConfig(level=logging.WARNING)
        data_dir = Path(sys.argv[1])
        port, expected, workers = (int(a) for a in sys.argv[2:5])
        settings = NodeSettings(
            data_dir=data_dir, site_secret=os.urandom(24).hex(), correspondence_key=new_key(),
            dicom_port=port, ae_title="HAVENET", workers=workers, allowed_peers=["BENCH"],
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        migrate(settings.database)
        ingest = Ingest(settings, make_sessionmaker(make_engine(settings.database)))
        ingest.start()
        server = StorageServer(settings, ingest)
        server.start()
        print("listening", flush=True)
        while True:
            counts = ingest.counts()
            done = counts["stored"] + counts["duplicates"] + counts["rejected"]
            if done >= expected and not counts["queued"]:
                print(f"stored {time.monotonic():.6f} {counts}", flush=True)
                break
            time.sleep(0.005)
        sys.stdin.read()  # wait for the driver to say stop
        server.stop()
        ingest.stop()

    if __name__ == "__main__":
        main()
    """
)


@dataclass
class Result:
    seconds: float
    acked_seconds: float
    cpu_seconds: float
    peak_mb: float = 0.0
    end_mb: float = 0.0


class TreeCpu:
    """Processor time of a process and its descendants, including those that ended: sampled
    while they run (the last sample of an ended one counts)."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            for member in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = member.cpu_times()
                    self.last[member.pid] = times.user + times.system
                    for thread in member.threads() if member.pid == self.root.pid else ():
                        self.last[-thread.id] = thread.user_time + thread.system_time

    def begin(self) -> None:
        self.sample()
        self.start = dict(self.last)

    def seconds(self) -> float:
        self.sample()
        # A process's own time includes its live threads'; threads that ended are kept from
        # their last sample, and counted in the process's time already: use the process's.
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.last.items() if pid > 0)


def tree_rss(process: psutil.Process) -> float:
    total = 0
    with contextlib.suppress(psutil.Error):
        for member in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
    return total / MB


def storescu(port: int, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "storescu",
            "-aet",
            "BENCH",
            "-aec",
            "ANY",
            "+sd",
            "+r",
            "127.0.0.1",
            str(port),
            str(folder),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        check=False,
    )


def run_orthanc(folder: Path, files: int, work: Path) -> Result:
    orthanc = Orthanc.start(work / "orthanc", die_with_parent=False)
    try:
        cpu = TreeCpu(psutil.Process(orthanc.process.pid))
        cpu.begin()
        started = time.monotonic()
        done = storescu(orthanc.dicom_port, folder)
        seconds = time.monotonic() - started
        cpu_seconds = cpu.seconds()
        if done.returncode != 0 or orthanc.instances() != files:
            raise RuntimeError(f"Orthanc run failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    finally:
        orthanc.stop()
    return Result(seconds=seconds, acked_seconds=seconds, cpu_seconds=cpu_seconds)


def run_node(folder: Path, files: int, work: Path, workers: int) -> Result:
    port = free_port()
    script = work / "node_receiver.py"
    script.write_text(_NODE)
    node = subprocess.Popen(
        [sys.executable, str(script), str(work / "node"), str(port), str(files), str(workers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert node.stdout is not None and node.stdin is not None
    try:
        if node.stdout.readline().strip() != "listening":
            raise RuntimeError("the node did not start")
        watched = psutil.Process(node.pid)
        cpu = TreeCpu(watched)
        cpu.begin()
        peak = [0.0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], tree_rss(watched))
                cpu.sample()
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        done = storescu(port, folder)
        acked = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"node run failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        line = node.stdout.readline().split()
        end = tree_rss(watched)
        sampling.set()
        sampler.join()
        stored_at = float(line[1])
        return Result(stored_at - started, acked, cpu.seconds(), max(peak[0], end), end)
    finally:
        with contextlib.suppress(BrokenPipeError):
            node.stdin.close()
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        node.stdout.close()


def corpus(kind: str, count: int, size: int) -> tuple[Path, int, float]:
    folder = OUT / f"corpus-{kind}-{count}x{size}"
    marker = OUT / f"{folder.name}.complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        per_series = 25 if size <= 128 else 20
        patients = max(1, count // (2 * 2 * per_series))
        generate_corpus(
            folder,
            patients=patients,
            studies_per_patient=2,
            series_per_study=2,
            instances_per_series=per_series,
            rows=size,
            columns=size,
            seed=7,
        )
        marker.write_text("")
    paths = list(folder.rglob("*.dcm"))
    return folder, len(paths), sum(p.stat().st_size for p in paths) / MB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2000, help="128x128 files (default 2000)")
    parser.add_argument("--large", type=int, default=300, help="512x512 files (default 300)")
    parser.add_argument("--repeat", type=int, default=2, help="runs each; the best is kept")
    parser.add_argument("--workers", type=int, default=2, help="the node's stage-1 processes")
    args = parser.parse_args(argv)
    for program in ("storescu", "Orthanc"):
        if shutil.which(program) is None and not Path(f"/usr/sbin/{program}").exists():
            sys.exit(f"{program} is missing: apt-get install -y dcmtk orthanc")
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    runs: list[tuple[str, int, int, Result, Result]] = []  # corpus, run, files, results
    for kind, count, size in (("small", args.small, 128), ("large", args.large, 512)):
        if count <= 0:
            continue
        folder, files, megabytes = corpus(kind, count, size)
        name = f"{kind} {size}x{size}"
        for number in range(1, args.repeat + 1):
            with tempfile.TemporaryDirectory(dir=OUT) as work:
                orthanc = run_orthanc(folder, files, Path(work))
            with tempfile.TemporaryDirectory(dir=OUT) as work:
                node = run_node(folder, files, Path(work), args.workers)
            runs.append((name, number, files, orthanc, node))
        mine = [(o, n) for c, _, _, o, n in runs if c == name]
        best_orthanc = min((o for o, _ in mine), key=lambda r: r.seconds)
        best_node = min((n for _, n in mine), key=lambda r: r.seconds)
        best_node = replace(best_node, peak_mb=max(n.peak_mb for _, n in mine))
        rows.append((name, files, megabytes, best_orthanc, best_node))
    print("\nEach run (Orthanc, then the node, on the same corpus):\n")
    print(
        "| corpus | run | Orthanc files/s | node files/s | node/Orthanc | node acked files/s "
        "| Orthanc CPU ms/file | node CPU ms/file | node peak MB |"
    )
    print("| --- " * 9 + "|")
    for name, number, files, orthanc, node in runs:
        print(
            f"| {name} | {number} | {files / orthanc.seconds:.0f} | {files / node.seconds:.0f} "
            f"| {orthanc.seconds / node.seconds:.2f}x | {files / node.acked_seconds:.0f} "
            f"| {orthanc.cpu_seconds * 1e3 / files:.2f} | {node.cpu_seconds * 1e3 / files:.2f} "
            f"| {node.peak_mb:.0f} |"
        )
    print("\nThe fastest run of each (memory: the highest of all runs):\n")
    header = (
        "| corpus | files | MB | Orthanc files/s | Orthanc MB/s | node files/s | node MB/s "
        "| node/Orthanc | node acked files/s | Orthanc CPU ms/file | node CPU ms/file "
        "| node peak MB | node MB at end |"
    )
    print(header)
    print("| --- " * 13 + "|")
    for name, files, megabytes, orthanc, node in rows:
        print(
            f"| {name} | {files} | {megabytes:.1f} "
            f"| {files / orthanc.seconds:.0f} | {megabytes / orthanc.seconds:.1f} "
            f"| {files / node.seconds:.0f} | {megabytes / node.seconds:.1f} "
            f"| {orthanc.seconds / node.seconds:.2f}x "
            f"| {files / node.acked_seconds:.0f} "
            f"| {orthanc.cpu_seconds * 1e3 / files:.2f} | {node.cpu_seconds * 1e3 / files:.2f} "
            f"| {node.peak_mb:.0f} | {node.end_mb:.0f} |"
        )
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
