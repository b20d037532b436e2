"""Site secrets and keyed mappings."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from common.crypto import Pseudonymizer, SiteSecret
from common.errors import ConfigurationError

SECRET = SiteSecret(b"0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize("value", [b"", b"short", b"changeme", b"  havenet  "])
def test_weak_or_default_secrets_are_refused(value: bytes) -> None:
    with pytest.raises(ConfigurationError):
        SiteSecret(value)


def test_an_empty_secret_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("\n")
    with pytest.raises(ConfigurationError, match="secret: the secret file is empty"):
        SiteSecret.from_file(path)


def test_mapped_uids_are_valid_version_8_uuids_under_2_25() -> None:
    mapped = Pseudonymizer(SECRET, "p").uid("1.2.3.4")
    assert mapped.startswith("2.25.")
    assert len(mapped) <= 64
    parsed = uuid.UUID(int=int(mapped[5:]))
    assert parsed.version == 8
    assert parsed.variant == uuid.RFC_4122


def test_length_prefixing_keeps_different_splits_apart() -> None:
    a = SECRET.digest("uid", "ab", "c")
    b = SECRET.digest("uid", "a", "bc")
    assert a != b


def test_offsets_are_never_zero_and_stay_in_range() -> None:
    mapper = Pseudonymizer(SECRET, "p", min_offset_days=-1, max_offset_days=1)
    offsets = {mapper.date_offset_days(f"P{i}") for i in range(100)}
    assert 0 not in offsets
    assert offsets <= {-1, 1}


def test_a_different_secret_gives_different_pseudonyms() -> None:
    other = SiteSecret(b"fedcba9876543210fedcba9876543210")
    assert Pseudonymizer(SECRET, "p").subject_key("X") != Pseudonymizer(other, "p").subject_key("X")
