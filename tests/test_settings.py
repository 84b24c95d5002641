"""Settings: every field reachable as a flag, an environment variable and a forgeloop.toml key,
documented, converted once, with defaults < file < environment < flags."""

from dataclasses import fields
from pathlib import Path

import pytest

import launch
from app.core import config
from app.core.errors import InvalidInput
from app.core.settings import HELP, Settings, parse_auth
from app.train.overrides import validate_overrides
from tests.conftest import ROOT


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


# -- every field reachable and documented ---------------------------------------------------------


def readme_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### `python launch.py` options", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_every_setting_has_a_flag_an_env_var_a_help_text_and_a_readme_row():
    parser = launch.settings_parser()
    flags = parser._option_string_actions  # flag -> action: what --help lists
    rows = readme_rows()
    names = [f.name for f in fields(Settings)]
    assert [s.name for s in config.SPECS] == names
    for spec in config.SPECS:
        assert HELP.get(spec.name, "").strip(), f"{spec.name}: add a help text to settings.HELP"
        assert spec.flag in flags and flags[spec.flag].dest == spec.name, f"{spec.name}: no flag"
        assert spec.env[0] == "FORGELOOP_" + spec.name.upper()
        if spec.kind == "bool":  # on and off forms, whatever the default
            assert "--no-" + spec.flag[2:] in flags, spec.name
        row = [r for r in rows if f"`{spec.flag}" in r.split("|")[1] and f"`{spec.env[0]}`" in r]
        assert len(row) == 1, f"{spec.name}: README.md needs one row with `{spec.flag}` and `{spec.env[0]}`"
    assert len(rows) == len(names), "a README row for a setting that no longer exists"
    assert set(HELP) == set(names)


# -- sources and precedence -----------------------------------------------------------------------


