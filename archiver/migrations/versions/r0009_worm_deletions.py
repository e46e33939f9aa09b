"""WORM deletions: segments and media objects disposition deletes once all their records are disposed.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0012"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "worm_deletions",
        sa.Column("object_key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("segment_id", SEQ, nullable=True),
        sa.Column("version", sa.String(length=255), nullable=True),
        sa.Column("disposition_id", SEQ, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("leaf_hashes", sa.JSON(), nullable=False),
        sa.Column("commitments", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("requested_at", WHEN, nullable=False),
        sa.Column("deleted_at", WHEN, nullable=True),
        sa.Column("deleted_by_run", SEQ, nullable=True),
        sa.PrimaryKeyConstraint("object_key"),
    )
    op.create_index("ix_worm_deletions_disposition_id", "worm_deletions", ["disposition_id"], unique=False)
    op.create_index("ix_worm_deletions_segment_id", "worm_deletions", ["segment_id"], unique=False)
    op.create_index("ix_worm_deletions_state", "worm_deletions", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_worm_deletions_state", table_name="worm_deletions")
    op.drop_index("ix_worm_deletions_segment_id", table_name="worm_deletions")
    op.drop_index("ix_worm_deletions_disposition_id", table_name="worm_deletions")
    op.drop_table("worm_deletions")
