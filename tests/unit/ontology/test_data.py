"""The data files: derived ones equal a fresh generation, every file has its origin noted."""

from __future__ import annotations

import csv
import io

from ontology.data import generate
from ontology.sources import DATA_DIR


def test_the_dicom_derived_files_equal_a_fresh_generation() -> None:
    for name, (rows, comment) in generate.dicom_files().items():
        expected = io.StringIO()
        expected.write(f"# {comment}\n")
        csv.writer(expected, delimiter="\t", lineterminator="\n").writerows(rows)
        assert (DATA_DIR / name).read_text(encoding="utf-8") == expected.getvalue(), name


def test_every_data_file_has_a_row_in_the_readme() -> None:
    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")

    for path in DATA_DIR.glob("*.tsv"):
        assert f"`{path.name}`" in readme, path.name
