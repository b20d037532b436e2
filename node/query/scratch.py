"""Scratch tables of an evaluation, each filled once per query and read by the statements
after it rather than each statement computing it again:

- the cohort's subject keys (read by the matching series, breakdowns, statistic groups);
- the demographics of every known subject, when criteria test sex or an age at an event
  (a grouping of both stores, otherwise repeated in every statement that tests them).

They are temporary tables — private to the database connection, gone with it, never part
of the node's schema — emptied before each use and after it. SQLite and PostgreSQL both
create them with ``CREATE TEMPORARY TABLE IF NOT EXISTS``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import Column, Integer, MetaData, Select, String, Table, delete, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable

from node.query.compile import demographics as known_demographics

_METADATA = MetaData()

COHORT_KEYS = Table(
    "query_cohort_keys",
    _METADATA,
    Column("subject_key", String(64), primary_key=True),
    prefixes=["TEMPORARY"],
)


DEMOGRAPHICS = Table(
    "query_demographics",
    _METADATA,
    Column("subject_key", String(64), primary_key=True),
    Column("sex", String(16)),
    Column("birth_year", Integer),
    prefixes=["TEMPORARY"],
)


@contextmanager
def _filled(session: Session, table: Table, rows: Select[Any]) -> Iterator[Table]:
    connection = session.connection()
    connection.execute(CreateTable(table, if_not_exists=True))
    connection.execute(delete(table))
    connection.execute(insert(table).from_select([c.name for c in table.c], rows))
    try:
        yield table
    finally:
        connection.execute(delete(table))


def cohort_keys(session: Session, patients: Select[Any]) -> AbstractContextManager[Table]:
    """The table of the subject keys ``patients`` selects (each once), for the block."""
    return _filled(session, COHORT_KEYS, patients)


def demographics(session: Session) -> AbstractContextManager[Table]:
    """The table of every known subject's demographics, for the block."""
    return _filled(session, DEMOGRAPHICS, select(known_demographics()))
