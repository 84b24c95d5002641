"""Typed settings for one Forgeloop instance, validated once at the edge."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOME = Path(__file__).resolve().parents[2] / "storage"
# How a job process opens the app's model-worker pool: the settings it needs, as JSON.
WORKER_SETTINGS_ENV = "FORGELOOP_WORKER_SETTINGS"
WORKER_FIELDS = ("home", "database_url", "max_workers", "worker_memory_gib", "worker_idle_minutes",
                 "worker_threads", "worker_gpus", "job_env")


def parse_auth(pairs: list[str] | None) -> tuple[tuple[str, str], ...]:
    """Turn ``["user:pass", ...]`` into credential pairs, refusing malformed ones."""
    out = []
    for item in pairs or []:
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"expected user:password, got {item!r}")
        out.append((user, password))
    return tuple(out)


@dataclass(frozen=True)
class Settings:
    """One instance's settings. Each field is reachable as a flag, a FORGELOOP_* variable
    and a forgeloop.toml key (app/core/config.py); HELP below says what it does."""

    home: Path = DEFAULT_HOME
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    voter_port: int | None = None
    auth: tuple[tuple[str, str], ...] = ()
    insecure_no_auth: bool = False
    database_url: str | None = None
    job_env: dict[str, str] = field(default_factory=dict)
    allow_unsafe_overrides: bool = False
    auto_arena: bool = True
    voter_messages_per_minute: int = 12
    voter_votes_per_minute: int = 30
    max_prompt_chars: int = 4000
    max_turns: int = 8
    voter_leaderboard: bool = True
    max_workers: int = 3
    worker_memory_gib: float = 8.0
    worker_idle_minutes: float = 30.0
    worker_threads: int = 0
    worker_gpus: str = ""
    ollama_host: str = "http://127.0.0.1:11434"
    ollama_prefix: str = "forgeloop"

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", self.ollama_prefix):
            raise ValueError(f"ollama_prefix must be lower-case letters, digits, '_', '.' or '-', "
                             f"got {self.ollama_prefix!r}")
        if self.worker_gpus.strip().lower() not in ("", "cpu") and not re.fullmatch(
                r"\s*\d+(\s*,\s*\d+)*\s*", self.worker_gpus):
            raise ValueError(f"worker_gpus must be GPU indexes like 0,1 or 'cpu', got {self.worker_gpus!r}")

    def worker_settings_json(self) -> str:
        """WORKER_SETTINGS_ENV's value for this instance's job processes."""
        return json.dumps({k: str(v) if isinstance(v, Path) else v
                           for k in WORKER_FIELDS for v in [getattr(self, k)]})

    @property
    def worker_gpu_indexes(self) -> list[int] | None:
        """The GPUs workers may use: None for all of them, [] for none."""
        text = self.worker_gpus.strip().lower()
        if not text:
            return None
        return [] if text == "cpu" else [int(g) for g in text.split(",")]

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


# What each setting does: the --help text, the README table's meaning column.
HELP: dict[str, str] = {
    "home": "storage folder: database, datasets, runs, models and forgeloop.toml",
    "host": "interface the workbench binds",
    "port": "port of the workbench",
    "share": "share the arena-only voter app through a public Gradio link (the workbench stays local)",
    "voter_port": "local port of the voter app with share (default: port + 1)",
    "auth": "require this login (user:password) for the workbench and its API",
    "insecure_no_auth": "serve the workbench on a non-loopback host without --auth: anyone who can reach it "
                        "may train, delete and vote",
    "database_url": "SQLAlchemy URL of the database (default: forgeloop.db in the storage folder)",
    "job_env": "environment for every training job on top of the server's "
               "(e.g. NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT for several machines)",
    "allow_unsafe_overrides": "let training overrides use trust_remote_code and files outside storage and "
                              "recipes/",
    "auto_arena": "a finished training run's model joins the arena by itself",
    "voter_messages_per_minute": "arena messages one voter or API caller may send a minute (0: no limit)",
    "voter_votes_per_minute": "votes one voter or API caller may cast a minute (0: no limit)",
    "max_prompt_chars": "longest arena message, in characters",
    "max_turns": "most turns in one arena battle",
    "voter_leaderboard": "voters may see the leaderboard in the voter app",
    "max_workers": "local models served at once, each by its own worker process (least recently used "
                   "stops first)",
    "worker_memory_gib": "memory the model workers on the CPU may use together, in GiB",
    "worker_idle_minutes": "a model worker nobody asked for this long stops by itself (0: never)",
    "worker_threads": "CPU threads per model worker (0: the cores split between two workers)",
    "worker_gpus": "comma-separated GPU indexes model workers may use (default: all; 'cpu': none)",
    "ollama_host": "the Ollama server models are deployed to (also read from OLLAMA_HOST)",
    "ollama_prefix": "namespace of deployed Ollama models: <prefix>/<model>:<version>",
}
