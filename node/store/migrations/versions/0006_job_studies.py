"""job studies: a retrieval job's per-study progress in rows, not in its JSON report

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 14:00:00.000000

Recording one study used to rewrite every study's entry (``job.report["studies"]``): a job of
n studies wrote n² entries. The entries of jobs already planned move into the new table.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_job = sa.table("job", sa.column("id", sa.Integer()), sa.column("report", sa.JSON()))
_job_study = sa.table(
    "job_study",
    sa.column("job_id", sa.Integer()),
    sa.column("position", sa.Integer()),
    sa.column("study_key", sa.String()),
    sa.column("state", sa.String()),
    sa.column("found", sa.Integer()),
    sa.column("series", sa.Integer()),
    sa.column("retrieved", sa.Integer()),
    sa.column("failed", sa.Integer()),
    sa.column("stored", sa.Integer()),
    sa.column("attempts", sa.Integer()),
    sa.column("error", sa.Text()),
)
_COUNTS = ("found", "retrieved", "failed", "stored", "attempts")


def upgrade() -> None:
    op.create_table(
        "job_study",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("study_key", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("found", sa.Integer(), nullable=False),
        sa.Column("series", sa.Integer(), nullable=True),
        sa.Column("retrieved", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_job_study_job_id_job"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_study")),
        sa.UniqueConstraint("job_id", "study_key", name=op.f("uq_job_study_job_id")),
    )
    with op.batch_alter_table("job_study", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_study_job_id"), ["job_id"], unique=False)
    _move_entries_to_rows()


def downgrade() -> None:
    _move_rows_to_entries()
    with op.batch_alter_table("job_study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_study_job_id"))
    op.drop_table("job_study")


def _move_entries_to_rows() -> None:
    bind = op.get_bind()
    for job_id, report in bind.execute(sa.select(_job.c.id, _job.c.report)).all():
        studies = (report or {}).get("studies")
        if not isinstance(studies, dict):
            continue
        rows = [
            {
                "job_id": job_id,
                "position": position,
                "study_key": str(key)[:64],
                "state": str(entry.get("state", "pending")),
                "series": entry.get("series"),
                "error": str(entry.get("error", "")),
                **{name: int(entry.get(name) or 0) for name in _COUNTS},
            }
            for position, (key, entry) in enumerate(studies.items())
        ]
        if rows:
            bind.execute(_job_study.insert(), rows)
        kept = {k: v for k, v in report.items() if k != "studies"}
        bind.execute(_job.update().where(_job.c.id == job_id).values(report=kept))


def _move_rows_to_entries() -> None:
    bind = op.get_bind()
    entries: dict[int, dict[str, Any]] = {}
    rows = bind.execute(sa.select(_job_study).order_by(_job_study.c.job_id, _job_study.c.position))
    for row in rows.mappings():
        entries.setdefault(row["job_id"], {})[row["study_key"]] = {
            "state": row["state"],
            "series": row["series"],
            "error": row["error"],
            **{name: row[name] for name in _COUNTS},
        }
    for job_id, studies in entries.items():
        report = bind.execute(sa.select(_job.c.report).where(_job.c.id == job_id)).scalar_one()
        bind.execute(
            _job.update()
            .where(_job.c.id == job_id)
            .values(report={**(report or {}), "studies": studies})
        )
