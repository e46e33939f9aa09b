"""Export jobs count the transcript's pages as it renders.

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-04

``export_jobs.pages_done`` (pages of ``transcript.pdf`` rendered so far) and
``export_jobs.pages_total`` (its pages once whole), both NULL until the transcript starts
and for an export without ``pdf`` (``archiver.export_jobs``). Jobs of a catalog migrated
here keep NULL: their progress shows no pages.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("export_jobs") as batch:
        batch.add_column(sa.Column("pages_done", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("pages_total", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("export_jobs") as batch:
        batch.drop_column("pages_total")
        batch.drop_column("pages_done")
