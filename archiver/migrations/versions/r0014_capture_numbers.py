"""Capture health: each business number as the capture-health review has seen it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04

``capture_numbers`` (``archiver.capture_review``): derived from the sealed webhook deliveries
(last webhook, last app-side event, webhook count and longest quiet spell, Coexistence, history
sync chunks). A catalog migrated to this revision starts with an empty table; the review's first
run reads every sealed delivery from seq 1.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "capture_numbers",
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("display", sa.String(length=64), nullable=True),
        sa.Column("waba", sa.String(length=64), nullable=True),
        sa.Column("first_at", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", SEQ, nullable=False),
        sa.Column("webhooks", sa.BigInteger(), nullable=False),
        sa.Column("longest_gap", sa.BigInteger(), nullable=False),
        sa.Column("coexistence", sa.Boolean(), nullable=False),
        sa.Column("app_at", sa.BigInteger(), nullable=True),
        sa.Column("app_seq", SEQ, nullable=True),
        sa.Column("app_seqs", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )


def downgrade() -> None:
    op.drop_table("capture_numbers")
    op.execute("DELETE FROM cursors WHERE name IN ('capture-review', 'capture-review-statuses', "
               "'capture-review-accounts')")
