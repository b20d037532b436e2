"""The audit log: appended records chain by hash, and any edit, removal or reordering shows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, delete, select, update
from sqlalchemy.orm import DeclarativeBase, Session

from common import audit


class Base(DeclarativeBase):
    pass


class Record(audit.AuditRecordMixin, Base):
    __tablename__ = "audit_record"


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
        session.rollback()
    engine.dispose()


def write(session: Session, count: int) -> list[Record]:
    records = [
        audit.append(
            session,
            Record,
            actor="admin",
            action="reidentify",
            subject=f"PS{index:04d}",
            details={"identifiers": index},
        )
        for index in range(1, count + 1)
    ]
    session.commit()
    return records


def test_each_record_carries_the_hash_of_the_one_before(session: Session) -> None:
    first, second, third = write(session, 3)
    assert first.previous_hash == audit.GENESIS
    assert second.previous_hash == first.hash
    assert third.previous_hash == second.hash
    assert len({first.hash, second.hash, third.hash}) == 3


def test_an_untouched_log_verifies(session: Session) -> None:
    write(session, 4)
    result = audit.verify(session, Record)
    assert result.ok
    assert result.records == 4
    assert result.first_broken_id is None


def test_an_empty_log_verifies(session: Session) -> None:
    assert audit.verify(session, Record) == audit.Verification(True, 0)


def test_a_record_read_back_without_a_time_zone_still_verifies(session: Session) -> None:
    # SQLite hands DateTime(timezone=True) back naive; verify must read it as UTC.
    audit.append(
        session, Record, actor="a", action="x", at=dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    )
    session.commit()
    session.expire_all()
    assert session.execute(select(Record)).scalar_one().at.tzinfo is None
    assert audit.verify(session, Record).ok


def test_a_changed_record_is_named(session: Session) -> None:
    records = write(session, 4)
    session.execute(
        update(Record).where(Record.id == records[1].id).values(details='{"identifiers":0}')
    )
    session.commit()
    result = audit.verify(session, Record)
    assert not result.ok
    assert result.first_broken_id == records[1].id
    assert result.problem == "was changed after it was written"


def test_a_changed_actor_is_named(session: Session) -> None:
    records = write(session, 3)
    session.execute(update(Record).where(Record.id == records[2].id).values(actor="someone else"))
    session.commit()
    assert audit.verify(session, Record).first_broken_id == records[2].id


def test_a_changed_record_with_a_recomputed_hash_breaks_the_next_link(session: Session) -> None:
    records = write(session, 3)
    forged = audit._digest(
        records[0].hash,
        records[1].at,
        records[1].actor,
        "nothing",
        records[1].subject,
        records[1].details,
    )
    session.execute(
        update(Record).where(Record.id == records[1].id).values(action="nothing", hash=forged)
    )
    session.commit()
    result = audit.verify(session, Record)
    assert result.first_broken_id == records[2].id
    assert result.problem == "does not follow the record before it"


def test_a_removed_record_is_detected_at_the_one_after_it(session: Session) -> None:
    records = write(session, 4)
    session.execute(delete(Record).where(Record.id == records[1].id))
    session.commit()
    result = audit.verify(session, Record)
    assert not result.ok
    assert result.first_broken_id == records[2].id
    assert result.problem == "does not follow the record before it"


def test_reordered_records_are_detected(session: Session) -> None:
    records = write(session, 4)
    second, third = records[1], records[2]
    columns = ("at", "actor", "action", "subject", "details", "previous_hash", "hash")
    values = [{c: getattr(r, c) for c in columns} for r in (second, third)]
    # Swap the two records' contents (hash is unique: park one on a placeholder first).
    session.execute(update(Record).where(Record.id == third.id).values(hash="parked"))
    session.execute(update(Record).where(Record.id == second.id).values(**values[1]))
    session.execute(update(Record).where(Record.id == third.id).values(**values[0]))
    session.commit()
    result = audit.verify(session, Record)
    assert not result.ok
    assert result.first_broken_id == second.id


def test_details_are_stored_as_canonical_json(session: Session) -> None:
    record = audit.append(session, Record, actor="a", action="x", details={"b": 1, "a": 2})
    assert record.details == '{"a":2,"b":1}'
