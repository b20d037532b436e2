"""Database engines and sessions for the node (SQLite by default, PostgreSQL supported).

Schema changes go through Alembic (``migrations/``): :func:`migrate` brings any database
to the newest revision, and runs at start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL lets the API read while the receiver writes; synchronous=FULL makes a commit
    # survive a power loss too (the ingest deletes a spool entry right after its commit, and
    # commits in batches, so the fsync is paid once per batch); foreign keys cascade deletes.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema revision."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends, roll back if it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# Any fixed number: the one advisory lock the node's serialized writers take on PostgreSQL.
_POSTGRES_WRITE_LOCK = 0x68617665


def lock_for_writing(session: Session) -> None:
    """Make ``session``'s transaction the node's only writer from now until it ends.

    For a unit of work that reads, decides on what it read, then writes (a query's answer
    is checked against the answers remembered before it, then remembered itself). On
    SQLite a transaction that only read holds a snapshot; had another connection committed
    since, its first write fails at once ("database is locked", SQLITE_BUSY_SNAPSHOT: no
    busy timeout helps). Taking the write lock first (``BEGIN IMMEDIATE``) waits its turn
    instead. On PostgreSQL an advisory lock gives the same order among such units of work.
    Call it before the transaction writes anything.
    """
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        raw = connection.connection.dbapi_connection
        # pysqlite begins a transaction only before the first write; before it, nothing
        # has been read under a snapshot that could go stale, so beginning here is sound.
        if raw is not None and not raw.in_transaction:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_WRITE_LOCK}
        )
