"""The correspondence table: encrypted at rest, found by keyed hash, rotated, tamper-evident."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from common.errors import ConfigurationError
from node.store import correspondence
from node.store.correspondence import CorrespondenceError, Keyring
from node.store.db import make_engine, make_sessionmaker, sqlite_url
from node.store.models import Base, Correspondence
from tests.conftest import ACCESSION, PATIENT_ID

PSEUDONYM = "PS7K2M4Q9XWZ3A"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "node.db"


@pytest.fixture
def engine(database: Path) -> Iterator[Engine]:
    engine = make_engine(sqlite_url(database))
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with make_sessionmaker(engine)() as session:
        yield session
        session.rollback()


def keyring(*older: bytes) -> Keyring:
    return Keyring(current=correspondence.parse_key(correspondence.new_key()), older=older)


def remember(session: Session, ring: Keyring, kind: str = "patient") -> Correspondence:
    row = correspondence.record(
        session=session, keyring=ring, kind=kind, original=PATIENT_ID, pseudonym=PSEUDONYM
    )
    session.commit()
    return row


def test_a_recorded_identifier_is_found_by_its_original(session: Session) -> None:
    ring = keyring()
    remember(session, ring)
    found = correspondence.pseudonym_for(
        session=session, keyring=ring, kind="patient", original=PATIENT_ID
    )
    assert found == PSEUDONYM


def test_an_unknown_identifier_has_no_pseudonym(session: Session) -> None:
    ring = keyring()
    remember(session, ring)
    assert (
        correspondence.pseudonym_for(
            session=session, keyring=ring, kind="patient", original="MRN-OTHER"
        )
        is None
    )


def test_a_pseudonym_is_re_identified_with_the_key(session: Session) -> None:
    ring = keyring()
    remember(session, ring)
    originals = correspondence.originals_for(
        session=session, keyring=ring, kind="patient", pseudonym=PSEUDONYM
    )
    assert originals == [PATIENT_ID]


def test_kinds_are_kept_apart(session: Session) -> None:
    ring = keyring()
    remember(session, ring, kind="patient")
    assert (
        correspondence.originals_for(
            session=session, keyring=ring, kind="accession", pseudonym=PSEUDONYM
        )
        == []
    )


def test_recording_the_same_pair_twice_keeps_one_row(session: Session) -> None:
    ring = keyring()
    first = remember(session, ring)
    second = remember(session, ring)
    assert first.id == second.id
    assert len(session.execute(select(Correspondence)).scalars().all()) == 1


def test_an_identifier_cannot_get_a_second_pseudonym(session: Session) -> None:
    ring = keyring()
    remember(session, ring)
    with pytest.raises(CorrespondenceError, match="already has another pseudonym") as caught:
        correspondence.record(
            session=session, keyring=ring, kind="patient", original=PATIENT_ID, pseudonym="PSX"
        )
    assert PATIENT_ID not in str(caught.value)


def test_the_database_file_holds_no_identifier_in_clear(
    session: Session, engine: Engine, database: Path
) -> None:
    ring = keyring()
    remember(session, ring)
    correspondence.record(
        session=session, keyring=ring, kind="accession", original=ACCESSION, pseudonym="H1"
    )
    session.commit()
    session.close()
    engine.dispose()  # the WAL checkpoints into the file
    content = b"".join(p.read_bytes() for p in database.parent.glob("node.db*"))
    assert PATIENT_ID.encode() not in content
    assert ACCESSION.encode() not in content


def test_a_wrong_key_finds_nothing_and_cannot_decrypt(session: Session) -> None:
    remember(session, keyring())
    wrong = keyring()
    assert (
        correspondence.pseudonym_for(
            session=session, keyring=wrong, kind="patient", original=PATIENT_ID
        )
        is None
    )
    with pytest.raises(CorrespondenceError, match="not configured"):
        correspondence.originals_for(
            session=session, keyring=wrong, kind="patient", pseudonym=PSEUDONYM
        )


def test_tampered_ciphertext_does_not_decrypt(session: Session) -> None:
    ring = keyring()
    row = remember(session, ring)
    damaged = bytearray(row.ciphertext)
    damaged[-1] ^= 0x01
    row.ciphertext = bytes(damaged)
    session.commit()
    with pytest.raises(CorrespondenceError, match=f"row {row.id} does not decrypt"):
        correspondence.originals_for(
            session=session, keyring=ring, kind="patient", pseudonym=PSEUDONYM
        )


def test_ciphertext_moved_to_another_kind_does_not_decrypt(session: Session) -> None:
    ring = keyring()
    row = remember(session, ring, kind="patient")
    row.kind = "accession"  # the kind is bound as associated data
    session.commit()
    with pytest.raises(CorrespondenceError, match="does not decrypt"):
        correspondence.originals_for(
            session=session, keyring=ring, kind="accession", pseudonym=PSEUDONYM
        )


def test_rotation_re_encrypts_every_row_under_the_new_key(session: Session) -> None:
    old = keyring()
    remember(session, old)
    correspondence.record(
        session=session, keyring=old, kind="accession", original=ACCESSION, pseudonym="H1"
    )
    session.commit()
    new_key = correspondence.parse_key(correspondence.new_key())
    moved = correspondence.rotate(session=session, keyring=old, new=new_key)
    session.commit()
    assert moved == 2
    new = Keyring(current=new_key)  # the old key is no longer needed
    assert {row.key_id for row in session.execute(select(Correspondence)).scalars()} == {
        new.current_id
    }
    assert correspondence.originals_for(
        session=session, keyring=new, kind="patient", pseudonym=PSEUDONYM
    ) == [PATIENT_ID]
    assert (
        correspondence.pseudonym_for(
            session=session, keyring=new, kind="accession", original=ACCESSION
        )
        == "H1"
    )


def test_after_rotation_the_old_key_alone_cannot_decrypt(session: Session) -> None:
    old = keyring()
    remember(session, old)
    correspondence.rotate(
        session=session, keyring=old, new=correspondence.parse_key(correspondence.new_key())
    )
    session.commit()
    with pytest.raises(CorrespondenceError, match="not configured"):
        correspondence.originals_for(
            session=session, keyring=old, kind="patient", pseudonym=PSEUDONYM
        )


def test_an_interrupted_rotation_can_be_finished_with_the_old_key_kept(session: Session) -> None:
    old = keyring()
    remember(session, old)
    new_key = correspondence.parse_key(correspondence.new_key())
    # Rows under the new key already, and rows under the old one: the keyring holds both.
    correspondence.record(
        session=session,
        keyring=Keyring(current=new_key),
        kind="accession",
        original=ACCESSION,
        pseudonym="H1",
    )
    session.commit()
    both = Keyring(current=old.current, older=(new_key,))
    assert correspondence.rotate(session=session, keyring=both, new=new_key) == 2
    session.commit()
    assert correspondence.originals_for(
        session=session, keyring=Keyring(current=new_key), kind="patient", pseudonym=PSEUDONYM
    ) == [PATIENT_ID]


def test_keys_are_read_as_base64_or_hex() -> None:
    raw = bytes(range(32))
    assert correspondence.parse_key(base64.b64encode(raw).decode()) == raw
    assert correspondence.parse_key(raw.hex()) == raw
    assert len(correspondence.parse_key(correspondence.new_key())) == 32


@pytest.mark.parametrize("text", ["", "short", base64.b64encode(b"x" * 16).decode()])
def test_a_key_of_the_wrong_size_is_refused_with_advice(text: str) -> None:
    with pytest.raises(ConfigurationError, match="havenet node keys new"):
        correspondence.parse_key(text)
