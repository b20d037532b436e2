"""Profiles are validated on load, and every error names the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.deid.exceptions import LookupTableError, ProfileError
from common.deid.profile import (
    BUILTIN_PROFILES,
    Action,
    load_profile,
    parse_profile,
    read_lookup_table,
)
from common.deid.table import Option


@pytest.mark.parametrize("name", BUILTIN_PROFILES)
def test_every_built_in_profile_loads(name: str) -> None:
    assert load_profile(name).name == name


def test_stage_one_and_stage_two_profiles_choose_the_documented_options() -> None:
    stage1, stage2 = load_profile("pseudonymize"), load_profile("anonymize")
    assert Option.RETAIN_LONGITUDINAL_FULL_DATES in stage1.options
    assert Option.RETAIN_PATIENT_CHARACTERISTICS in stage1.options
    assert Option.CLEAN_DESCRIPTORS in stage1.options
    assert Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in stage2.options
    assert stage2.overrides[0x00100020].action is Action.SUBJECT_KEY


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("name: t\noptions: [retain_uids, keep_everything]\n", 2, "unknown option"),
        ("name: t\nattributes:\n  PatientName: kep\n", 3, "unknown action 'kep'"),
        ("name: t\nattributes:\n  PatientNam: keep\n", 3, "unknown attribute 'PatientNam'"),
        ("name: t\nattributes:\n  InstitutionName: replace\n", 3, "needs a value"),
        ("name: t\nattributes:\n  StudyDescription: shift\n", 3, "shift applies to dates"),
        ("name: t\nfoo: 1\n", 2, "unknown key 'foo'"),
        ("name: t\nattributes:\n  Rows: hash\n", 3, "hash writes text; (0028,0010) holds US"),
        (
            "name: t\noptions:\n  - retain_longitudinal_full_dates\n"
            "  - retain_longitudinal_modified_dates\n",
            3,
            "exclude each other",
        ),
        (
            "name: t\npixels:\n  blank:\n    - {boxes: [[0, 0, 10, 10]]}\n",
            4,
            "need the clean_pixel_data option",
        ),
        (
            "name: t\noptions: [clean_pixel_data]\npixels:\n  blank:\n"
            "    - {boxes: [[5, 0, 1, 10]]}\n",
            5,
            "0 <= left < right",
        ),
        ("name: t\ndate_shift: {min_days: 5, max_days: 1}\n", 2, "min_days exceeds max_days"),
        ("name: t\noptions: [a\n", 3, "not valid YAML"),
    ],
)
def test_a_mistake_is_reported_with_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "site.yaml")
    assert str(caught.value).startswith(f"site.yaml:{line}: ")
    assert words in str(caught.value)


def test_attributes_can_be_named_by_keyword_or_tag() -> None:
    profile = parse_profile(
        "name: t\nattributes:\n  (0010,0040): keep\n  00101010: keep\n  PatientWeight: keep\n",
        "t.yaml",
    )
    assert set(profile.overrides) == {0x00100040, 0x00101010, 0x00101030}


def test_a_missing_profile_file_names_the_built_in_choices() -> None:
    with pytest.raises(ProfileError, match="basic, pseudonymize, anonymize"):
        load_profile("no-such-profile.yaml")


def test_a_lookup_table_with_a_header_reads_into_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "keys.csv"
    path.write_text("patient_id,subject_key\nMRN1,TRIAL-001\nMRN2,TRIAL-002\n")
    assert read_lookup_table(path) == {"MRN1": "TRIAL-001", "MRN2": "TRIAL-002"}


@pytest.mark.parametrize(
    ("rows", "line", "words"),
    [
        ("MRN1,TRIAL-001\nMRN1,TRIAL-002\n", 2, "another value"),
        ("MRN1,TRIAL-001\nMRN2,TRIAL-001\n", 2, "already used on line 1"),
        ("MRN1,TRIAL-001\nMRN2\n", 2, "two non-empty columns"),
    ],
)
def test_a_bad_lookup_table_names_the_line_not_the_values(tmp_path, rows, line, words) -> None:
    path = tmp_path / "keys.csv"
    path.write_text(rows)
    with pytest.raises(LookupTableError) as caught:
        read_lookup_table(path)
    message = str(caught.value)
    assert f"keys.csv:{line}:" in message
    assert words in message
    assert "MRN" not in message.replace(str(path), "")
    assert "TRIAL" not in message.replace(str(path), "")
