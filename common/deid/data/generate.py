"""Generate the shipped de-identification tables from the standard's own data.

Run from the repository root::

    python -m common.deid.data.generate ../shared/data/dicom-standard

It reads PS3.15 Annex E Table E.1-1 (``confidentiality_profile_attributes.json``, as
extracted from the DICOM standard by innolitics/dicom-standard) and TCIA's private tag
knowledge base, and writes ``annex_e.json`` and ``safe_private.tsv`` beside this file.
A test regenerates both and compares them, so the shipped data cannot drift from the source.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

# Column names in the source → option names used in havenet profiles.
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_longitudinal_full_dates",
    "rtnLongModifDatesOpt": "retain_longitudinal_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}

_TAG = re.compile(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)")
# TCIA rows look like (0019,"GEMS_ACQU_01",10) — the opening quote is sometimes missing.
_PRIVATE = re.compile(r'^\(([0-9a-fA-F]{4}),"?([^()\[\]]*?)"?,([0-9a-fA-F]{2})\)$')
# TCIA dispositions: k keep, h hash, o offset (a date), d delete; everything else is deleted.
_KEPT_DISPOSITIONS = {"k": "keep", "h": "hash", "o": "shift"}


def annex_e_rows(source: Path) -> list[dict[str, Any]]:
    rows = json.loads((source / "confidentiality_profile_attributes.json").read_text())
    table: list[dict[str, Any]] = []
    for row in rows:
        match = _TAG.fullmatch(row["tag"])
        tag = f"{match.group(1)}{match.group(2)}" if match else "private"
        options = {name: row[column] for column, name in OPTION_COLUMNS.items() if column in row}
        table.append(
            {"tag": tag, "name": row["name"], "basic": row["basicProfile"], "options": options}
        )
    table.sort(key=lambda r: r["tag"])
    return table


def safe_private_rows(source: Path) -> list[tuple[str, str, str, str, str]]:
    """Top-level private attributes TCIA judged safe to keep, hash or date-shift."""
    out: set[tuple[str, str, str, str, str]] = set()
    with (source / "tcia_private_tag_kb_2024-02-01.csv").open(encoding="utf-8-sig") as f:
        for record in csv.DictReader(f):
            action = _KEPT_DISPOSITIONS.get(record["private_disposition"].strip().lower())
            match = _PRIVATE.match(record["element_sig_pattern"])
            if action is None or match is None:
                continue  # nested patterns ([<0>]) and deletions need no entry: absent = removed
            group, creator, element = match.groups()
            out.add((group.upper(), creator.strip(), element.upper(), record["vr"], action))
    return sorted(out)


def write(source: Path, target: Path = HERE) -> None:
    origin = {
        "origin": "DICOM PS3.15 Annex E Table E.1-1, DICOM standard 2024b, as extracted by "
        "innolitics/dicom-standard (MIT), file standard/confidentiality_profile_attributes.json",
        "generated_by": "python -m common.deid.data.generate",
        "rows": annex_e_rows(source),
    }
    (target / "annex_e.json").write_text(json.dumps(origin, indent=1, sort_keys=True) + "\n")
    lines = ["group\tcreator\telement\tvr\taction"]
    lines += ["\t".join(row) for row in safe_private_rows(source)]
    (target / "safe_private.tsv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]))
