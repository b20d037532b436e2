"""Central storage on local disk: objects by key, listed by prefix, keys that cannot escape
the storage folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.storage.exceptions import InvalidKey, ObjectNotFound
from hub.storage.service import LocalStorage


def test_an_object_put_is_read_back_listed_and_deleted(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("quarantine/p1/2.25.1/a.dcm", b"one")
    storage.put("quarantine/p1/2.25.1/b.dcm", b"two")
    assert storage.get("quarantine/p1/2.25.1/a.dcm") == b"one"
    assert storage.list("quarantine/p1") == [
        "quarantine/p1/2.25.1/a.dcm",
        "quarantine/p1/2.25.1/b.dcm",
    ]
    storage.delete("quarantine/p1/2.25.1/a.dcm")
    assert not storage.exists("quarantine/p1/2.25.1/a.dcm")
    with pytest.raises(ObjectNotFound):
        storage.get("quarantine/p1/2.25.1/a.dcm")


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "a/../../b", "a//b", ""])
def test_a_key_that_could_leave_the_storage_folder_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        LocalStorage(tmp_path / "store").put(key, b"x")


def test_an_object_composed_of_parts_reads_as_their_bytes_and_moves_as_one(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("chunks/aa/one", b"one,")
    storage.put("chunks/bb/two", b"two")
    storage.compose("incoming/p1/a.dcm", ["chunks/aa/one", "chunks/bb/two", "chunks/aa/one"])
    assert storage.get("incoming/p1/a.dcm") == b"one,twoone,"
    storage.move("incoming/p1/a.dcm", "quarantine/p1/a.dcm")
    assert storage.list("quarantine") == ["quarantine/p1/a.dcm"]
    assert not storage.exists("incoming/p1/a.dcm")
    storage.delete("quarantine/p1/a.dcm")
    assert storage.list("quarantine") == []
    assert storage.get("chunks/bb/two") == b"two"  # the parts stay
