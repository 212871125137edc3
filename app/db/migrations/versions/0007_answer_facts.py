"""answer facts: the facts supplied to each answer, the check against them, the asker's time zone

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("answers", sa.Column("facts", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
    op.add_column("answers", sa.Column("fact_check", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
    op.add_column("answers", sa.Column("timezone", sa.String(length=64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.drop_column("timezone")
        batch.drop_column("fact_check")
        batch.drop_column("facts")
