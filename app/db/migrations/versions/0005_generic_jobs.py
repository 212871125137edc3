"""generic jobs: a payload, a not-before time, and a document only for ingest jobs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_jobs = sa.table(
    "jobs",
    sa.column("id", sa.Integer()),
    sa.column("document_id", sa.Integer()),
    sa.column("payload", sa.JSON()),
    sa.column("run_after", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _highest_job_id_handed_out() -> int | None:
    """SQLite: the AUTOINCREMENT high-water mark, which a table rebuild would lower to the highest id left."""
    if op.get_bind().dialect.name != "sqlite":
        return None
    highest = op.get_bind().scalar(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'"))
    return None if highest is None else int(highest)


def _restore_highest_job_id(highest: int | None) -> None:
    if highest is None:
        return
    # Deleted jobs' ids stay retired: the rebuilt table keeps counting from where the old one stopped.
    bind = op.get_bind()
    updated = bind.execute(
        sa.text("UPDATE sqlite_sequence SET seq = max(seq, :highest) WHERE name = 'jobs'"),
        {"highest": highest},
    )
    if updated.rowcount == 0:
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', :highest)"), {"highest": highest}
        )


def upgrade() -> None:
    # Plain ADD COLUMNs first (nullable, so SQLite takes them without a rebuild), then the backfill.
    op.add_column("jobs", sa.Column("payload", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("run_after", sa.DateTime(timezone=True), nullable=True))
    bind = op.get_bind()
    # Every job so far is an ingest job: its payload names its document, and it was claimable from creation.
    rows = bind.execute(sa.select(_jobs.c.id, _jobs.c.document_id)).all()
    if rows:
        bind.execute(
            _jobs.update()
            .where(_jobs.c.id == sa.bindparam("job_id"))
            .values(payload=sa.bindparam("job_payload", type_=sa.JSON())),
            [{"job_id": job_id, "job_payload": {"document_id": document_id}} for job_id, document_id in rows],
        )
    op.execute(_jobs.update().values(run_after=_jobs.c.created_at))

    # SQLite cannot change a column's NULL-ness in place, so batch mode rebuilds the jobs table there (safe:
    # nothing points at jobs, and migrations run with foreign keys off, see migration_connection);
    # PostgreSQL gets plain ALTER COLUMNs.
    highest = _highest_job_id_handed_out()
    with op.batch_alter_table("jobs", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("payload", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("run_after", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column("document_id", existing_type=sa.Integer(), nullable=True)
    _restore_highest_job_id(highest)


def downgrade() -> None:
    # The old schema has no place for a job without a document (a train or export job): those go.
    op.execute(_jobs.delete().where(_jobs.c.document_id.is_(None)))
    highest = _highest_job_id_handed_out()
    with op.batch_alter_table("jobs", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("document_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("run_after")
        batch.drop_column("payload")
    _restore_highest_job_id(highest)
