"""Typed settings for one Forgeloop instance, validated once at the edge."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOME = Path(__file__).resolve().parents[2] / "storage"


def parse_auth(pairs: list[str] | None) -> tuple[tuple[str, str], ...]:
    """Turn ``["user:pass", ...]`` into credential pairs, refusing malformed ones."""
    out = []
    for item in pairs or []:
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"--auth expects user:password, got {item!r}")
        out.append((user, password))
    return tuple(out)


@dataclass(frozen=True)
class Settings:
    home: Path = DEFAULT_HOME
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    # Local port of the shared voter app (default: port + 1).
    voter_port: int | None = None
    auth: tuple[tuple[str, str], ...] = ()
    database_url: str | None = None
    # Environment passed to every training subprocess on top of os.environ
    # (e.g. NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT for several machines).
    job_env: dict[str, str] = field(default_factory=dict)
    # Let training overrides use trust_remote_code and files outside storage/recipes.
    allow_unsafe_overrides: bool = False
    # Arena: a finished training run's model joins the arena by itself.
    auto_arena: bool = True
    # Arena limits, applied to voters in the shared app (and to the API).
    voter_messages_per_minute: int = 12
    voter_votes_per_minute: int = 30
    max_prompt_chars: int = 4000
    max_turns: int = 8
    # Voters may see the leaderboard.
    voter_leaderboard: bool = True
    # Local chat models: how many stay loaded and how much memory they may use.
    chat_cache_models: int = 3
    chat_cache_gib: float = 8.0
    # GPU index for in-process chat models (None: the first visible device, or CPU).
    chat_gpu: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port}")

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Defaults < environment (FORGELOOP_HOME, DATABASE_URL) < explicit overrides."""
        values: dict = {}
        if os.environ.get("FORGELOOP_HOME"):
            values["home"] = Path(os.environ["FORGELOOP_HOME"])
        if os.environ.get("DATABASE_URL"):
            values["database_url"] = os.environ["DATABASE_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'forgeloop.db'}"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def jobs_dir(self) -> Path:
        """Folders of jobs that are not training runs (builds, exports, ...)."""
        return self.home / "jobs"
