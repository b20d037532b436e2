"""The commands the benchmark times: havenet, its competitors and the plain pydicom baseline.

Each is run the way its documentation shows a user running it on a folder, in one process:

- dicognito: ``dicognito --output-directory OUT IN``. The console script of dicognito 0.19.0 is
  broken (its ``main()`` needs an argument the generated script does not pass), so the same
  command line is given to ``python -m dicognito``, which is what the script would have run.
- dicom-anonymizer: ``dicom-anonymizer IN OUT`` (OUT must exist; it does not recurse).
- deid: the library's documented bulk call, through ``deid_driver.py``.
- pydicom: ``pydicom_baseline.py``, a plain ``dcmread`` + ``save_as`` of every file, run by the
  project's own interpreter.
- havenet: ``havenet deid IN OUT --profile anonymize --project bench --secret-file F --workers N``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench_env import HERE, venv_bin

HAVENET_WORKERS = {"havenet-w1": 1, "havenet-w2": 2}
COMPETITORS = ("dicognito", "dicom-anonymizer", "deid")
CHOICES = ("havenet", "dicognito", "dicom-anonymizer", "deid", "pydicom")
DEFAULT_TOOLS = "havenet,dicognito,dicom-anonymizer,deid,pydicom"


@dataclass(frozen=True)
class Job:
    """The folders and files one tool run works with."""

    source: Path
    target: Path
    secret: Path


def expand(names: str) -> list[str]:
    """Turn the ``--tools`` list into row names (``havenet`` becomes one row per worker count)."""
    rows: list[str] = []
    for raw in names.split(","):
        name = raw.strip()
        if name == "havenet":
            rows.extend(HAVENET_WORKERS)
        elif name in CHOICES or name in HAVENET_WORKERS:
            rows.append(name)
        elif name:
            msg = f"unknown tool {name!r}; choose from {', '.join(CHOICES)}"
            raise ValueError(msg)
    return list(dict.fromkeys(rows))


def needs_venv(rows: list[str]) -> bool:
    """Whether any of ``rows`` runs in the benchmark's own environment."""
    return any(row in COMPETITORS for row in rows)


def havenet_executable() -> Path | None:
    """The ``havenet`` console script beside the interpreter running the benchmark."""
    beside = Path(sys.executable).with_name("havenet")
    if beside.is_file():
        return beside
    found = shutil.which("havenet")
    return Path(found) if found else None


@functools.cache
def havenet_available() -> bool:
    """True once ``havenet deid --help`` works (the command is being written concurrently)."""
    executable = havenet_executable()
    if executable is None:
        return False
    done = subprocess.run([str(executable), "deid", "--help"], capture_output=True, check=False)
    return done.returncode == 0


def _havenet(job: Job, workers: int) -> list[str]:
    executable = havenet_executable()
    assert executable is not None
    return [
        str(executable), "deid", str(job.source), str(job.target),
        "--profile", "anonymize", "--project", "bench",
        "--secret-file", str(job.secret), "--workers", str(workers),
    ]  # fmt: skip


def command(row: str, job: Job) -> list[str]:
    """The command line that runs tool ``row`` on ``job``."""
    if row in HAVENET_WORKERS:
        return _havenet(job, HAVENET_WORKERS[row])
    python = str(venv_bin("python"))
    commands = {
        "pydicom": [sys.executable, "-P", str(HERE / "pydicom_baseline.py")],
        "dicognito": [python, "-m", "dicognito", "--output-directory", str(job.target)],
        "dicom-anonymizer": [str(venv_bin("dicom-anonymizer"))],
        "deid": [python, "-P", str(HERE / "deid_driver.py")],
    }
    tail = {
        "pydicom": [str(job.source), str(job.target)],
        "dicognito": [str(job.source)],
        "dicom-anonymizer": [str(job.source), str(job.target)],
        "deid": [str(job.source), str(job.target)],
    }
    return commands[row] + tail[row]
