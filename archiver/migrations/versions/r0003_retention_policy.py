"""Retention classes applied: the policy versions sealed, each record's policy, extensions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``records.policy_seq`` names the ``policy`` record whose class assigned the record's
retention (NULL for records sealed before this revision: they were kept
ARCHIVER_DEFAULT_RETENTION from sealing). ``policy_versions`` holds each version of
``retention.yaml`` the service loaded (when it differs from the one before) (bytes, hash, who, when; ``seq`` once sealed), and
``retention_extensions`` each ``archiver retention extend`` decision and when it was applied.
Both are derived state: the sealed ``policy`` and ``decision`` records hold the same.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("policy_seq", SEQ, nullable=True))
    op.create_table(
        "policy_versions",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("file", sa.String(length=1024), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("journal_id", SEQ, nullable=False),
        sa.Column("seq", SEQ, nullable=True),
        sa.Column("loaded_by", sa.String(length=128), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_policy_versions_seq", "policy_versions", ["seq"])
    op.create_index("ix_policy_versions_sha256", "policy_versions", ["sha256"])
    op.create_table(
        "retention_extensions",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("retention_class", sa.String(length=64), nullable=False),
        sa.Column("retain_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("journal_id", SEQ, nullable=False),
        sa.Column("seq", SEQ, nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("records", sa.Integer(), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("retention_extensions")
    op.drop_index("ix_policy_versions_sha256", table_name="policy_versions")
    op.drop_index("ix_policy_versions_seq", table_name="policy_versions")
    op.drop_table("policy_versions")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("policy_seq")
