"""The node's private key: written for its user only, refused when others can read it, and
read again when a rotation replaces the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import signing
from common.errors import ConfigurationError
from node.federation import keys


def test_the_private_key_file_is_readable_by_the_node_user_only(tmp_path: Path) -> None:
    key = signing.generate_private_key()
    path = keys.key_path(tmp_path)
    keys.write_private_key(path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert signing.public_key_text(keys.read_private_key(path)) == signing.public_key_text(key)


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = keys.key_path(tmp_path)
    keys.write_private_key(path, signing.generate_private_key())
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        keys.read_private_key(path)


def test_a_file_that_is_not_a_key_is_named_without_its_content(tmp_path: Path) -> None:
    path = keys.key_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("PATIENT SMITH")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError) as raised:
        keys.read_private_key(path)
    assert str(path) in str(raised.value)
    assert "SMITH" not in str(raised.value)


def test_the_key_file_is_read_again_after_a_rotation_replaces_it(tmp_path: Path) -> None:
    path = keys.key_path(tmp_path)
    keys.write_private_key(path, signing.generate_private_key())
    current = keys.KeyFile(path)
    before = signing.public_key_text(current.get())
    new = signing.generate_private_key()
    keys.write_private_key(path, new)
    assert signing.public_key_text(current.get()) == signing.public_key_text(new) != before
