"""Template governance: snapshots of the Graph API's definitions, sends bound to them, reviews.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

``template_snapshots`` (each a sealed ``template`` record, content-addressed by the SHA-256 of
its canonical definition), ``template_sends`` (outbound template messages bound to the
snapshot in force when sent) and ``template_reviews`` (human reviews, each sealed as a
``decision`` record) (``archiver.template_sync``, ``archiver.template_review``). A catalog
migrated to this revision starts with empty tables; the review's first run reads every sealed
record from seq 1.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "template_snapshots",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("language", sa.String(length=32), nullable=False),
        sa.Column("template_id", sa.String(length=64), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("components_sha256", sa.String(length=64), nullable=False),
        sa.Column("synced_at", sa.BigInteger(), nullable=False),
        sa.Column("journal_id", SEQ, nullable=False),
        sa.Column("seq", SEQ, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_template_snapshots_name", "template_snapshots", ["name"])
    op.create_index("ix_template_snapshots_sha256", "template_snapshots", ["sha256"])
    op.create_table(
        "template_sends",
        sa.Column("wamid", sa.String(length=255), nullable=False),
        sa.Column("record_seq", SEQ, nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("language", sa.String(length=32), nullable=True),
        sa.Column("sent_at", sa.BigInteger(), nullable=False),
        sa.Column("snapshot_seq", SEQ, nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("wamid"),
    )
    op.create_index("ix_template_sends_name", "template_sends", ["name"])
    op.create_table(
        "template_reviews",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("reviewed_at", sa.BigInteger(), nullable=False),
        sa.Column("journal_id", SEQ, nullable=False),
        sa.Column("seq", SEQ, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_template_reviews_name", "template_reviews", ["name"])


def downgrade() -> None:
    op.drop_index("ix_template_reviews_name", table_name="template_reviews")
    op.drop_table("template_reviews")
    op.drop_index("ix_template_sends_name", table_name="template_sends")
    op.drop_table("template_sends")
    op.drop_index("ix_template_snapshots_sha256", table_name="template_snapshots")
    op.drop_index("ix_template_snapshots_name", table_name="template_snapshots")
    op.drop_table("template_snapshots")
    op.execute("DELETE FROM cursors WHERE name IN ('template-review')")
