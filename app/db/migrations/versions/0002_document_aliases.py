"""document aliases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 07:52:40.986480
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, not batch mode: on SQLite batch mode rebuilds the table, and dropping the old one
    # would cascade to chunks and jobs.
    op.add_column(
        "documents", sa.Column("aliases", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
    )


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("aliases")
