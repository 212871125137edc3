"""never reuse document and job ids on SQLite

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 08:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("documents", "jobs")


def upgrade() -> None:
    # SQLite hands out max(id) + 1, so deleting the newest document and uploading another gave the new one the
    # old id, and so the old chunk ids. AUTOINCREMENT can only be declared when a table is created, hence the
    # rebuild (safe: migrations run with foreign keys off, see app.db.session.migration_connection).
    # PostgreSQL sequences never reuse ids: nothing to do there.
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
