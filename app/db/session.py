"""Engine and session factory, and schema migration at start-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from app.config import DatabaseSettings
from app.db.health import DatabaseHealth, bound_connections, connection_class

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


# A database error's message never quotes the statement's values: they are chunk text, questions, prompts and
# answers, and such messages reach the log.
HIDE_PARAMETERS = True

def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker process writes; foreign keys make deletes cascade;
    # the busy timeout turns writer contention between processes into waiting instead of errors.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_db_engine(url: str, settings: DatabaseSettings | None = None) -> tuple[Engine, DatabaseHealth | None]:
    """The engine, and for PostgreSQL the health monitor that bounds its waits (see ``app.db.health``)."""
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=HIDE_PARAMETERS
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine, None
    settings = settings or DatabaseSettings()
    # Options given in the URL (a search_path, say) are kept: connect_args would replace them.
    given = make_url(url).query.get("options", "")
    url_options = given if isinstance(given, str) else " ".join(given)
    timeout_option = f"-c statement_timeout={int(settings.statement_timeout_seconds * 1000)}"
    connect_args: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout_seconds,
        "options": f"{url_options} {timeout_option}".strip(),
    }
    engine = create_engine(
        url,
        hide_parameters=HIDE_PARAMETERS,
        connect_args=connect_args,
        pool_pre_ping=True,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        pool_timeout=settings.pool_timeout_seconds,
    )
    bounded = connection_class(settings.statement_timeout_seconds + 5)
    health = DatabaseHealth(
        url=url,
        connect_args=connect_args,
        connection=bounded,
        probe_interval_seconds=settings.probe_interval_seconds,
        probe_timeout_seconds=settings.request_timeout_seconds,
    )
    health.attach(engine)  # first: while the database is down, connecting fails before it is tried
    bound_connections(engine, bounded, settings.connect_timeout_seconds)
    return engine, health


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction, safe for schema changes that rebuild tables.

    On SQLite, Alembic's batch mode rebuilds a table by copying it and dropping the original; with foreign
    keys on, that DROP cascades and deletes every row pointing at the table (chunks, jobs). SQLite only
    honours the pragma outside a transaction, hence the commits around it.
    """
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                yield connection
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with migration_connection(engine) as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        after = MigrationContext.configure(connection).get_current_revision()
    if after != before:
        logger.info("database schema migrated from %s to revision %s", before or "empty", after)
