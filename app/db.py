"""Engine creation (SQLite in WAL mode by default) and schema migrations."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel, create_engine, select

from app import tables
from app.tables import SchemaInfo

# Each entry upgrades the schema from version i to i + 1. Version 1 is the
# initial schema made by create_all; later changes append a function here.
MIGRATIONS: list[Callable[[Connection], None]] = []
SCHEMA_VERSION = 1 + len(MIGRATIONS)


def make_engine(url: str) -> Engine:
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30} if is_sqlite else {},
    )
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def migrate(engine: Engine) -> int:
    """Create missing tables and run pending migrations; return the schema version."""
    assert tables  # the import registers every table on SQLModel.metadata
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        info = session.exec(select(SchemaInfo)).first()
        if info is None:
            session.add(SchemaInfo(version=SCHEMA_VERSION))
            session.commit()
            return SCHEMA_VERSION
        current = info.version
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema v{current} is newer than this Forgeloop (v{SCHEMA_VERSION})"
        )
    with engine.begin() as conn:
        for step in MIGRATIONS[current - 1 :]:
            step(conn)
    with Session(engine) as session:
        info = session.exec(select(SchemaInfo)).one()
        info.version = SCHEMA_VERSION
        session.add(info)
        session.commit()
    return SCHEMA_VERSION
