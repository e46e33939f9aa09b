"""Contact identities: every identifier of a person (wa_id/phone, BSUID) -> one identity.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

``contact_ids`` and ``contact_links`` (which identifiers each link record names) are derived state (``archiver.identity``, architecture decision 12): the
pairings are sealed as ``identity_link`` audit records, and this table is their union
(identifier -> identity, the smallest identifier of the person). A catalog migrated to
this revision starts empty; the sealer's next run replays every sealed link record after
the ``identity`` cursor (``archiver contact rebuild`` makes it again from the chain).
Records sealed before this revision were not read for pairings.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contact_ids",
        sa.Column("identifier", sa.String(length=128), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=False),
        sa.Column("link_seq", SEQ, nullable=False),
        sa.PrimaryKeyConstraint("identifier"),
    )
    op.create_index("ix_contact_ids_identity", "contact_ids", ["identity"], unique=False)
    op.create_table(
        "contact_links",
        sa.Column("link_seq", SEQ, nullable=False, autoincrement=False),
        sa.Column("identifier", sa.String(length=128), nullable=False),
        sa.Column("proof_seq", SEQ, nullable=False),
        sa.PrimaryKeyConstraint("link_seq", "identifier"),
    )
    op.create_index("ix_contact_links_identifier", "contact_links", ["identifier"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_contact_links_identifier", table_name="contact_links")
    op.drop_table("contact_links")
    op.drop_index("ix_contact_ids_identity", table_name="contact_ids")
    op.drop_table("contact_ids")
    op.execute("DELETE FROM cursors WHERE name = 'identity'")