def write_toml(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / config.CONFIG_FILE
    path.write_text(text)
    return path


def test_defaults_file_environment_flags_in_that_order(tmp_path):
    home = tmp_path / "home"
    write_toml(home, 'port = 8001\nmax_turns = 5\nshare = true\nauth = ["file:pw"]\nworker_memory_gib = 2\n'
                     'database_url = "sqlite:////tmp/file.db"\n[job_env]\nA = "file"\nN = 2\n')
    env = {"FORGELOOP_HOME": str(home), "FORGELOOP_PORT": "8002", "FORGELOOP_JOB_ENV": "A=env,B=x=y",
           "DATABASE_URL": "sqlite:////tmp/legacy.db"}
    s = launch.parse_settings(["--port", "8003"], environ=env)
    assert s.port == 8003  # flag > env > file
    assert s.job_env == {"A": "env", "B": "x=y"}  # env replaces the file's table as a whole
    assert s.database_url == "sqlite:////tmp/legacy.db"  # the old variable name still counts
    assert (s.max_turns, s.share, s.auth, s.worker_memory_gib) == (5, True, (("file", "pw"),), 2.0)  # file
    assert (s.voter_votes_per_minute, s.auto_arena, s.home) == (30, True, home.resolve())  # defaults
    s = launch.parse_settings(["--no-share", "--job-env", "C=flag"], environ={**env, "FORGELOOP_PORT": ""})
    assert (s.share, s.job_env, s.port) == (False, {"C": "flag"}, 8001)  # an empty variable is unset
    env["FORGELOOP_DATABASE_URL"] = "sqlite:////tmp/new.db"
    assert launch.parse_settings([], environ=env).database_url == "sqlite:////tmp/new.db"
    assert launch.parse_settings([], environ={"FORGELOOP_HOME": str(tmp_path / "bare")}) == Settings(
        home=tmp_path / "bare")


# Raw text for each kind of setting, as typed into a flag or an environment variable.
GOOD_TEXT = {
    "bool": [("yes", True), ("No", False), ("1", True), ("false", False)],
    "int": [("5", 5), (" 12 ", 12)],
    "float": [("2.5", 2.5), ("3", 3.0)],
    "str": [("localhost", "localhost")],  # a host others cannot reach: no login needed
    "path": [("~/fl", Path("~/fl").expanduser().resolve())],
    "auth": [("a:b, c:d:e", (("a", "b"), ("c", "d:e")))],
    "pairs": [("A=1,B=", {"A": "1", "B": ""}), ('{"A": "x,y", "N": 2}', {"A": "x,y", "N": "2"})],
}
# Text settings with a format of their own.
GOOD_BY_NAME = {"worker_gpus": [("0, 2", "0, 2")]}


@pytest.mark.parametrize("spec", config.SPECS, ids=lambda s: s.name)
def test_every_setting_reads_from_the_environment_and_the_file(spec, tmp_path):
    home = tmp_path / "home"
    for text, want in GOOD_BY_NAME.get(spec.name, GOOD_TEXT[spec.kind]):
        env = {spec.env[0]: text}
        if spec.name != "home":
            env["FORGELOOP_HOME"] = str(home)
        assert getattr(launch.parse_settings([], environ=env), spec.name) == want, text
    if spec.name == "home":
        return
    text = GOOD_BY_NAME.get(spec.name, [("localhost", "localhost")])[0][1]
    value = {"bool": "true", "int": "7", "float": "0.5", "str": f'"{text}"', "path": '"/tmp"',
             "auth": '["u:p"]', "pairs": "{ K = \"v\" }"}[spec.kind]
    write_toml(home, f"{spec.name} = {value}\n")
    got = getattr(launch.parse_settings([], environ={"FORGELOOP_HOME": str(home)}), spec.name)
    assert got == {"bool": True, "int": 7, "float": 0.5, "str": text, "auth": (("u", "p"),),
                   "pairs": {"K": "v"}}[spec.kind]


@pytest.mark.parametrize(("argv", "env", "toml", "words"), [
    (["--port", "abc"], {}, None, ["--port", "setting port", "whole number"]),
    (["--max-turns", "-1"], {}, None, ["--max-turns", "setting max_turns", "at least 0"]),
    (["--worker-memory-gib", "lots"], {}, None, ["--worker-memory-gib", "worker_memory_gib", "number"]),
    (["--job-env", "NOEQUALS"], {}, None, ["--job-env", "job_env", "KEY=VALUE"]),
    ([], {"FORGELOOP_PORT": "70000"}, None, ["FORGELOOP_PORT", "setting port", "1..65535"]),
    ([], {"FORGELOOP_AUTO_ARENA": "maybe"}, None, ["FORGELOOP_AUTO_ARENA", "auto_arena", "yes/no"]),
    ([], {"FORGELOOP_AUTH": "ann"}, None, ["FORGELOOP_AUTH", "setting auth", "user:password"]),
    ([], {"FORGELOOP_JOB_ENV": '{"A": '}, None, ["FORGELOOP_JOB_ENV", "job_env", "JSON"]),
    ([], {"FORGELOOP_JOB_ENV": '{"A": true}'}, None, ["FORGELOOP_JOB_ENV", "job_env", "A"]),
    ([], {}, 'port = "8000"', ["forgeloop.toml, key port", "setting port", "an integer"]),
    ([], {}, "port = 0", ["forgeloop.toml, key port", "setting port", "1..65535"]),
    ([], {}, "share = 1", ["forgeloop.toml, key share", "setting share", "true or false"]),
    ([], {}, "host = 127", ["forgeloop.toml, key host", "a string"]),
    ([], {}, "max_turns = true", ["forgeloop.toml, key max_turns", "an integer"]),
    ([], {}, "job_env = { A = [1] }", ["forgeloop.toml, key job_env", "A: expected text or a number"]),
    ([], {}, 'auth = "ann"', ["forgeloop.toml, key auth", "user:password"]),
    ([], {}, "prot = 1", ["forgeloop.toml", "unknown setting 'prot'"]),
    ([], {}, 'home = "/elsewhere"', ["forgeloop.toml", "--storage", "FORGELOOP_HOME"]),
    ([], {}, "port = ", ["forgeloop.toml", "TOML"]),
])
def test_a_bad_value_names_its_source_and_setting(tmp_path, capsys, argv, env, toml, words):
    home = tmp_path / "home"
    if toml is not None:
        write_toml(home, toml + "\n")
    with pytest.raises(SystemExit) as exit_:
        launch.parse_settings(argv, environ={"FORGELOOP_HOME": str(home), **env})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_the_unsafe_override_refusal_names_a_switch_that_exists(tmp_path):
    with pytest.raises(InvalidInput) as e:
        validate_overrides({"trust_remote_code": True}, recipes_dir=tmp_path, run_dir=tmp_path)
    message = str(e.value)
    assert "--allow-unsafe-overrides" in message and "FORGELOOP_ALLOW_UNSAFE_OVERRIDES=true" in message
    assert "allow_unsafe_overrides = true in forgeloop.toml" in message
    env = {"FORGELOOP_HOME": str(tmp_path)}
    assert launch.parse_settings(["--allow-unsafe-overrides"], environ=env).allow_unsafe_overrides
    assert launch.parse_settings([], environ={**env, "FORGELOOP_ALLOW_UNSAFE_OVERRIDES": "true"}
                                 ).allow_unsafe_overrides
    write_toml(tmp_path, "allow_unsafe_overrides = true\n")
    assert launch.parse_settings([], environ=env).allow_unsafe_overrides


# -- who can reach the workbench -----------------------------------------------------------------

LOOPBACK = ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LocalHost", "::ffff:127.0.0.1"]
EXPOSED = ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "fe80::1", "example.com", "my-laptop"]


@pytest.mark.parametrize("host", LOOPBACK)
def test_a_loopback_host_needs_no_login(tmp_path, host):
    assert config.is_loopback(host)
    assert launch.parse_settings(["--host", host, "--storage", str(tmp_path)], environ={}).host == host


@pytest.mark.parametrize("host", EXPOSED)
def test_any_other_host_without_a_login_is_refused_with_the_way_out(tmp_path, capsys, host):
    assert not config.is_loopback(host)
    with pytest.raises(SystemExit) as exit_:
        launch.parse_settings(["--host", host, "--storage", str(tmp_path)], environ={})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for words in (host, "not a loopback address", "anyone on the network could train, delete and vote",
                  "--auth user:pass", "--insecure-no-auth"):
        assert words in err, err
    # The same host with a login, or with the risk taken on purpose (any source), starts.
    base = ["--host", host, "--storage", str(tmp_path)]
    assert launch.parse_settings([*base, "--auth", "ann:pw"], environ={}).auth == (("ann", "pw"),)
    assert launch.parse_settings([*base, "--insecure-no-auth"], environ={}).insecure_no_auth
    env = {"FORGELOOP_INSECURE_NO_AUTH": "true"}
    assert launch.parse_settings(base, environ=env).host == host
    write_toml(tmp_path, 'auth = ["ann:pw"]\n')
    assert launch.parse_settings(base, environ={}).auth == (("ann", "pw"),)
