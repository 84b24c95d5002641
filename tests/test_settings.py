from pathlib import Path

import pytest

import launch
from app.core.settings import Settings, parse_auth


def test_parse_auth_pairs_and_errors():
    assert parse_auth(["ann:pw1", "bob:p:w"]) == (("ann", "pw1"), ("bob", "p:w"))
    for bad in ("nocolon", ":pw", "user:"):
        with pytest.raises(ValueError, match="user:password"):
            parse_auth([bad])


def test_cli_options_build_typed_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("FORGELOOP_HOME", raising=False)
    s = launch.parse_settings(
        ["--host", "0.0.0.0", "--port", "9000", "--storage", str(tmp_path), "--share",
         "--auth", "a:b", "--auth", "c:d"]
    )
    assert (s.host, s.port, s.share, s.home) == ("0.0.0.0", 9000, True, tmp_path.resolve())
    assert s.auth == (("a", "b"), ("c", "d"))
    assert s.db_url == f"sqlite:///{tmp_path.resolve() / 'forgeloop.db'}"


def test_environment_is_read_and_flags_win(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGELOOP_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("DATABASE_URL", "sqlite:////tmp/elsewhere.db")
    s = launch.parse_settings([])
    assert s.home == (tmp_path / "env-home").resolve()
    assert s.db_url == "sqlite:////tmp/elsewhere.db"
    s2 = launch.parse_settings(["--storage", str(tmp_path / "flag")])
    assert s2.home == (tmp_path / "flag").resolve()


def test_bad_cli_values_exit_with_message(capsys):
    with pytest.raises(SystemExit):
        launch.parse_settings(["--auth", "justuser"])
    assert "user:password" in capsys.readouterr().err
    with pytest.raises(ValueError, match="port"):
        Settings(home=Path("/tmp/x"), port=70000)
