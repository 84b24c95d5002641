"""Where settings come from, lowest first: the defaults in Settings, forgeloop.toml in
the storage folder, FORGELOOP_<NAME> environment variables, command-line flags.

Every Settings field is reachable from each source under a name derived from the field
(``max_workers``: ``--max-workers``, ``FORGELOOP_MAX_WORKERS``, ``max_workers = 2``). Raw values are
converted and checked here, once; a bad one is refused with a SettingError naming the
flag, variable or file it came from and the setting.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from app.core.settings import DEFAULT_HOME, HELP, Settings, parse_auth

CONFIG_FILE = "forgeloop.toml"
ENV_PREFIX = "FORGELOOP_"
# Names older than this table, kept working.
FLAGS = {"home": "--storage"}
# Read when the FORGELOOP_ variable is not set.
ENV_ALIASES = {"database_url": ("DATABASE_URL",), "ollama_host": ("OLLAMA_HOST",)}
# Inclusive bounds of numeric settings.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "port": (1, 65535), "voter_port": (1, 65535), "voter_messages_per_minute": (0, None),
    "voter_votes_per_minute": (0, None), "max_prompt_chars": (0, None), "max_turns": (0, None),
    "max_workers": (1, None), "worker_memory_gib": (0, None), "worker_idle_minutes": (0, None),
    "worker_threads": (0, None),
}
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
# What a forgeloop.toml value must be for each kind: the file has types, so no guessing from text.
TOML_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool,), "a boolean (true or false)"), "int": ((int,), "an integer"),
    "float": ((int, float), "a number"), "str": ((str,), "a string"), "path": ((str,), "a string"),
    "auth": ((list,), 'a list of "user:password" strings'), "pairs": ((dict,), 'a table of KEY = "value"'),
}


class SettingError(ValueError):
    """A setting's value is malformed; the message says where it came from."""


@dataclass(frozen=True)
class Spec:
    """How one Settings field is named in each source and how its raw values are read."""

    name: str
    kind: str  # bool | int | float | str | path | auth | pairs
    optional: bool  # None is a valid value (the default "unset")
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return FLAGS.get(self.name, "--" + self.name.replace("_", "-"))

    @property
    def env(self) -> tuple[str, ...]:
        """Environment variables, the first set one wins."""
        return (ENV_PREFIX + self.name.upper(), *ENV_ALIASES.get(self.name, ()))


def _kind(name: str, hint: Any) -> tuple[str, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _kind(name, rest[0])[0], True
    simple = {bool: "bool", int: "int", float: "float", str: "str", Path: "path"}
    if hint in simple:
        return simple[hint], False
    if hint == tuple[tuple[str, str], ...]:
        return "auth", False
    if hint == dict[str, str]:
        return "pairs", False
    raise TypeError(f"setting {name}: no reader for {hint}; teach app/core/config.py its type")


def _specs() -> tuple[Spec, ...]:
    hints = typing.get_type_hints(Settings)
    out = []
    for f in fields(Settings):
        kind, optional = _kind(f.name, hints[f.name])
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out.append(Spec(f.name, kind, optional, default, HELP.get(f.name, "")))
    return tuple(out)


SPECS: tuple[Spec, ...] = _specs()
SPEC_BY_NAME = {s.name: s for s in SPECS}


# --- converters: raw value (text, or a TOML value) -> typed value, or ValueError ------------------


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in TRUE + FALSE:
        return raw.strip().lower() in TRUE
    raise ValueError(f"expected true/false, yes/no or 1/0, got {raw!r}")


def _int(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a whole number, got {raw!r}")


def _float(raw: Any) -> float:
    value = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            pass
    if value is None or not math.isfinite(value):
        raise ValueError(f"expected a number, got {raw!r}")
    return value


def _str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected text, got {raw!r}")
    return raw


def _path(raw: Any) -> Path:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"expected a folder path, got {raw!r}")
    return Path(raw).expanduser()


def _items(raw: Any, what: str) -> list[str]:
    """A list of strings from a list, or from comma-separated text (the environment's form)."""
    if isinstance(raw, str):
        return [x.strip() for x in raw.split(",") if x.strip()]
    if isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
        return list(raw)
    raise ValueError(f"expected a list of {what}, got {raw!r}")


def _auth(raw: Any) -> tuple[tuple[str, str], ...]:
    return parse_auth(_items(raw, "user:password"))


def _pairs(raw: Any) -> dict[str, str]:
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"not a valid JSON object: {e}") from e
    if isinstance(raw, dict):
        out = {}
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"{key}: expected text or a number, got {value!r}")
            out[str(key)] = str(value)
        return out
    out = {}
    for item in _items(raw, "KEY=VALUE pairs"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "bool": _bool, "int": _int, "float": _float, "str": _str, "path": _path, "auth": _auth, "pairs": _pairs,
}


