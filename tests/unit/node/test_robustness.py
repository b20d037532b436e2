"""Failure paths found in review: transient errors keep acknowledged arrivals, errors never
echo input values, and hostile input cannot exhaust memory."""

from __future__ import annotations

import base64
import errno
import io
import zlib
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from common.errors import ConfigurationError
from node import settings as node_settings
from node.ingest import spool, validate, worker
from node.ingest.exceptions import InstanceUnreadable
from node.store.correspondence import new_key, parse_key
from tests.conftest import ct_dataset


def test_an_arrival_that_cannot_be_read_now_is_tried_again_not_rejected(
    tmp_path: Path, make_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    ct_dataset().save_as(buffer, enforce_file_format=True)
    arrivals = spool.Spool(tmp_path / "spool")
    arrivals.prepare()
    arrivals.pending()
    entry = arrivals.write(buffer.getvalue(), source="c-store TEST", job_id=None)

    def unreadable(entry: spool.SpoolEntry) -> bytes:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(spool, "read", unreadable)
    outcome = worker.deidentify_and_store(
        make_engine("pseudonymize"), worker.StoreWriter(tmp_path / "store"), entry
    )
    assert isinstance(outcome, worker.Retry)
    assert "Too many open files" in outcome.reason
    assert [e.name for e in spool.waiting(tmp_path / "spool")] == [entry.name]
    arrivals.close()


def test_a_settings_error_never_prints_the_values_given(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("site_secert: SUPERSECRETVALUE123\napi_token: [1, 2]\n")
    with pytest.raises(ConfigurationError) as caught:
        node_settings.load(config)
    message = str(caught.value)
    assert "site_secert" in message  # the misspelt key is named ...
    assert "SUPERSECRETVALUE123" not in message  # ... its value is not


def deflated_file(payload: bytes) -> bytes:
    """A Deflated Explicit VR Little Endian file whose data set inflates to ``payload``."""
    ds = ct_dataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    whole = buffer.getvalue()
    meta_end = 132 + 12 + int.from_bytes(whole[140:144], "little")  # after group 0002
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return whole[:meta_end] + compressor.compress(payload) + compressor.flush()


def test_a_deflate_bomb_is_refused_without_inflating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate, "MAX_INFLATED_BYTES", 2**20)
    bomb = deflated_file(b"\x00" * (8 * 2**20))  # 8 MiB of zeros in a few KB
    assert len(bomb) < 64 * 2**10
    with pytest.raises(InstanceUnreadable, match="inflates beyond 1 MiB"):
        validate.check(bomb)


@pytest.mark.parametrize("key", [b"\x00" * 32, b"ab" * 16, bytes(range(8)) * 4])
def test_a_correspondence_key_that_is_not_random_is_refused(key: bytes) -> None:
    with pytest.raises(ConfigurationError, match="not random"):
        parse_key(base64.b64encode(key).decode())


def test_a_new_correspondence_key_is_accepted() -> None:
    assert len(parse_key(new_key())) == 32
