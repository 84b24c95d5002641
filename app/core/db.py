"""Engine creation (SQLite in WAL mode by default) and schema migrations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel, create_engine, select

from app.core import tables
from app.core.tables import SchemaInfo

# Lifecycle columns that moved from runs to jobs in schema v2.
_RUN_JOB_COLUMNS = ("status", "env", "gpus", "pid", "pid_started", "returncode", "error",
                    "started_at", "finished_at")


def _v2_runs_become_jobs(conn: Connection) -> None:
    """v1 → v2: each training run's lifecycle moves into a generic ``jobs`` row."""
    cols = {c["name"] for c in inspect(conn).get_columns("runs")}
    if "job_id" in cols:
        return
    conn.execute(text("ALTER TABLE runs ADD COLUMN job_id INTEGER REFERENCES jobs(id)"))
    rows = conn.execute(text(
        "SELECT id, name, output_dir, status, env, gpus, pid, pid_started, returncode, error, "
        "created_at, started_at, finished_at FROM runs")).mappings().all()
    for r in rows:
        folder = Path(r["output_dir"]).parent
        env = json.loads(r["env"]) if isinstance(r["env"], str) else (r["env"] or {})
        env.update({"LLAMABOARD_ENABLED": "1", "LLAMABOARD_WORKDIR": r["output_dir"]})
        gpus = [g for g in (r["gpus"] or "").split(",") if g]
        status = "interrupted" if r["status"] == "created" else r["status"]
        job_id = conn.execute(text(
            "INSERT INTO jobs (kind, title, status, command, env, cwd, log_path, progress_path, "
            "result_path, resources, pid, pid_started, returncode, cancel_requested, progress, params, "
            "result, error, created_at, started_at, finished_at) VALUES (:kind, :title, :status, "
            ":command, :env, :cwd, :log, :progress, NULL, :resources, :pid, :pid_started, :rc, 0, "
            "'{}', '{}', '{}', :error, :created, :started, :finished)"), {
            "kind": "train", "title": r["name"], "status": status,
            "command": json.dumps(["llamafactory-cli", "train", str(folder / "config.yaml")]),
            "env": json.dumps(env), "cwd": str(folder), "log": str(folder / "train.log"),
            "progress": str(Path(r["output_dir"]) / "trainer_log.jsonl"),
            "resources": ",".join(f"gpu:{g}" for g in gpus) or "cpu", "pid": r["pid"],
            "pid_started": r["pid_started"], "rc": r["returncode"], "error": r["error"],
            "created": r["created_at"], "started": r["started_at"], "finished": r["finished_at"],
        }).lastrowid
        conn.execute(text("UPDATE runs SET job_id = :j WHERE id = :r"), {"j": job_id, "r": r["id"]})
    for col in _RUN_JOB_COLUMNS:
        if col in cols:
            conn.execute(text(f"ALTER TABLE runs DROP COLUMN {col}"))


# Each entry upgrades the schema from version i to i + 1. Version 1 is the
# initial schema made by create_all; later changes append a function here.
MIGRATIONS: list[Callable[[Connection], None]] = [_v2_runs_become_jobs]
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
