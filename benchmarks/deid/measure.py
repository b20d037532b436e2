"""Run one command and measure its wall time and the memory of its whole process tree."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.02
REFRESH_EVERY = 5
EAGER_SAMPLES = 50
MIB = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    """What one run of a command cost."""

    seconds: float
    peak_tree_rss: int
    peak_process_rss: int
    cpu_seconds: float
    others_cpu_seconds: float
    samples: int
    returncode: int


@dataclass
class _Peaks:
    tree: int = 0
    process: int = 0
    samples: int = 0


class _Tree:
    """The process tree under one root: RSS read every sample, membership every few samples.

    Finding descendants means scanning all of /proc (about 1.3 ms here), reading one RSS costs
    about 0.02 ms. The tree is re-scanned at every sample for the first EAGER_SAMPLES (the first
    second, when workers start), then every REFRESH_EVERY samples, which keeps the sampler's
    own CPU use to 1-2 % of a core, little taken from the tool it measures on two cores.
    """

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.members: list[psutil.Process] = [self.root]

    def refresh(self) -> None:
        try:
            self.members = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            self.members = [self.root]

    def rss(self) -> tuple[int, int]:
        """Sum and max of the RSS of the members still alive."""
        total = largest = 0
        for member in self.members:
            try:
                rss = member.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            largest = max(largest, rss)
        return total, largest


def _sample(tree: _Tree, peaks: _Peaks) -> None:
    if peaks.samples < EAGER_SAMPLES or peaks.samples % REFRESH_EVERY == 0:
        tree.refresh()
    total, largest = tree.rss()
    peaks.tree = max(peaks.tree, total)
    peaks.process = max(peaks.process, largest)
    peaks.samples += 1


def _wait_sampling(
    proc: subprocess.Popen[bytes], peaks: _Peaks
) -> tuple[int, resource.struct_rusage]:
    """Sample the tree every SAMPLE_SECONDS until the child exits; reap it with its rusage."""
    tree = _Tree(proc.pid)
    while True:
        _sample(tree, peaks)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        time.sleep(SAMPLE_SECONDS)


def _busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent not idle, all cores together."""
    times = psutil.cpu_times()
    busy = ("user", "nice", "system", "irq", "softirq")  # guest time is already in user
    return float(sum(getattr(times, name, 0.0) for name in busy))


def _own_cpu_seconds() -> float:
    own = os.times()
    return own.user + own.system


def run_measured(command: list[str], log: Path, cwd: Path) -> Measurement:
    """Run ``command`` with stdout and stderr to ``log``, sampling memory while it runs."""
    peaks = _Peaks()
    with log.open("wb") as out:
        machine, own = _busy_cpu_seconds(), _own_cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        returncode, usage = _wait_sampling(proc, peaks)
        seconds = time.perf_counter() - start
        machine, own = _busy_cpu_seconds() - machine, _own_cpu_seconds() - own
    cpu = usage.ru_utime + usage.ru_stime
    return Measurement(
        seconds=seconds,
        peak_tree_rss=peaks.tree,
        peak_process_rss=peaks.process,
        cpu_seconds=cpu,
        others_cpu_seconds=max(0.0, machine - cpu - own),
        samples=peaks.samples,
        returncode=returncode,
    )
