"""The job runner: a queue of training runs, each a ``llamafactory-cli`` subprocess.

The subprocess writes straight into ``<run_dir>/train.log`` (no pipe), lives in its
own session, and is therefore independent of any browser tab and even of this app:
after a restart, ``reconcile`` re-attaches to runs whose process is still alive and
marks the others interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import select

from app.errors import Conflict, NotFound
from app.tables import Run, utcnow
from app.trainer_log import TRAINER_LOG, TrainerLogTail

if TYPE_CHECKING:
    from app.workbench import Workbench

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
LOG_NAME = "train.log"


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, read from its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    # tqdm redraws with carriage returns; keep the last state of each line.
    cleaned = [ln.split("\r")[-1] for ln in data.splitlines()]
    return "\n".join(cleaned[-lines:])


def _alive(pid: int | None, started: float | None) -> bool:
    """True when ``pid`` runs and is the same process we started (not a reused pid)."""
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 2.0
    except psutil.Error:
        return False


class JobRunner:
    def __init__(self, wb: Workbench) -> None:
        self.wb = wb
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._procs: dict[int, subprocess.Popen] = {}
        self._cancel_requested: set[int] = set()
        self._tails: dict[int, TrainerLogTail] = {}

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="forgeloop-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling. Running trainers are left alone: they outlive the app."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def reconcile(self) -> list[int]:
        """After a restart: re-attach to live trainers, mark dead ones interrupted."""
        reattached = []
        with self.wb.session() as s:
            for run in s.exec(select(Run).where(Run.status == "running")):
                if _alive(run.pid, run.pid_started):
                    reattached.append(run.id)
                else:
                    run.status = "interrupted"
                    run.error = "the trainer stopped while Forgeloop was not running"
                    run.finished_at = utcnow()
                    s.add(run)
            s.commit()
        for run_id in reattached:
            threading.Thread(target=self._watch_foreign, args=(run_id,), daemon=True).start()
        return reattached

    # -- queue ---------------------------------------------------------------
    def submit(self, run_id: int) -> Run:
        with self.wb.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run with id {run_id}")
            if run.status in ACTIVE:
                raise Conflict(f"run {run.name!r} is already {run.status}")
            if run.status == "succeeded":
                raise Conflict(f"run {run.name!r} already finished; start a new run instead")
            run.status = "queued"
            run.error = None
            s.add(run)
            s.commit()
            s.refresh(run)
        self._wake.set()
        return run

    def _startable(self) -> list[Run]:
        """Queued runs, oldest first, whose GPUs no running run holds (one job per GPU set)."""
        with self.wb.session() as s:
            held: set[str] = set()
            for r in s.exec(select(Run).where(Run.status == "running")):
                held |= _devices(r)
            out = []
            for r in s.exec(select(Run).where(Run.status == "queued").order_by(Run.id)):
                if not (_devices(r) & held):
                    out.append(r)
                    held |= _devices(r)
            return out

    def _loop(self) -> None:
        while not self._stopping.is_set():
            for run in self._startable():
                try:
                    self._launch(run)
                except Exception as e:  # never let one bad run kill the scheduler
                    self._finish(run.id, None, error=f"could not start: {type(e).__name__}: {e}")
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    # -- one run -------------------------------------------------------------
    def _launch(self, run: Run) -> None:
        from app.training import launch_command, launch_env

        run_dir = Path(run.output_dir).parent
        with open(run_dir / LOG_NAME, "ab") as log:
            proc = subprocess.Popen(
                launch_command(run),
                cwd=run_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=launch_env(self.wb, run),
            )
        import psutil

        with self.wb.session() as s:
            row = s.get(Run, run.id)
            row.status = "running"
            row.pid = proc.pid
            row.pid_started = psutil.Process(proc.pid).create_time()
            row.started_at = row.started_at or utcnow()
            s.add(row)
            s.commit()
        self._procs[run.id] = proc
        self._notify()
        threading.Thread(target=self._wait_child, args=(run.id, proc), daemon=True).start()

    def _wait_child(self, run_id: int, proc: subprocess.Popen) -> None:
        rc = proc.wait()
        self._procs.pop(run_id, None)
        if not self._stopping.is_set():  # else the next app's reconcile() settles the run
            self._finish(run_id, rc)

    def _watch_foreign(self, run_id: int) -> None:
        """Wait for a trainer started by an earlier app process (not our child)."""
        with self.wb.session() as s:
            run = s.get(Run, run_id)
            pid, started = run.pid, run.pid_started
        while _alive(pid, started) and not self._stopping.is_set():
            time.sleep(1.0)
        if not self._stopping.is_set():
            self._finish(run_id, None)

    def _finish(self, run_id: int, returncode: int | None, error: str | None = None) -> None:
        from app.training import finalize_run

        cancelled = run_id in self._cancel_requested
        self._cancel_requested.discard(run_id)
        finalize_run(self.wb, run_id, returncode, cancelled=cancelled, error=error)
        self._notify()
        self._wake.set()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- control -------------------------------------------------------------
    def cancel(self, run_id: int) -> Run:
        """Queued runs are dropped; running ones get SIGABRT, which LLaMA-Factory's
        callback turns into a clean stop that still saves the model."""
        with self.wb.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run with id {run_id}")
            if run.status == "queued":
                run.status = "cancelled"
                run.finished_at = utcnow()
                s.add(run)
                s.commit()
                return run
            if run.status != "running":
                raise Conflict(f"run {run.name!r} is {run.status}, not running")
            pid = run.pid
        self._cancel_requested.add(run_id)
        _signal_tree(pid, signal.SIGABRT)
        return run

    def wait(self, run_id: int, timeout: float = 600.0) -> Run:
        """Block until the run has finished (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.wb.session() as s:
                run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run with id {run_id}")
            if run.status in FINISHED:
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"run {run.name!r} still {run.status} after {timeout:.0f}s")
            with self._changed:
                self._changed.wait(timeout=min(left, 1.0))

    def progress(self, run: Run) -> TrainerLogTail:
        """The run's log records, read incrementally across calls."""
        path = Path(run.output_dir) / TRAINER_LOG
        tail = self._tails.get(run.id)
        if tail is None or tail.path != path:  # SQLite may reuse a deleted run's id
            tail = self._tails[run.id] = TrainerLogTail(path)
        tail.poll()
        return tail


def _devices(run: Run) -> set[str]:
    return set(filter(None, run.gpus.split(","))) or {"cpu"}


def _signal_tree(pid: int | None, sig: int) -> None:
    """Send ``sig`` to a process and its children, children first."""
    if not pid:
        return
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = proc.children(recursive=True)[::-1] + [proc]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass

