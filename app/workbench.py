"""The application object: settings, database, job runner and model cache in one place.

`launch.py` builds exactly one; tests build their own over a temporary storage dir.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlmodel import Session

from app.db import make_engine, migrate
from app.settings import Settings


class Workbench:
    def __init__(self, settings: Settings, start_jobs: bool = True) -> None:
        from app.chat_engines import ChatCache
        from app.jobs import JobRunner
        from app.leaderboard import LeaderboardCache
        from app.voters import VoterLimits

        self.settings = settings
        for d in (settings.home, settings.datasets_dir, settings.runs_dir, settings.models_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.db_url)
        self.schema_version = migrate(self.engine)
        # Serialises writers of storage-side files such as dataset_info.json.
        self.files_lock = threading.Lock()
        # Serialises hot-path DB inserts (votes, turns): SQLite takes one writer at a time,
        # and waiting here is cheaper than its busy-retry loop under a burst of voters.
        self.write_lock = threading.Lock()
        self.jobs = JobRunner(self)
        self.chat = ChatCache(settings.chat_cache_models, settings.chat_cache_gib * 2**30)
        self._hardware = None
        self.leaderboard = LeaderboardCache(self)
        # Per-voter message/vote budgets and prompt limits for the shared arena.
        self.voter_limits = VoterLimits(settings)
        if start_jobs:
            self.jobs.start()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def hardware(self, refresh: bool = False):
        """GPUs and libraries, detected once (refresh for live memory figures)."""
        from app.hardware import detect

        if refresh or self._hardware is None:
            self._hardware = detect()
        return self._hardware

    def close(self) -> None:
        self.jobs.stop()
        self.chat.clear()
        self.engine.dispose()
