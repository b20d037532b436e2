"""The PHI corpus: fake PHI in every Annex E attribute, nested sequences, private tags and
free text, with an answer key. After de-identification no value that the profile must
remove survives anywhere in the output bytes, and the patients' own identifiers never do.

Expectations come from the answer key and the standard's table, not from the engine: a
value may survive only where the table (under the profile's options) or the profile's own
override says keep; dates survive only with full dates kept; UIDs only with Retain UIDs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.deid import runner
from common.deid.profile import Action, Profile, load_profile
from common.deid.table import Option, rows
from compose.synthetic.dicom import AnswerKey, Injected, generate_corpus

ROWS = {row.tag: row for row in rows()}
_LAST_TAG = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AnswerKey]:
    folder = tmp_path_factory.mktemp("phi") / "in"
    key = generate_corpus(
        folder,
        patients=3,
        studies_per_patient=1,
        series_per_study=2,
        instances_per_series=2,
        phi="exhaustive",
        seed=7,
    )
    return folder, key


def own_row(record: Injected) -> bool:
    match = _LAST_TAG.search(record.path)
    if match is None:
        return False
    tag = match.group(1) + match.group(2)
    pattern = record.table_tag.replace("X", "")
    return tag == record.table_tag or (
        "X" in record.table_tag and tag.startswith(record.table_tag[:2]) and pattern[-4:] in tag
    )


def must_vanish(record: Injected, profile: Profile) -> bool:
    options = profile.options
    if record.kind == "private-unsafe":
        return True
    if record.kind == "private-safe":
        return Option.RETAIN_SAFE_PRIVATE not in options
    uid_kept = Option.RETAIN_UIDS in options
    row = ROWS.get(record.table_tag)
    if row is None:
        return record.vr == "UI" and not uid_kept
    if own_row(record):
        match = _LAST_TAG.search(record.path)
        assert match is not None
        override = profile.overrides.get(int(match.group(1) + match.group(2), 16))
        if override is not None:
            return override.action is not Action.KEEP
        code, _ = row.action(options)
    else:  # inside a sequence: the sequence's row decides whether the item survives
        code, _ = row.action(options)
        if code in ("K", "C", "U", "X/Z/U*"):
            return record.vr == "UI" and not uid_kept
    if code == "K":
        return False
    if code == "C":
        if record.vr in ("DA", "DT"):
            return Option.RETAIN_LONGITUDINAL_FULL_DATES not in options
        return record.vr == "UI" and not uid_kept
    if code in ("U", "X/Z/U*"):
        return record.vr == "UI" and not uid_kept if code == "X/Z/U*" else True
    return True


def deidentify(folder: Path, out: Path, profile: str, secret_file: Path) -> dict[str, str]:
    outcomes: list[runner.FileOutcome] = []
    config = runner.RunConfig(profile=profile, project="p", secret_file=secret_file)
    runner.run(config, folder, out, on_outcome=outcomes.append)
    failed = [(o.source, o.reason) for o in outcomes if o.status != "written"]
    assert not failed
    return {o.source: o.output for o in outcomes}


@pytest.mark.parametrize("profile_name", ["basic", "pseudonymize", "anonymize"])
def test_no_value_the_profile_removes_survives_anywhere(
    corpus: tuple[Path, AnswerKey], profile_name: str, secret_file: Path, tmp_path: Path
) -> None:
    folder, key = corpus
    profile = load_profile(profile_name)
    outputs = deidentify(folder, tmp_path / "out", profile_name, secret_file)
    checked, survivors = 0, []
    for record in key.injected:
        if not must_vanish(record, profile):
            continue
        checked += 1
        data = (tmp_path / "out" / outputs[record.file]).read_bytes()
        if record.value.encode() in data:
            survivors.append((record.path, record.kind))
    assert checked > 300
    assert survivors == []


@pytest.mark.parametrize("profile_name", ["basic", "pseudonymize", "anonymize"])
def test_the_patients_own_identifiers_never_survive(
    corpus: tuple[Path, AnswerKey], profile_name: str, secret_file: Path, tmp_path: Path
) -> None:
    folder, key = corpus
    outputs = deidentify(folder, tmp_path / "out", profile_name, secret_file)
    everything = b"".join((tmp_path / "out" / o).read_bytes() for o in outputs.values()).lower()
    for patient in key.patients:
        needles = [
            patient.patient_id,
            *patient.other_ids,
            *patient.accession_numbers,
            patient.name,
            patient.name.replace("^", " "),
        ]
        needles += [part for part in re.split(r"[\^ ]", patient.name) if len(part) >= 4]
        if profile_name != "pseudonymize":  # stage 1 keeps dates inside the hospital
            needles += [patient.birth_date, *patient.study_dates]
        for needle in needles:
            found = re.search(
                rb"(?<![0-9a-z])" + re.escape(needle.lower().encode()) + rb"(?![0-9a-z])",
                everything,
            )
            assert found is None, f"{profile_name}: an identifier of a patient survived"


def test_stage_one_keeps_what_curation_needs(
    corpus: tuple[Path, AnswerKey], secret_file: Path, tmp_path: Path
) -> None:
    folder, key = corpus
    outputs = deidentify(folder, tmp_path / "out", "pseudonymize", secret_file)
    everything = b"".join((tmp_path / "out" / o).read_bytes() for o in outputs.values())
    for patient in key.patients:
        assert patient.birth_date.encode() in everything
        assert all(d.encode() in everything for d in patient.study_dates)
