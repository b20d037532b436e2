"""Central storage on local disk: objects by key, listed by prefix, keys that cannot escape
the storage folder."""

from __future__ import annotations

import os
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


def test_a_big_object_reads_back_byte_for_byte_with_or_without_direct_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(range(256)) * 4099  # not a whole number of disk blocks
    storage = LocalStorage(tmp_path)
    storage.put("chunks/aa/direct", data)
    monkeypatch.delattr(os, "O_DIRECT")  # a platform without it: written through the cache
    storage.put("chunks/aa/cached", data)
    for key in ("chunks/aa/direct", "chunks/aa/cached"):
        assert storage.get(key) == data
        assert storage.size(key) == len(data)
    assert sorted(p.name for p in (tmp_path / "chunks" / "aa").iterdir()) == ["cached", "direct"]


def test_an_object_is_opened_as_a_stream_and_a_composed_one_as_its_parts_joined(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("chunks/aa/one", b"one,")
    storage.put("chunks/bb/two", b"two")
    storage.compose("incoming/p1/a.dcm", ["chunks/aa/one", "chunks/bb/two"])
    storage.compose("incoming/p1/b.dcm", ["chunks/bb/two"])
    with storage.open("incoming/p1/a.dcm") as stream:
        assert stream.read() == b"one,two"
    with storage.open("incoming/p1/b.dcm") as stream:
        assert stream.read(2) == b"tw"
    assert storage.size("incoming/p1/a.dcm") == 7
    with pytest.raises(ObjectNotFound):
        storage.open("incoming/p1/c.dcm")
    with pytest.raises(ObjectNotFound):
        storage.size("incoming/p1/c.dcm")
