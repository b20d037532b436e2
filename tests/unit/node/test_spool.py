"""The spool: a log of arrivals, durable before they are acknowledged, read back after a crash."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.ingest import spool
from node.ingest.exceptions import SpoolUnavailable
from node.ingest.spool import Spool


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def opened(folder: Path, **options: int) -> Spool:
    log = Spool(folder, **options)
    log.prepare()
    log.pending()
    return log


@pytest.fixture
def log(folder: Path) -> Iterator[Spool]:
    running = opened(folder)
    yield running
    running.close()


def test_an_entry_keeps_its_bytes_source_and_job_across_a_restart(log: Spool, folder: Path) -> None:
    first = log.write(b"one" * 100, source="c-store PACS/Ü 1", job_id=7)
    second = log.write(b"two", source="", job_id=None)
    assert spool.read(first) == b"one" * 100 and spool.read(second) == b"two"
    log.close()
    reopened = Spool(folder)
    waiting = reopened.pending()
    assert [(e.source, e.job_id) for e in waiting] == [("c-store PACS/Ü 1", 7), ("", None)]
    assert [spool.read(e) for e in waiting] == [b"one" * 100, b"two"]
    assert [e.name for e in waiting] == sorted(e.name for e in waiting)
    reopened.close()


def test_an_entry_marked_done_is_not_processed_again(log: Spool, folder: Path) -> None:
    done = log.write(b"stored", source="a", job_id=None)
    left = log.write(b"not yet", source="b", job_id=None)
    log.remove(done)
    log.close()
    assert [e.name for e in spool.waiting(folder)] == [left.name]


def test_a_record_a_crash_cut_short_is_not_an_arrival(log: Spool, folder: Path) -> None:
    whole = log.write(b"acknowledged", source="a", job_id=None)
    cut = log.write(b"x" * 1000, source="b", job_id=None)
    log.close()
    segment = cut.path
    with segment.open("r+b") as data:
        data.truncate(cut.data_offset + 500)  # the power went out half-way through
    assert [e.name for e in spool.waiting(folder)] == [whole.name]
    with segment.open("r+b") as data:  # or the length is there, the bytes are not
        data.seek(cut.data_offset + 400)
        data.write(b"\0" * 600)
    assert [e.name for e in spool.waiting(folder)] == [whole.name]


def test_a_segment_written_over_does_not_bring_back_what_it_held(folder: Path) -> None:
    log = opened(folder, segment_bytes=4096)
    first = [log.write(bytes([n]) * 1500, source="old", job_id=None) for n in range(2)]
    log.write(b"z" * 1500, source="new", job_id=None)  # the next segment
    for entry in first:
        log.remove(entry)  # the first segment becomes a spare
    assert any(p.name.startswith("spare-") for p in folder.iterdir())
    reused = log.write(b"n" * 3000, source="newer", job_id=None)  # a third segment: the spare
    assert reused.segment > first[0].segment and reused.path.stat().st_size >= 3000
    log.close()
    assert sorted(e.source for e in spool.waiting(folder)) == ["new", "newer"]


def test_a_segment_whose_arrivals_are_stored_is_kept_as_a_spare_or_removed(folder: Path) -> None:
    log = opened(folder, segment_bytes=4096)
    for _ in range(40):
        log.remove(log.write(b"a" * 2000, source="s", job_id=None))
    log.close()
    names = sorted(p.name for p in folder.iterdir())
    assert len([n for n in names if n.startswith("spare-")]) <= spool.SPARES
    assert len([n for n in names if n.startswith("segment-")]) <= 1
    assert spool.waiting(folder) == []


def test_arrivals_written_at_once_share_a_flush(
    log: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes: list[float] = []
    real = os.fdatasync

    def slow_flush(descriptor: int) -> None:
        time.sleep(0.02)  # a disk that takes its time, as a busy one does
        real(descriptor)
        flushes.append(time.monotonic())

    monkeypatch.setattr(os, "fdatasync", slow_flush)
    returned: list[float] = []

    def arrive(number: int) -> None:
        log.write(str(number).encode() * 10, source="assoc", job_id=None)
        returned.append(time.monotonic())

    threads = [threading.Thread(target=arrive, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(returned) == 16
    assert len(flushes) < 16  # a group commit: one flush covers several arrivals
    assert min(returned) >= min(flushes)  # and none returned before a flush


def test_an_arrival_whose_flush_fails_is_refused_and_the_next_goes_elsewhere(
    log: Spool, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = log.write(b"before", source="a", job_id=None)
    real = os.fdatasync

    def failing(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(SpoolUnavailable, match="Input/output error"):
        log.write(b"lost", source="b", job_id=None)
    monkeypatch.setattr(os, "fdatasync", real)
    after = log.write(b"after", source="c", job_id=None)
    assert after.segment != kept.segment
    assert spool.read(after) == b"after"


def test_a_spool_of_the_old_format_is_moved_into_the_log(folder: Path) -> None:
    folder.mkdir()
    source = base64.b32encode(b"c-store PACS").decode().rstrip("=").lower()
    (folder / f"{time.time_ns():019d}-000001-12-{source}.dcm").write_bytes(b"an old arrival")
    (folder / ".partial-1-1").write_bytes(b"half")
    log = Spool(folder)
    assert log.prepare() == 1
    [entry] = log.pending()
    assert (entry.source, entry.job_id, spool.read(entry)) == (
        "c-store PACS",
        12,
        b"an old arrival",
    )
    assert not any(p.name.endswith(".dcm") for p in folder.iterdir())
    log.close()


def test_a_closed_spool_refuses_arrivals(log: Spool) -> None:
    log.close()
    with pytest.raises(SpoolUnavailable):
        log.write(b"late", source="a", job_id=None)
