"""Export jobs, and the last nightly verification's outcome (an O(1) ``/healthz``).

Revision ID: 0011
Revises: 0012
Create Date: 2026-12-03

``verification_state`` is derived state (``archiver.integrity_job``): every run of the
``verification`` job is sealed as a ``verification`` audit record and its signed integrity
report is written to the WORM store; this one row only says how the last run ended (and its
first error: a seq or an object key, never content). A catalog migrated to this revision
starts with no row: the archive reports ``unverified`` until the job first runs.

``export_jobs`` is derived state too (``archiver.export_jobs``): each ``POST /api/v1/exports``
queues one row, which says how far the export is; the export itself is sealed as its
``export`` audit record. A catalog migrated here starts with no export jobs (bundles written
before by the synchronous API stay downloadable from ``ARCHIVER_HOME/exports``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
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


    op.create_table(
        "export_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("records_done", sa.BigInteger(), nullable=False),
        sa.Column("records_total", sa.BigInteger(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_export_jobs_state", "export_jobs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_export_jobs_state", table_name="export_jobs")
    op.drop_table("export_jobs")
    op.drop_table("verification_state")
