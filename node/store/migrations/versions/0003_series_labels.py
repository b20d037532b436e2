"""query engine: series_label (normalized series labels), query_answer (differencing guard)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "series_label",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("sequence_type", sa.String(length=32), nullable=False),
        sa.Column("contrast", sa.Boolean(), nullable=False),
        sa.Column("body_part", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["series.id"],
            name=op.f("fk_series_label_series_id_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("series_id", name=op.f("pk_series_label")),
    )
    with op.batch_alter_table("series_label", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_series_label_sequence_type"), ["sequence_type"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_series_label_body_part"), ["body_part"], unique=False)

    op.create_table(
        "query_answer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=128), nullable=False),
        sa.Column("question_hash", sa.String(length=64), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("member_sets", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_query_answer")),
    )
    with op.batch_alter_table("query_answer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_query_answer_project"), ["project"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("query_answer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_query_answer_project"))
    op.drop_table("query_answer")
    with op.batch_alter_table("series_label", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_label_body_part"))
        batch_op.drop_index(batch_op.f("ix_series_label_sequence_type"))
    op.drop_table("series_label")
