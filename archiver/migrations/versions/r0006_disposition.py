"""Disposition: the derived tables of sealed disposition decisions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``dispositions`` (each run's plan, its journal row and sealed record, when it was applied),
``disposed_keys`` (the data keys a disposition destroyed) and ``disposition_batches`` (keys of
``review: true`` classes waiting for approval). Derived state (``archiver.disposition``); an
existing catalog gets empty tables (nothing was disposed before this revision).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dispositions",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("journal_id", SEQ, nullable=False),
        sa.Column("seq", SEQ, nullable=True),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("applied_at", WHEN, nullable=True),
    )
    op.create_index("ix_dispositions_journal_id", "dispositions", ["journal_id"])
    op.create_table(
        "disposed_keys",
        sa.Column("key_id", sa.String(length=96), primary_key=True),
        sa.Column("disposition_id", SEQ, sa.ForeignKey("dispositions.id"), nullable=False),
        sa.Column("disposed_at", WHEN, nullable=False),
    )
    op.create_index("ix_disposed_keys_disposition_id", "disposed_keys", ["disposition_id"])
    op.create_table(
        "disposition_batches",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("retention_class", sa.String(length=64), nullable=False),
        sa.Column("key_ids", sa.JSON(), nullable=False),
        sa.Column("seqs", sa.JSON(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("decided_at", WHEN, nullable=True),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.String(length=2000), nullable=True),
        sa.Column("decision_journal_id", SEQ, nullable=True),
        sa.Column("disposition_id", SEQ, nullable=True),
    )
    op.create_index("ix_disposition_batches_state", "disposition_batches", ["state"])


def downgrade() -> None:
    for table in ("disposition_batches", "disposed_keys", "dispositions"):
        op.drop_table(table)