def convert(spec: Spec, raw: Any, where: str) -> Any:
    """``raw`` as the setting's type, within its bounds; ``where`` names the source for errors."""
    try:
        value = CONVERTERS[spec.kind](raw)
        low, high = BOUNDS.get(spec.name, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f"at least {low}"
            raise ValueError(f"expected {span}, got {value}")
    except ValueError as e:
        raise SettingError(f"{where} (setting {spec.name}): {e}") from None
    return value


# --- sources -----------------------------------------------------------------------------------------


def from_cli(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flag values by field name (None: flag not given)."""
    return {name: convert(SPEC_BY_NAME[name], raw, f"flag {SPEC_BY_NAME[name].flag}")
            for name, raw in values.items() if raw is not None and name in SPEC_BY_NAME}


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings found in ``environ``; an empty variable counts as not set."""
    out = {}
    for spec in SPECS:
        for var in spec.env:
            raw = environ.get(var)
            if raw is not None and raw.strip():
                out[spec.name] = convert(spec, raw, f"environment variable {var}")
                break
    return out


def from_file(path: Path) -> dict[str, Any]:
    """Settings in a forgeloop.toml (none if it does not exist)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SettingError(f"{path}: not a readable TOML file: {e}") from None
    out = {}
    for key, raw in data.items():
        spec = SPEC_BY_NAME.get(key)
        if spec is None:
            raise SettingError(f"{path}: unknown setting {key!r}; known: {', '.join(SPEC_BY_NAME)}")
        if key == "home":
            raise SettingError(f"{path}: home cannot be set here, this file lives in it; "
                               f"use {spec.flag} or {spec.env[0]}")
        where = f"{path}, key {key}"
        allowed, what = TOML_TYPES[spec.kind]
        if not isinstance(raw, allowed) or (spec.kind != "bool" and isinstance(raw, bool)):
            raise SettingError(f"{where} (setting {key}): expected {what}, got {raw!r}")
        out[key] = convert(spec, raw, where)
    return out


def load_settings(cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from every source: defaults < forgeloop.toml < environment < ``cli``.
    A later source replaces a setting as a whole (job_env and auth are not merged)."""
    flags = from_cli(cli or {})
    env = from_env(os.environ if environ is None else environ)
    home = Path(flags.get("home", env.get("home", DEFAULT_HOME))).expanduser()
    values = {**from_file(home / CONFIG_FILE), **env, **flags}
    return Settings(**values)


def how_to_enable(name: str) -> str:
    """Where a user turns a boolean setting on, in words."""
    spec = SPEC_BY_NAME[name]
    return f"{spec.flag}, {spec.env[0]}=true or {name} = true in {CONFIG_FILE}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: 127.0.0.0/8, ::1 or localhost."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # another host name: it may resolve to any interface
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def check_exposure(settings: Settings) -> None:
    """Refuse to serve the workbench beyond this machine without a login."""
    if settings.auth or settings.insecure_no_auth or is_loopback(settings.host):
        return
    raise SettingError(
        f"the workbench would listen on {settings.host}, which is not a loopback address, without a "
        "login: anyone on the network could train, delete and vote. Add --auth user:pass (or "
        f"{SPEC_BY_NAME['auth'].env[0]}), or pass --insecure-no-auth if that is what you want.")
