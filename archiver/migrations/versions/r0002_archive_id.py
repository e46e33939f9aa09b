"""The archive's identity; the indexing cursor moves from the catalog to the search index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

``archive`` holds one row: a random id made when the catalog is created (here, for a
catalog that existed before). The search index records which archive it was built for
and how far (``SearchIndex.state``), so the catalog's ``index`` cursor goes: an index
built before this revision carries no state and is rebuilt by the next index run.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    archive = op.create_table(
        "archive",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("archive_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_archive_one_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(archive, [{"id": 1, "archive_id": uuid.uuid4().hex, "created_at": datetime.now(timezone.utc)}])
    op.execute(sa.text("DELETE FROM cursors WHERE name = 'index'"))


def downgrade() -> None:
    # The index keeps its own cursor; an index run after a downgrade starts from 0 and
    # rewrites every document (idempotent by seq).
    op.drop_table("archive")
