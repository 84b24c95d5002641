import sqlite3

import pytest
from sqlalchemy import text

from app import db
from app.tables import Battle, ModelVersion, Vote
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
    make_workbench(home).close()  # a database at version 1
    applied = []

    def add_column(conn):
        applied.append("v1->v2")
        conn.execute(text("ALTER TABLE models ADD COLUMN note TEXT"))

    monkeypatch.setattr(db, "MIGRATIONS", [add_column])
    monkeypatch.setattr(db, "SCHEMA_VERSION", 2)
    engine = db.make_engine(f"sqlite:///{home / 'forgeloop.db'}")
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
