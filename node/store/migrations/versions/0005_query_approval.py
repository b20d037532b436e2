"""query approval: federated queries held for hospital IT's decision

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 10:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "query_approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=128), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("question_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hub_reply", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_query_approval")),
        sa.UniqueConstraint("task_id", name=op.f("uq_query_approval_task_id")),
    )
    with op.batch_alter_table("query_approval", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_query_approval_project"), ["project"], unique=False)
        batch_op.create_index(batch_op.f("ix_query_approval_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("query_approval", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_query_approval_state"))
        batch_op.drop_index(batch_op.f("ix_query_approval_project"))
    op.drop_table("query_approval")
