"""Run pydicom/deid on a folder the way its documentation shows, with its default recipe.

Run by ``run.py`` in the benchmark's own environment: ``python deid_driver.py INPUT OUTPUT``.
deid has no command for this (its ``deid`` client is documented as neglected), so this is the
documented bulk call ("Replace Identifiers" in its getting-started guide): ``get_files`` on the
folder, then ``replace_identifiers(dicom_files=..., save=True, output_folder=...)`` with no recipe
given, so deid applies its bundled default ``deid.dicom`` recipe.
"""

from __future__ import annotations

import sys
from pathlib import Path

from deid.dicom import get_files, replace_identifiers  # type: ignore[import-not-found]


def deidentify(source: Path, target: Path) -> int:
    """De-identify every DICOM file under ``source`` into ``target``; the number written."""
    target.mkdir(parents=True, exist_ok=True)
    dicom_files = list(get_files(str(source)))
    cleaned = replace_identifiers(dicom_files=dicom_files, save=True, output_folder=str(target))
    return len(cleaned)


def main(argv: list[str]) -> int:
    """De-identify ``argv[0]`` into ``argv[1]``."""
    source, target = (Path(arg) for arg in argv)
    print(f"deid: {deidentify(source, target)} files written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
