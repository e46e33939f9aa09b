"""The last nightly verification's outcome, for an O(1) ``/healthz`` and ``archiver stats``.

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-03

``verification_state`` is derived state (``archiver.integrity_job``): every run of the
``verification`` job is sealed as a ``verification`` audit record and its signed integrity
report is written to the WORM store; this one row only says how the last run ended (and its
first error: a seq or an object key, never content). A catalog migrated to this revision
starts with no row: the archive reports ``unverified`` until the job first runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "verification_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_error", sa.String(length=1024), nullable=True),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.BigInteger(), nullable=False),
        sa.Column("checkpoints", sa.BigInteger(), nullable=False),
        sa.Column("journal_id", SEQ, nullable=True),
        sa.Column("report_key", sa.String(length=512), nullable=True),
        sa.Column("report_sha256", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("verification_state")
