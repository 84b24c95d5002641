import sqlite3

import pytest
from sqlalchemy import text

from app.core import db
from app.core.tables import Battle, ModelVersion, Vote
from tests.conftest import make_workbench


def test_sqlite_uses_wal_and_records_schema_version(wb):
    with wb.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("SELECT version FROM schema_info")).scalar() == db.SCHEMA_VERSION
    names = set(sqlite3.connect(wb.settings.home / "forgeloop.db").execute(
        "SELECT name FROM sqlite_master WHERE type='table'").fetchall())
    for table in ("datasets", "runs", "models", "battles", "votes", "deployments"):
        assert (table,) in names


def test_pending_migrations_run_in_order(tmp_path, monkeypatch):
    home = tmp_path / "h"
    make_workbench(home).close()
    engine = db.make_engine(f"sqlite:///{home / 'forgeloop.db'}")
    with engine.begin() as conn:  # pretend it is a version 1 database
        conn.execute(text("UPDATE schema_info SET version = 1"))
    applied = []

    def add_column(conn):
        applied.append("v1->v2")
        conn.execute(text("ALTER TABLE models ADD COLUMN note TEXT"))

    monkeypatch.setattr(db, "MIGRATIONS", [add_column])
    monkeypatch.setattr(db, "SCHEMA_VERSION", 2)
    assert db.migrate(engine) == 2
    assert db.migrate(engine) == 2  # idempotent: nothing left to apply
    assert applied == ["v1->v2"]
    with engine.connect() as conn:
        cols = [r[1] for r in conn.execute(text("PRAGMA table_info(models)"))]
    assert "note" in cols


def test_newer_database_is_refused(tmp_path):
    home = tmp_path / "h"
    make_workbench(home).close()
    engine = db.make_engine(f"sqlite:///{home / 'forgeloop.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_info SET version = 99"))
    with pytest.raises(RuntimeError, match="newer"):
        db.migrate(engine)


def test_database_enforces_one_vote_per_turn(wb):
    from sqlalchemy.exc import IntegrityError

    with wb.session() as s:
        a = ModelVersion(name="a", kind="base", base_path="x/a")
        b = ModelVersion(name="b", kind="base", base_path="x/b")
        s.add_all([a, b])
        s.commit()
        battle = Battle(model_a_id=a.id, model_b_id=b.id)
        s.add(battle)
        s.commit()
        s.add(Vote(battle_id=battle.id, turn=0, choice="a"))
        s.commit()
        s.add(Vote(battle_id=battle.id, turn=0, choice="b"))
        with pytest.raises(IntegrityError):
            s.commit()


V1_RUNS = (
    "CREATE TABLE runs (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, stage VARCHAR NOT NULL, "
    "status VARCHAR NOT NULL, model_id INTEGER NOT NULL REFERENCES models(id), dataset_ids JSON, "
    "recipe VARCHAR, request JSON, config JSON, env JSON, gpus VARCHAR NOT NULL, "
    "output_dir VARCHAR NOT NULL, pid INTEGER, pid_started FLOAT, returncode INTEGER, error VARCHAR, "
    "metrics JSON, output_model_id INTEGER, created_at DATETIME NOT NULL, started_at DATETIME, "
    "finished_at DATETIME)"
)


def test_v1_runs_move_their_lifecycle_into_jobs(tmp_path):
    from app.core.tables import Run
    from app.train import training

    home = tmp_path / "h"
    make_workbench(home).close()
    con = sqlite3.connect(home / "forgeloop.db")
    con.executescript(f"DROP TABLE runs; {V1_RUNS};")
    con.execute("INSERT INTO models (name, kind, base_path, template, finetuning_type, in_arena, meta, "
                "created_at) VALUES ('m', 'base', '/x', 'chatml', 'lora', 1, '{}', '2026-01-01')")
    con.execute("INSERT INTO runs VALUES (1, 'old', 'sft', 'failed', 1, '[]', 'sft_lora', '{}', "
                "'{\"finetuning_type\": \"lora\"}', '{\"CUDA_VISIBLE_DEVICES\": \"0\"}', '0', "
                "'/r/old/output', 77, 1.5, 1, 'boom', '{}', NULL, '2026-01-01', NULL, NULL)")
    con.execute("UPDATE schema_info SET version = 1")
    con.commit()
    con.close()
    wb = make_workbench(home)
    try:
        run = training.get_run(wb, 1)
        assert (run.status, run.error, run.returncode, run.gpus) == ("failed", "boom", 1, "0")
        assert run.job.kind == "train" and run.job.log_path == "/r/old/train.log"
        assert run.env["CUDA_VISIBLE_DEVICES"] == "0"
        with wb.session() as s:  # the dropped NOT NULL columns no longer block new runs
            s.add(Run(name="new", stage="sft", model_id=1, output_dir="/r/new/output"))
            s.commit()
    finally:
        wb.close()
