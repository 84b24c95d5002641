"""The job runner: every long action (training, starter builds, later export, generation,
evaluation) is a `Job` row plus a subprocess.

A job's process writes straight into its log file (no pipe), lives in its own session,
and is therefore independent of any browser tab and even of this app: after a restart,
`reconcile` re-attaches to jobs whose process is still alive and settles the others
through their kind's finish function. Python work runs the same way, as
``python -m app....`` (see `python_command`).

Each kind registers a `JobKind` with the runner: how to finish a job (record the outcome,
register what it made, in the same transaction) and which signal stops it cleanly.
Queueing is by resource: jobs that hold a common resource (a GPU, "cpu") never overlap.

The scheduler claims a queued job with a conditional update before launching it, so a
job cancelled or deleted in between is never started, and a launch that loses that race
kills what it started. An error while starting or finishing one job is recorded on that
job (or logged when its row is gone); the scheduler loop itself never dies.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlmodel import Session, select

from app.core.errors import Conflict, NotFound
from app.core.progress_log import ProgressTail, log_tail, summarise
from app.core.settings import WORKER_SETTINGS_ENV
from app.core.tables import Job, utcnow

if TYPE_CHECKING:
    from app.core.workbench import Workbench

log = logging.getLogger("forgeloop.jobs")

ACTIVE = ("queued", "starting", "running")
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
ROOT = Path(__file__).resolve().parents[2]
# Environment variables through which a Python job finds its progress and result files.
PROGRESS_ENV = "FORGELOOP_PROGRESS"
RESULT_ENV = "FORGELOOP_RESULT"


@dataclass(frozen=True)
class JobSpec:
    """What to run: the command, where, with what environment, and what it holds."""

    command: list[str]
    cwd: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    # JSON-lines progress in LLaMA-Factory's trainer_log format (None: no progress).
    progress_path: Path | None = None
    # A JSON object the job writes when it is done (None: no result file).
    result_path: Path | None = None
    # Exclusive resources ("gpu:0", "cpu"); jobs sharing one never run at once.
    resources: frozenset[str] = frozenset()
    title: str = ""
    # What the kind's finish step needs to know (e.g. where to move the output).
    params: dict[str, Any] = field(default_factory=dict)
    # Secrets for the process's environment (an access token). `env` is stored on the Job
    # row, so these are not: the runner holds them in memory until it launches the process
    # and hands them over there, never writing them to the database or a log. A job still
    # queued when the app stops starts without them (and says so, if it needs them).
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Outcome:
    """How a job's process ended. ``returncode`` is None when nobody saw it end (it ended
    while Forgeloop was down); ``cancelled`` when a user asked it to stop."""

    returncode: int | None
    cancelled: bool = False


def default_finish(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    """Exit code 0 succeeds; a signal or an unseen end interrupts; anything else fails."""
    rc = outcome.returncode
    if outcome.cancelled:
        job.status = "cancelled"
    elif rc == 0:
        job.status = "succeeded"
    elif rc is None:
        job.status = "interrupted"
        job.error = "the process stopped while Forgeloop was not running"
    elif rc < 0:
        job.status = "interrupted"
        job.error = f"the process was killed by signal {-rc}\n" + log_tail(Path(job.log_path), 10)
    else:
        job.status = "failed"
        job.error = f"{Path(job.command[0]).name} exited with code {rc}\n" + log_tail(Path(job.log_path), 25)


@dataclass(frozen=True)
class JobKind:
    name: str
    # Records the outcome on the job (status, error, result) and may write the rows the
    # job produced, in the same session: the runner commits both together or neither.
    finish: Callable[[Workbench, Session, Job, Outcome], None] = default_finish
    # The signal that asks this kind's process to stop cleanly.
    cancel_signal: int = signal.SIGTERM
    # Runs after the finish step's commit, outside its transaction (e.g. to queue follow-up
    # jobs, which need their own). Given the job's id; its errors are logged, never raised.
    after: Callable[[Workbench, int], None] | None = None


def tool_path(name: str) -> str:
    """A console script from this interpreter's environment (e.g. ``llamafactory-cli``), else PATH."""
    import shutil

    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or str(local))


