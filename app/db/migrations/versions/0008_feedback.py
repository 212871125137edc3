"""feedback: ratings and corrections of answers, a collection's feedback version, a job's result

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=True),
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("rating", sa.String(length=10), nullable=False),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("chunk_ids", sa.JSON(), nullable=False),
        sa.Column("question_vector", sa.LargeBinary(), nullable=True),
        sa.Column("embedding_model", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_feedback_tenant_created", "feedback", ["tenant_id", "created_at"])
    op.create_index("ix_feedback_collection_status", "feedback", ["collection_id", "status"])
    op.create_index("ix_feedback_query_id", "feedback", ["query_id"])
    op.add_column(
        "collections", sa.Column("feedback_version", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column("jobs", sa.Column("result", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("result")
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("feedback_version")
    op.drop_index("ix_feedback_query_id", table_name="feedback")
    op.drop_index("ix_feedback_collection_status", table_name="feedback")
    op.drop_index("ix_feedback_tenant_created", table_name="feedback")
    op.drop_table("feedback")
