"""parse details: the file type and what parsing learned beyond the text (OCR'd pages, a mail's headers)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("ocr_pages", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
    op.add_column("documents", sa.Column("properties", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("properties")
        batch.drop_column("ocr_pages")