def python_command(module: str, *args: str) -> list[str]:
    """A Python job: ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


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


def signal_tree(pid: int | None, sig: int) -> None:
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


def resources_of(job: Job) -> set[str]:
    return set(filter(None, (job.resources or "").split(",")))


class JobRunner:
    def __init__(self, wb: Workbench) -> None:
        self.wb = wb
        self._kinds: dict[str, JobKind] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._procs: dict[int, subprocess.Popen] = {}
        self._tails: dict[int, ProgressTail] = {}
        self._secret_env: dict[int, dict[str, str]] = {}  # JobSpec.secret_env, by job id

    def register(self, kind: JobKind) -> None:
        self._kinds[kind.name] = kind

    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def kind(self, name: str) -> JobKind:
        found = self._kinds.get(name)
        if found is None:
            raise NotFound(f"no job kind {name!r} is registered")
        return found

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="forgeloop-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling. Running processes are left alone: they outlive the app."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def alive(self) -> bool:
        """Whether the scheduler thread runs (for health checks and tests)."""
        return self._thread is not None and self._thread.is_alive()

    def reconcile(self) -> list[int]:
        """After a restart: re-attach to live processes, settle the jobs whose process ended."""
        reattached, ended = [], []
        with self.wb.session() as s:
            for job in s.exec(select(Job).where(Job.status.in_(("starting", "running")))):
                if _alive(job.pid, job.pid_started):
                    reattached.append(job.id)
                else:
                    ended.append(job.id)
        for job_id in ended:
            self._finish(job_id, None)
        for job_id in reattached:
            threading.Thread(target=self._watch_foreign, args=(job_id,), daemon=True).start()
        return reattached

    # -- queue ---------------------------------------------------------------
    def submit(self, kind: str, spec: JobSpec, s: Session | None = None) -> Job:
        """Queue a new job. With ``s`` the row is added to that session (the caller commits,
        so the job and the caller's own rows appear together)."""
        self.kind(kind)  # refuse unknown kinds before anything is stored
        if spec.secret_env and s is not None:
            # The caller could roll its session back and a later job reuse the id.
            raise ValueError("a job with secrets is committed by submit itself (no session)")
        job = Job(kind=kind, title=spec.title, status="queued", command=list(spec.command),
                  env=dict(spec.env), cwd=str(spec.cwd), log_path=str(spec.log_path),
                  progress_path=str(spec.progress_path) if spec.progress_path else None,
                  result_path=str(spec.result_path) if spec.result_path else None,
                  resources=",".join(sorted(spec.resources)), params=dict(spec.params))
        if s is not None:
            s.add(job)
            s.flush()
            return job
        with self.wb.session() as own:
            own.add(job)
            own.commit()
            own.refresh(job)
        if spec.secret_env:
            self._secret_env[job.id] = dict(spec.secret_env)
        self.poke()
        return job

    def poke(self) -> None:
        """Wake the scheduler (after a caller committed a job it submitted in its session)."""
        self._wake.set()

    def requeue(self, job_id: int, command: list[str] | None = None) -> Job:
        """Queue a stopped job again (resume), optionally with a new command."""
        with self.wb.session() as s:
            job = self.get(job_id, s)
            if job.status in ACTIVE:
                raise Conflict(f"job {job.title or job.id} is already {job.status}")
            if job.status == "succeeded":
                raise Conflict(f"job {job.title or job.id} already finished; start a new one instead")
            job.status = "queued"
            job.error = None
            job.returncode = None
            job.cancel_requested = False
            job.pid = job.pid_started = None
            job.finished_at = None
            if command is not None:
                job.command = list(command)
            s.add(job)
            s.commit()
            s.refresh(job)
        self._tails.pop(job_id, None)
        self.poke()
        return job

    def get(self, job_id: int, s: Session | None = None) -> Job:
        if s is not None:
            job = s.get(Job, job_id)
        else:
            with self.wb.session() as own:
                job = own.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id}")
        return job

    def list(self, kind: str | None = None, limit: int = 200) -> list[Job]:
        with self.wb.session() as s:
            q = select(Job).order_by(Job.id.desc()).limit(limit)
            if kind:
                q = q.where(Job.kind == kind)
            return list(s.exec(q))

    def delete(self, job_id: int, s: Session) -> None:
        """Delete a finished job's row in the caller's session (the caller commits)."""
        job = self.get(job_id, s)
        if job.status in ACTIVE:
            raise Conflict(f"job {job.title or job.id} is {job.status}; cancel it first")
        s.delete(job)
        self._tails.pop(job_id, None)
        self._secret_env.pop(job_id, None)

    def _startable(self) -> list[Job]:
        """Queued jobs, oldest first, whose resources no active job holds."""
        with self.wb.session() as s:
            held: set[str] = set()
            for j in s.exec(select(Job).where(Job.status.in_(("starting", "running")))):
                held |= resources_of(j)
            out = []
            for j in s.exec(select(Job).where(Job.status == "queued").order_by(Job.id)):
                need = resources_of(j)
                if not (need & held):
                    out.append(j)
                    held |= need
            return out

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                for job in self._startable():
                    if self._stopping.is_set():
                        break
                    try:
                        self._launch(job)
                    except Exception as e:  # recorded on the job; the loop goes on
                        log.exception("job %s could not start", job.id)
                        self._fail_start(job.id, f"could not start: {type(e).__name__}: {e}")
            except Exception:  # e.g. the database was briefly locked: try again next tick
                log.exception("job scheduler tick failed")
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    # -- one job -------------------------------------------------------------
    def _claim(self, job_id: int, old: tuple[str, ...], **values: Any) -> bool:
        """Set ``values`` on the job only if its status is still one of ``old``."""
        with self.wb.session() as s:
            stmt = (update(Job).where(Job.id == job_id, Job.status.in_(old)).values(**values)
                    .execution_options(synchronize_session=False))
            done = s.exec(stmt).rowcount == 1
            s.commit()
        return done

    def _launch(self, job: Job) -> None:
        self.kind(job.kind)
        if not self._claim(job.id, ("queued",), status="starting"):
            return  # cancelled or deleted since it was listed
        env = dict(os.environ)
        env.update(self.wb.settings.job_env)
        env.update(job.env)
        env.update(self._secret_env.pop(job.id, {}))
        env[WORKER_SETTINGS_ENV] = self.wb.settings.worker_settings_json()  # jobs share the app's workers
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if job.progress_path:
            env[PROGRESS_ENV] = job.progress_path
        if job.result_path:
            env[RESULT_ENV] = job.result_path
        Path(job.log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(job.log_path, "ab") as logf:
            proc = subprocess.Popen(job.command, cwd=job.cwd, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        import psutil

        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            started = None
        if not self._claim(job.id, ("starting",), status="running", pid=proc.pid, pid_started=started,
                           started_at=utcnow()):
            # Withdrawn while we were starting it: it must not run.
            signal_tree(proc.pid, signal.SIGKILL)
            proc.wait()
            self._notify()
            return
        self._procs[job.id] = proc
        self._notify()
        threading.Thread(target=self._wait_child, args=(job.id, proc), daemon=True).start()

    def _wait_child(self, job_id: int, proc: subprocess.Popen) -> None:
        rc = proc.wait()
        self._procs.pop(job_id, None)
        if not self._stopping.is_set():  # else the next app's reconcile() settles the job
            self._finish(job_id, rc)

    def _watch_foreign(self, job_id: int) -> None:
        """Wait for a process started by an earlier app process (not our child)."""
        try:
            job = self.get(job_id)
        except NotFound:
            return
        while _alive(job.pid, job.pid_started) and not self._stopping.is_set():
            time.sleep(1.0)
        if not self._stopping.is_set():
            self._finish(job_id, None)

    def _fail_start(self, job_id: int, error: str) -> None:
        try:
            with self.wb.session() as s:
                job = s.get(Job, job_id)
                if job is None:
                    return
                job.status, job.error, job.finished_at = "failed", error, utcnow()
                s.add(job)
                s.commit()
        except Exception:
            log.exception("could not record the failed start of job %s", job_id)
        self._notify()
        self.poke()

    def _finish(self, job_id: int, returncode: int | None) -> None:
        """Settle a job whose process ended: the kind records the outcome, then one commit."""
        try:
            with self.wb.session() as s:
                job = s.get(Job, job_id)
                if job is None:
                    log.warning("job %s ended, but its row is gone", job_id)
                    return
                if job.status not in ("starting", "running"):
                    return  # settled already (cancelled before it ran, or a second watcher)
                outcome = Outcome(returncode, cancelled=job.cancel_requested)
                self._settle(s, job, outcome)
                kind = self._kinds.get(job.kind)
        except Exception:
            log.exception("finishing job %s failed", job_id)
            self._fail_start(job_id, "Forgeloop could not record how this job ended (see the app log)")
            kind = None
        if kind is not None and kind.after is not None:
            try:
                kind.after(self.wb, job_id)
            except Exception:
                log.exception("the follow-up of job %s failed", job_id)
        self._notify()
        self.poke()

    def _settle(self, s: Session, job: Job, outcome: Outcome) -> None:
        job.returncode = outcome.returncode
        job.finished_at = utcnow()
        if job.progress_path:
            tail = ProgressTail(Path(job.progress_path))
            tail.poll()
            job.progress = summarise(tail.records)
        if job.result_path and Path(job.result_path).is_file():
            try:
                job.result = json.loads(Path(job.result_path).read_text())
            except (OSError, ValueError):
                job.result = {"unreadable": job.result_path}
        kind = self._kinds.get(job.kind)
        try:
            if kind is None:
                raise RuntimeError(f"no handler for job kind {job.kind!r}")
            kind.finish(self.wb, s, job, outcome)
            s.add(job)
            s.commit()
        except Exception as e:
            log.exception("the finish step of job %s failed", job.id)
            s.rollback()
            job = s.get(Job, job.id)
            job.status = "failed"
            job.returncode = outcome.returncode
            job.finished_at = utcnow()
            job.error = f"the job ended but recording its result failed: {type(e).__name__}: {e}"
            s.add(job)
            s.commit()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- control -------------------------------------------------------------
    def cancel(self, job_id: int) -> Job:
        """Queued jobs are dropped before they start; running ones get their kind's stop signal."""
        job = self.get(job_id)
        if self._claim(job_id, ("queued", "starting"), status="cancelled", finished_at=utcnow()):
            self._secret_env.pop(job_id, None)
            self._notify()
            return self.get(job_id)
        job = self.get(job_id)
        if job.status != "running":
            raise Conflict(f"job {job.title or job.id} is {job.status}, not running")
        self._claim(job_id, ("running",), cancel_requested=True)
        signal_tree(job.pid, self.kind(job.kind).cancel_signal if job.kind in self._kinds else signal.SIGTERM)
        return self.get(job_id)

    def wait(self, job_id: int, timeout: float = 600.0) -> Job:
        """Block until the job has finished (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.status in FINISHED:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {job.title or job.id} still {job.status} after {timeout:.0f}s")
            with self._changed:
                self._changed.wait(timeout=min(left, 0.5))

    def progress(self, job: Job) -> ProgressTail:
        """The job's progress records, read incrementally across calls."""
        path = Path(job.progress_path) if job.progress_path else None
        tail = self._tails.get(job.id)
        if tail is None or tail.path != path:  # SQLite may reuse a deleted job's id
            tail = self._tails[job.id] = ProgressTail(path)
        tail.poll()
        return tail

    def view(self, job: Job, log_lines: int = 15, tail: ProgressTail | None = None) -> dict[str, Any]:
        """What a live view shows for any job: status, progress, ETA, log tail, error
        (``tail``: the job's progress, when the caller has just polled it)."""
        tail = tail or self.progress(job)
        last = tail.last or {}
        percent = last.get("percentage", 100.0 if job.status == "succeeded" else 0.0)
        return {
            "job_id": job.id, "kind": job.kind, "title": job.title, "status": job.status,
            "percent": float(percent), "step": last.get("current_steps", 0),
            "total_steps": last.get("total_steps", 0), "elapsed": last.get("elapsed_time", ""),
            "eta": last.get("remaining_time", ""), "log": log_tail(Path(job.log_path), log_lines),
            "stage": last.get("status", ""),  # what a Python job says it is doing, if it says
            "error": job.error, "result": job.result,
        }
