"""Matters and litigation holds: the derived tables of the sealed hold decisions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``matters``, ``holds``, ``held_records`` (hold, seq), ``hold_objects`` (the WORM objects
a hold has put its legal hold on) and ``hold_history``. All of them are derived state:
``archiver.holds`` rebuilds them from the sealed ``matter_created``, ``hold_created``,
``hold_applied`` and ``hold_released`` audit records. An existing catalog gets empty
tables (no hold existed before this revision).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "matters",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("decision_seq", SEQ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_matters"),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("matter_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("decision_seq", SEQ, nullable=False),
        sa.Column("cursor", SEQ, nullable=False),
        sa.Column("released_at", WHEN, nullable=True),
        sa.Column("released_by", sa.String(length=255), nullable=True),
        sa.Column("release_reason", sa.String(length=2000), nullable=True),
        sa.Column("release_seq", SEQ, nullable=True),
        sa.ForeignKeyConstraint(["matter_id"], ["matters.id"], name="fk_holds_matter_id"),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
    )
    op.create_index("ix_holds_matter_id", "holds", ["matter_id"])
    op.create_table(
        "held_records",
        sa.Column("hold_id", sa.String(length=32), nullable=False),
        sa.Column("seq", SEQ, autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name="fk_held_records_hold_id"),
        sa.PrimaryKeyConstraint("hold_id", "seq", name="pk_held_records"),
    )
    op.create_index("ix_held_records_seq", "held_records", ["seq"])
    op.create_table(
        "hold_history",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("hold_id", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("decision_seq", SEQ, nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name="fk_hold_history_hold_id"),
        sa.PrimaryKeyConstraint("id", name="pk_hold_history"),
    )
    op.create_index("ix_hold_history_hold_id", "hold_history", ["hold_id"])
    op.create_table(
        "hold_objects",
        sa.Column("hold_id", sa.String(length=32), nullable=False),
        sa.Column("object_key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name="fk_hold_objects_hold_id"),
        sa.PrimaryKeyConstraint("hold_id", "object_key", name="pk_hold_objects"),
    )
    op.create_index("ix_hold_objects_object_key", "hold_objects", ["object_key"])


def downgrade() -> None:
    for table in ("hold_objects", "hold_history", "held_records", "holds", "matters"):
        op.drop_table(table)
