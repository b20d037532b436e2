"""The baseline: a plain pydicom read and write of every file, no de-identification.

Run by ``run.py`` with the project's own interpreter: ``python pydicom_baseline.py INPUT OUTPUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydicom import dcmread


def copy_all(source: Path, target: Path) -> int:
    """Read every file under ``source`` with pydicom and write it unchanged into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        dataset = dcmread(path)
        dataset.save_as(target / path.name)
        count += 1
    return count


def main(argv: list[str]) -> int:
    """Copy ``argv[0]`` into ``argv[1]``."""
    source, target = (Path(arg) for arg in argv)
    print(f"pydicom: {copy_all(source, target)} files written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
