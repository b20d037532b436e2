"""De-identification benchmark: havenet against dicognito, dicom-anonymizer, deid and pydicom.

Run with the project's interpreter::

    .venv/bin/python benchmarks/deid/run.py [--files 1000] [--size 512] [--work DIR]
        [--tools havenet,dicognito,dicom-anonymizer,deid,pydicom] [--repeat 1] [--keep]

It builds (once) the competitors' own venv, generates (once) the corpus, runs every tool as a
subprocess on the same folder, measuring wall time and peak memory of the whole process tree,
checks each tool's output, and prints a table plus the issue's targets. The same figures go to
``benchmarks/out/deid-results.json``. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_env
import corpus
import psutil
import report
import tools
import verify
from measure import MIB, Measurement, run_measured

DEFAULT_WORK = bench_env.REPO / "benchmarks" / "out" / "deid-corpus"
RESULTS = bench_env.REPO / "benchmarks" / "out" / "deid-results.json"
CHUNK = 1 << 20
BUSY_PERCENT = 20.0
STARTED_AT = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
LOAD_AT_START = [round(load, 2) for load in os.getloadavg()]


@dataclass(frozen=True)
class Setup:
    """What every tool run shares."""

    work: Path
    source: Path
    secret: Path
    manifest: dict[str, Any]
    files: int
    input_mib: float
    repeat: int
    keep: bool


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="slices in the corpus")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of a slice")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="corpus and outputs")
    parser.add_argument("--tools", default=tools.DEFAULT_TOOLS, help="comma-separated tools")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool; best time kept")
    parser.add_argument("--keep", action="store_true", help="keep every tool's output folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON results file")
    return parser.parse_args(argv)


def ensure_secret(work: Path) -> Path:
    """The secret file havenet is given: 32 random bytes in hex, made once per work dir."""
    path = work / "secret.hex"
    if not path.is_file():
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return path


def warm_up(folder: Path) -> None:
    """Read every input file once, so that each tool starts with the corpus in the page cache."""
    for path in sorted(folder.iterdir()):
        with path.open("rb") as handle:
            while handle.read(CHUNK):
                pass


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def prepare(args: argparse.Namespace) -> Setup:
    """Build the corpus (if needed) and everything the runs share."""
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = work / "input"
    spec = corpus.CorpusSpec(files=args.files, size=args.size)
    started = time.perf_counter()
    if corpus.ensure(source, spec):
        print(f"generated {spec.files} slices in {time.perf_counter() - started:.1f} s: {source}")
    manifest = corpus.read_manifest(source)
    assert manifest is not None
    return Setup(
        work=work,
        source=source,
        secret=ensure_secret(work),
        manifest=manifest,
        files=spec.files,
        input_mib=_folder_bytes(source) / MIB,
        repeat=max(1, args.repeat),
        keep=args.keep,
    )


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.sync()
    return folder


def _one_run(row: str, setup: Setup, attempt: int) -> tuple[Measurement, list[str], Path]:
    job = tools.Job(setup.source, _fresh(setup.work / "output" / row), setup.secret)
    command = tools.command(row, job)
    log = setup.work / "logs" / f"{row}-{attempt}.log"
    log.parent.mkdir(exist_ok=True)
    warm_up(setup.source)
    print(f"  {row} run {attempt}: {' '.join(command)}", flush=True)
    return run_measured(command, log, cwd=setup.work), command, log


def _run_dict(measured: Measurement, log: Path) -> dict[str, Any]:
    return {
        "seconds": round(measured.seconds, 3),
        "peak_tree_mib": round(measured.peak_tree_rss / MIB, 1),
        "peak_process_mib": round(measured.peak_process_rss / MIB, 1),
        "cpu_seconds": round(measured.cpu_seconds, 2),
        "others_cpu_seconds": round(measured.others_cpu_seconds, 2),
        "samples": measured.samples,
        "returncode": measured.returncode,
        "log": str(log),
    }


def _status(row: report.Row, failed: list[int], found: verify.Verification) -> str:
    problems = []
    if failed:
        problems.append(f"exit {failed[-1]}")
    if found.dicom_files < row.files_in:
        problems.append(f"wrote {found.dicom_files}/{row.files_in}")
    if found.unreadable:
        problems.append(f"{found.unreadable} unreadable")
    return "; ".join(problems) or "ok"


def _fill(row: report.Row, runs: list[Measurement], found: verify.Verification) -> None:
    best = min(runs, key=lambda m: m.seconds)
    row.files_out = found.dicom_files
    row.seconds = best.seconds
    row.mib_per_s = row.input_mib / best.seconds
    row.peak_tree_mib = max(m.peak_tree_rss for m in runs) / MIB
    row.peak_process_mib = max(m.peak_process_rss for m in runs) / MIB
    row.cpu_seconds = best.cpu_seconds
    row.others_cpu_percent = 100.0 * best.others_cpu_seconds / best.seconds
    row.verification = found.as_dict()
    row.status = _status(row, [m.returncode for m in runs if m.returncode], found)


def bench_tool(row_name: str, setup: Setup) -> report.Row:
    """Run one tool ``setup.repeat`` times, keep the best time and the highest peak, verify."""
    row = report.Row(row_name, "not run", setup.files, setup.input_mib)
    if row_name in tools.HAVENET_WORKERS and not tools.havenet_available():
        row.status = "not available yet"
        return row
    runs = []
    for attempt in range(1, setup.repeat + 1):
        measured, row.command, log = _one_run(row_name, setup, attempt)
        runs.append(measured)
        row.runs.append(_run_dict(measured, log))
    output = setup.work / "output" / row_name
    _fill(row, runs, verify.verify(output, setup.manifest))
    if row.status != "ok":
        print(f"  {row_name}: {row.status} (log: {row.runs[-1]['log']})")
    if not setup.keep:
        shutil.rmtree(output, ignore_errors=True)
    return row


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def context(args: argparse.Namespace, setup: Setup, rows: list[str]) -> dict[str, Any]:
    """When, where and with what the figures were taken."""
    bench_python = bench_env.venv_bin("python")
    return {
        "date": STARTED_AT,
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": LOAD_AT_START,
        },
        "versions": {
            "project": bench_env.versions(Path(sys.executable)),
            "benchmark_venv": bench_env.versions(bench_python) if bench_python.is_file() else {},
        },
        "corpus": {
            "files": setup.files,
            "size": args.size,
            "mib": round(setup.input_mib, 1),
            "folder": str(setup.source),
        },
        "tools": rows,
        "repeat": setup.repeat,
    }


def busy_processes(seconds: float = 1.0) -> list[str]:
    """Other processes using more than BUSY_PERCENT of a core right now: they skew the figures."""
    procs = [p for p in psutil.process_iter(["pid"]) if p.pid != os.getpid()]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(seconds)
    busy = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            percent = proc.cpu_percent(None)
            if percent > BUSY_PERCENT:
                busy.append(f"pid {proc.pid} at {percent:.0f}%: {' '.join(proc.cmdline())[:80]}")
    return busy


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    started = time.perf_counter()
    busy = busy_processes()
    for line in busy:
        print(f"warning: another process is busy, figures will be low: {line}")
    args = parse_args(argv)
    try:
        rows = tools.expand(args.tools)
    except ValueError as error:
        print(f"run.py: {error}", file=sys.stderr)
        return 2
    if tools.needs_venv(rows):
        bench_env.ensure_venv()
    setup = prepare(args)
    if any(row in tools.HAVENET_WORKERS for row in rows) and not tools.havenet_available():
        print("havenet: not available yet")
    print(f"corpus: {setup.files} files, {setup.input_mib:.1f} MiB in {setup.source}")
    results = [bench_tool(name, setup) for name in rows]
    report.add_ratios(results)
    found = report.targets(results)
    print()
    print(report.table(results))
    print("\noutput checks (not timed):")
    print(report.checks_table(results))
    print("\ntargets (havenet):")
    print(report.targets_text(found))
    document = report.as_json(results, found, context(args, setup, rows))
    document["busy_before_run"] = busy
    document["total_seconds"] = round(time.perf_counter() - started, 1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {args.results}  (whole run {document['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
