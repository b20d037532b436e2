"""The benchmark's own virtual environment holding the competitors, built once and cached.

The competitors may want other versions of pydicom (and friends) than havenet, so they never go
into the project's venv. The environment is rebuilt whenever ``requirements.txt`` changes: its
hash is stamped into the environment after a successful install.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REQUIREMENTS = HERE / "requirements.txt"
VENV = REPO / "benchmarks" / ".venv-deid"
STAMP = VENV / ".requirements-sha256"
DISTRIBUTIONS = ("dicognito", "dicom-anonymizer", "deid", "pydicom", "numpy")


def venv_bin(name: str) -> Path:
    """An executable of the benchmark environment."""
    return VENV / "bin" / name


def _requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _is_current() -> bool:
    return (
        venv_bin("python").is_file()
        and STAMP.is_file()
        and (STAMP.read_text().strip() == _requirements_hash())
    )


def _build() -> None:
    if VENV.exists():
        shutil.rmtree(VENV)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(venv_bin("python")), "-m", "pip", "install", "-r", str(REQUIREMENTS)]
    done = subprocess.run(pip, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)
        done.check_returncode()
    STAMP.write_text(_requirements_hash() + "\n")


def ensure_venv() -> bool:
    """Make sure the benchmark environment matches ``requirements.txt``; True if it was built."""
    if _is_current():
        return False
    print(f"building {VENV.relative_to(REPO)} from {REQUIREMENTS.relative_to(REPO)} ...")
    _build()
    return True


def versions(python: Path) -> dict[str, str]:
    """Installed versions of the distributions that matter, as seen by ``python``."""
    script = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try:\n"
        "        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        return None\n"
        f"print(json.dumps({{n: v(n) for n in {list(DISTRIBUTIONS)!r}}}))\n"
    )
    done = subprocess.run([str(python), "-c", script], check=True, capture_output=True, text=True)
    found: dict[str, str | None] = json.loads(done.stdout)
    return {name: version for name, version in found.items() if version is not None}
