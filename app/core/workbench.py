"""The application object: settings, database, job runner and per-instance services.

`app.bootstrap.open_workbench` builds one with every job kind registered (`launch.py`
does that once; tests build their own over a temporary storage dir). This module sits
in the core layer, so it knows nothing of the layers above it: they attach their
long-lived helpers (the chat-model cache, the leaderboard cache, voter limits) through
`service`, keyed by the helper's class, one per workbench.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlmodel import Session

from app.core.db import make_engine, migrate
from app.core.errors import NotFound
from app.core.jobs import JobKind, JobRunner
from app.core.settings import Settings

if TYPE_CHECKING:
    from app.core.hardware import Hardware

T = TypeVar("T")


class Workbench:
    def __init__(self, settings: Settings, kinds: Iterable[JobKind] = (), start_jobs: bool = True) -> None:
        self.settings = settings
        for d in (settings.home, settings.datasets_dir, settings.runs_dir, settings.models_dir,
                  settings.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.db_url)
        self.schema_version = migrate(self.engine)
        # Serialises writers of storage-side files such as dataset_info.json.
        self.files_lock = threading.Lock()
        # Serialises hot-path DB inserts (votes, turns): SQLite takes one writer at a time,
        # and waiting here is cheaper than its busy-retry loop under a burst of voters.
        self.write_lock = threading.Lock()
        self.jobs = JobRunner(self)
        for kind in kinds:
            self.jobs.register(kind)
        self._hardware: Hardware | None = None
        self._services: dict[type, Any] = {}
        self._services_lock = threading.Lock()
        if start_jobs:
            self.jobs.start()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def row(self, table: type[T], row_id: int, what: str) -> T:
        """The row of ``table`` with this id, or NotFound naming ``what`` it is."""
        with self.session() as s:
            found = s.get(table, row_id)
        if found is None:
            raise NotFound(f"no {what} with id {row_id}")
        return found

    def service(self, cls: type[T], make: Callable[[Workbench], T] | None = None) -> T:
        """This workbench's one instance of ``cls``, made on first use by ``make(self)``
        (default ``cls(self)``); closed with the workbench if it has a ``close()``."""
        with self._services_lock:
            found = self._services.get(cls)
            if found is None:
                found = self._services[cls] = (make or cls)(self)
            return found

    def hardware(self, refresh: bool = False) -> Hardware:
        """GPUs and libraries, detected once (refresh for live memory figures)."""
        from app.core.hardware import detect

        if refresh or self._hardware is None:
            self._hardware = detect()
        return self._hardware

    def close(self) -> None:
        self.jobs.stop()
        with self._services_lock:
            services, self._services = list(self._services.values()), {}
        for svc in services:
            close = getattr(svc, "close", None)
            if callable(close):
                close()
        self.engine.dispose()
