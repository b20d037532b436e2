"""clinical facts: person, condition, drug, measurement, observation, procedure, visit,
imaging_study (see node/clinical/models.py)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 10:28:25.655941
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "condition",
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("display", sa.String(length=256), nullable=False),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_condition")),
        sa.UniqueConstraint("source", name=op.f("uq_condition_source")),
    )
    with op.batch_alter_table("condition", schema=None) as batch_op:
        batch_op.create_index(
            "ix_condition_subject_key_date", ["subject_key", "date"], unique=False
        )
        batch_op.create_index(
            "ix_condition_system_code_date", ["system", "code", "date"], unique=False
        )

    op.create_table(
        "drug",
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("display", sa.String(length=256), nullable=False),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drug")),
        sa.UniqueConstraint("source", name=op.f("uq_drug_source")),
    )
    with op.batch_alter_table("drug", schema=None) as batch_op:
        batch_op.create_index("ix_drug_subject_key_date", ["subject_key", "date"], unique=False)
        batch_op.create_index("ix_drug_system_code_date", ["system", "code", "date"], unique=False)

    op.create_table(
        "imaging_study",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("modalities", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_study")),
        sa.UniqueConstraint("source", name=op.f("uq_imaging_study_source")),
    )
    with op.batch_alter_table("imaging_study", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_imaging_study_study_uid"), ["study_uid"], unique=False)
        batch_op.create_index(
            "ix_imaging_study_subject_key_date", ["subject_key", "date"], unique=False
        )

    op.create_table(
        "measurement",
        sa.Column("value_as_number", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("display", sa.String(length=256), nullable=False),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurement")),
        sa.UniqueConstraint("source", name=op.f("uq_measurement_source")),
    )
    with op.batch_alter_table("measurement", schema=None) as batch_op:
        batch_op.create_index(
            "ix_measurement_subject_key_date", ["subject_key", "date"], unique=False
        )
        batch_op.create_index(
            "ix_measurement_system_code_date", ["system", "code", "date"], unique=False
        )

    op.create_table(
        "observation",
        sa.Column("value_as_number", sa.Float(), nullable=True),
        sa.Column("value_as_string", sa.String(length=256), nullable=False),
        sa.Column("value_system", sa.String(length=128), nullable=False),
        sa.Column("value_code", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("display", sa.String(length=256), nullable=False),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observation")),
        sa.UniqueConstraint("source", name=op.f("uq_observation_source")),
    )
    with op.batch_alter_table("observation", schema=None) as batch_op:
        batch_op.create_index(
            "ix_observation_subject_key_date", ["subject_key", "date"], unique=False
        )
        batch_op.create_index(
            "ix_observation_system_code_date", ["system", "code", "date"], unique=False
        )

    op.create_table(
        "person",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=64), nullable=False),
        sa.Column("sex", sa.String(length=16), nullable=False),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("death_date", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_person")),
        sa.UniqueConstraint("subject_key", name=op.f("uq_person_subject_key")),
    )
    op.create_table(
        "procedure",
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("display", sa.String(length=256), nullable=False),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_procedure")),
        sa.UniqueConstraint("source", name=op.f("uq_procedure_source")),
    )
    with op.batch_alter_table("procedure", schema=None) as batch_op:
        batch_op.create_index(
            "ix_procedure_subject_key_date", ["subject_key", "date"], unique=False
        )
        batch_op.create_index(
            "ix_procedure_system_code_date", ["system", "code", "date"], unique=False
        )

    op.create_table(
        "visit",
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("display", sa.String(length=256), nullable=False),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit")),
        sa.UniqueConstraint("source", name=op.f("uq_visit_source")),
    )
    with op.batch_alter_table("visit", schema=None) as batch_op:
        batch_op.create_index("ix_visit_subject_key_date", ["subject_key", "date"], unique=False)
        batch_op.create_index("ix_visit_system_code_date", ["system", "code", "date"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("visit", schema=None) as batch_op:
        batch_op.drop_index("ix_visit_system_code_date")
        batch_op.drop_index("ix_visit_subject_key_date")

    op.drop_table("visit")
    with op.batch_alter_table("procedure", schema=None) as batch_op:
        batch_op.drop_index("ix_procedure_system_code_date")
        batch_op.drop_index("ix_procedure_subject_key_date")

    op.drop_table("procedure")
    op.drop_table("person")
    with op.batch_alter_table("observation", schema=None) as batch_op:
        batch_op.drop_index("ix_observation_system_code_date")
        batch_op.drop_index("ix_observation_subject_key_date")

    op.drop_table("observation")
    with op.batch_alter_table("measurement", schema=None) as batch_op:
        batch_op.drop_index("ix_measurement_system_code_date")
        batch_op.drop_index("ix_measurement_subject_key_date")

    op.drop_table("measurement")
    with op.batch_alter_table("imaging_study", schema=None) as batch_op:
        batch_op.drop_index("ix_imaging_study_subject_key_date")
        batch_op.drop_index(batch_op.f("ix_imaging_study_study_uid"))

    op.drop_table("imaging_study")
    with op.batch_alter_table("drug", schema=None) as batch_op:
        batch_op.drop_index("ix_drug_system_code_date")
        batch_op.drop_index("ix_drug_subject_key_date")

    op.drop_table("drug")
    with op.batch_alter_table("condition", schema=None) as batch_op:
        batch_op.drop_index("ix_condition_system_code_date")
        batch_op.drop_index("ix_condition_subject_key_date")

    op.drop_table("condition")
