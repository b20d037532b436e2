"""deferred tasks: a node that answers after local approval says so, and the task is not
handed to it again

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:12:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_target", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deferred_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_target", schema=None) as batch_op:
        batch_op.drop_column("deferred_at")
