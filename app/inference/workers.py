"""The worker pool: every local model is served by a process of its own.

A worker (``worker_main``) loads one registered version and answers over the OpenAI
chat API on a localhost port; the app reaches it like any other server, so two models
answer in parallel without sharing an interpreter, a GPU allocator or a set of CPU
threads. The pool places workers (a GPU and a share of its memory, or CPU threads),
bounds how many run at once, stops the least recently used one to make room (process
exit is what really frees memory), restarts one that crashed and stops the ones it owns
when its process ends.

Workers are rows in the ``model_workers`` table, so the app and its job processes
(evaluations, judges, Self-Instruct) share them, and an app that restarts finds the
workers it left: it adopts the healthy ones and clears the rest. Every use checks that
the worker still answers ``/v1/models`` with the name of the version it was started
for, so a port reused by something else is never taken for the model.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.core.errors import EngineError, InvalidInput, NotFound
from app.core.jobs import ROOT, _alive, signal_tree
from app.core.settings import WORKER_SETTINGS_ENV, Settings
from app.core.tables import ModelVersion, ModelWorker, utcnow
from app.inference.generation import Finish, GenSettings
from app.inference.placement import (
    GIB,
    GpuSlot,
    Placed,
    Placement,
    largest_free,
    place_on_gpu,
    threads_per_worker,
    worker_bytes,
)
from app.models.registry import WORKER_BACKENDS, check_model_files, model_system_prompt

if TYPE_CHECKING:
    from app.core.workbench import Workbench

READY_TIMEOUT_S = 600.0  # loading a large model from a slow disk
STOP_GRACE_S = 10.0
CHECK_TIMEOUT_S = 5.0
MONITOR_EVERY_S = 10.0
MAX_RESTARTS = 3  # crash restarts in a row before the pool gives up on a worker
IDLE_MARK = "idle for"  # worker_main's last log line when it stopped by itself


def weights_bytes(mv: ModelVersion) -> int:
    """Weights on disk approximate memory once loaded (same dtype); Hub ids count as 0."""
    total = 0
    for folder in [mv.base_path, *filter(None, (mv.adapter_path or "").split(","))]:
        p = Path(folder)
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.glob("*.safetensors"))
            total += sum(f.stat().st_size for f in p.glob("*.bin"))
    return total


def served_name(mv: ModelVersion) -> str:
    """The model name a worker answers to: the version's id and a fingerprint of what it
    loads, so a worker for another version (or the same id with other files) never passes."""
    key = "|".join([str(mv.id), mv.base_path, mv.adapter_path or "", mv.template])
    return f"forgeloop-{mv.id}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def choose_backend(mv: ModelVersion, on_gpu: bool) -> str:
    """The version's own choice (meta["worker_backend"]), else vLLM or SGLang on a GPU where
    installed, else LLaMA-Factory's huggingface backend."""
    wanted = (mv.meta or {}).get("worker_backend") or "auto"
    if wanted not in WORKER_BACKENDS:
        raise InvalidInput(f"unknown worker backend {wanted!r} (choose from {', '.join(WORKER_BACKENDS)})")
    if wanted != "auto":
        if wanted != "huggingface" and (not on_gpu or importlib.util.find_spec(wanted) is None):
            raise InvalidInput(f"model {mv.name!r} asks for the {wanted} backend, which needs a GPU "
                               f"and the {wanted} package")
        return wanted
    for backend in ("vllm", "sglang"):
        if on_gpu and importlib.util.find_spec(backend) is not None:
            return backend
    return "huggingface"


def lf_args(mv: ModelVersion, backend: str, placement: Placement) -> dict[str, Any]:
    """LLaMA-Factory's model arguments for the worker's ChatModel."""
    args: dict[str, Any] = {"model_name_or_path": mv.base_path, "template": mv.template,
                            "infer_backend": backend, "trust_remote_code": False}
    if mv.adapter_path:
        args.update(adapter_name_or_path=mv.adapter_path, finetuning_type="lora")
    if backend == "vllm" and placement.memory_fraction:
        args["vllm_gpu_util"] = placement.memory_fraction  # not LLaMA-Factory's 0.7 default
    if backend == "sglang" and placement.memory_fraction:
        args["sglang_mem_fraction"] = placement.memory_fraction
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: str, lines: int = 6) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class WorkerEngine:
    """A local model's engine: the OpenAI-compatible client of its worker. A failure is
    explained by the pool (a crashed worker says so and is restarted)."""

    def __init__(self, pool: WorkerPool, mv: ModelVersion, row: ModelWorker) -> None:
        from app.inference.remote_engines import OpenAIEngine

        self.pool, self.mv, self.row = pool, mv, row
        self.system_prompt = model_system_prompt(mv)
        self.http = OpenAIEngine(f"http://127.0.0.1:{row.port}/v1", row.served_name, timeout=600.0,
                                 system_prompt=self.system_prompt)

    def system_for(self, gen: GenSettings) -> str | None:
        """The system prompt sent: the request's, else the model's; None lets LLaMA-Factory
        use the template's default, as in training."""
        return gen.system_prompt or self.system_prompt or None

    def stream(self, messages: list[dict[str, str]], gen: GenSettings) -> Iterator[str | Finish]:
        self.pool.touch(self.row)
        try:
            yield from self.http.stream(messages, gen)
        except EngineError as exc:
            raise self.pool.explain(self.row, self.mv, exc) from exc


class _OthersWorkerGone(Exception):
    """A worker another process started went away while this one waited for it."""


class WorkerPool:
    def __init__(self, settings: Settings, db: Engine, owner: bool = False) -> None:
        """``owner``: the app's pool, which adopts the workers an earlier app left, watches
        them and restarts crashed ones; job processes only use and stop their own."""
        self.settings, self.db = settings, db
        self.dir = settings.home / "workers"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Our own child processes by pid (row ids are reused once a row is deleted; pids are
        # checked against their start time).
        self._children: dict[int, subprocess.Popen] = {}
        self._closed = threading.Event()
        self._monitor: threading.Thread | None = None
        if owner:
            self.adopt()
            self._monitor = threading.Thread(target=self._watch, name="worker-monitor", daemon=True)
            self._monitor.start()

    @classmethod
    def for_job_process(cls) -> WorkerPool:
        """The pool as seen from a job process (the app's settings, passed by the job runner)."""
        from app.core.db import make_engine

        raw = os.environ.get(WORKER_SETTINGS_ENV)
        settings = Settings(**json.loads(raw)) if raw else Settings()
        return cls(settings, make_engine(settings.db_url))

    # -- bookkeeping -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self) -> Iterator[Session]:
        """One decision at a time across the app and its job processes (never nested)."""
        with self._lock, open(self.dir / "pool.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                with Session(self.db, expire_on_commit=False) as s:
                    yield s
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def rows(self) -> list[ModelWorker]:
        with Session(self.db, expire_on_commit=False) as s:
            return list(s.exec(select(ModelWorker).order_by(ModelWorker.id)))

    def _alive(self, row: ModelWorker) -> bool:
        child = self._children.get(row.pid or 0)
        if child is not None and child.poll() is not None:  # reaps our own child
            return False
        return _alive(row.pid, row.pid_started)

    def _answers(self, row: ModelWorker) -> str | None:
        """The worker's state from outside: "ready" (serves this model), "wrong" (something
        else answers on its port) or None (not answering yet)."""
        try:
            resp = httpx.get(f"http://127.0.0.1:{row.port}/v1/models", timeout=CHECK_TIMEOUT_S)
            ids = [m.get("id") for m in resp.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return "ready" if row.served_name in ids else "wrong"

    def health(self, row: ModelWorker) -> dict[str, Any] | None:
        try:
            return httpx.get(f"http://127.0.0.1:{row.port}/health", timeout=CHECK_TIMEOUT_S).json()
        except (httpx.HTTPError, ValueError):
            return None

    def touch(self, row: ModelWorker) -> None:
        with contextlib.suppress(Exception), Session(self.db) as s:  # bookkeeping only
            found = s.get(ModelWorker, row.id)
            if found is not None:
                found.last_used_at = utcnow()
                s.add(found)
                s.commit()

    def _forget(self, s: Session, row: ModelWorker) -> None:
        """Delete the row of this worker process (not of a later one that reused the id)."""
        found = s.get(ModelWorker, row.id)
        if found is not None and found.pid == row.pid:
            s.delete(found)
            s.commit()
        self._children.pop(row.pid or 0, None)

    def _kill(self, row: ModelWorker) -> None:
        """Stop the process and wait until it is gone (its memory with it)."""
        if not self._alive(row):
            return
        signal_tree(row.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while self._alive(row) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._alive(row):
            signal_tree(row.pid, signal.SIGKILL)
            while self._alive(row) and time.monotonic() < deadline + STOP_GRACE_S:
                time.sleep(0.1)

    def _stop(self, s: Session, row: ModelWorker) -> None:
        self._kill(row)
        self._forget(s, row)

    # -- using a model -----------------------------------------------------------------------------

    def engine(self, mv: ModelVersion) -> WorkerEngine:
        return WorkerEngine(self, mv, self.ensure(mv))

    def ensure(self, mv: ModelVersion) -> ModelWorker:
        """The ready worker for ``mv``, started (and room made for it) if need be."""
        if mv.id is None:
            raise InvalidInput("only a registered model can be served by a worker")
        check_model_files(mv)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                return self._ensure_once(mv, deadline)
            except _OthersWorkerGone:  # its starter (another job) stopped it: start our own
                continue

    def _ensure_once(self, mv: ModelVersion, deadline: float) -> ModelWorker:
        with self._guard() as s:
            row = s.exec(select(ModelWorker).where(ModelWorker.model_id == mv.id)).first()
            if row is not None and row.served_name != served_name(mv):
                self._stop(s, row)  # the version's files changed under it
                row = None
            if row is not None and not self._alive(row):
                self._forget(s, row)
                row = None
            if row is not None and row.state == "ready":
                if self._answers(row) != "wrong":  # None: busy; a dead one is explained on use
                    self.touch(row)
                    return row
                self._stop(s, row)  # something else answers on its port
                row = None
            if row is None:
                row = self._start(s, mv)
        return self._wait_ready(row, mv, deadline)

    def _wait_ready(self, row: ModelWorker, mv: ModelVersion, deadline: float) -> ModelWorker:
        while True:
            if not self._alive(row):
                with self._guard() as s:
                    self._forget(s, row)
                if row.pid not in self._children and time.monotonic() < deadline:
                    raise _OthersWorkerGone(row.pid)
                tail = log_tail(row.log_path)
                raise EngineError(f"the worker for {mv.name!r} stopped while loading the model"
                                  + (f":\n{tail}" if tail else ""))
            state = self._answers(row)
            if state == "ready":
                with Session(self.db, expire_on_commit=False) as s:
                    found = s.get(ModelWorker, row.id)
                    if found is None or found.pid != row.pid:
                        raise EngineError(f"the worker for {mv.name!r} was stopped while it loaded")
                    found.state, found.last_used_at = "ready", utcnow()
                    s.add(found)
                    s.commit()
                    s.refresh(found)
                    return found
            if state == "wrong" or time.monotonic() > deadline:
                with self._guard() as s:
                    self._stop(s, row)
                why = ("another program answers on its port" if state == "wrong"
                       else f"it did not answer within {READY_TIMEOUT_S:.0f} s")
                raise EngineError(f"the worker for {mv.name!r} could not start: {why}")
            time.sleep(0.25)

    def _gpus(self) -> list[GpuSlot]:
        from app.core.hardware import detect

        allowed = self.settings.worker_gpu_indexes
        return [GpuSlot(g.index, g.memory_total_mib * 2**20, g.memory_used_mib * 2**20)
                for g in detect().gpus if allowed is None or g.index in allowed]

    def _busy(self, row: ModelWorker) -> bool:
        status = self.health(row)
        return bool(status and status.get("in_flight"))

    def _evict_one(self, s: Session, live: list[ModelWorker], why: str) -> None:
        """Stop the least recently used worker that is not answering anyone."""
        for row in sorted(live, key=lambda r: r.last_used_at):
            if not self._busy(row):
                self._stop(s, row)
                live.remove(row)
                return
        raise EngineError(f"{why}, and every running model is answering someone: try again when one "
                          "is done, or raise max_workers")

    def _place(self, s: Session, mv: ModelVersion) -> tuple[Placement, str, int]:
        live = [r for r in s.exec(select(ModelWorker)) if r.model_id != mv.id]
        limit = max(1, self.settings.max_workers)
        while len(live) >= limit:
            self._evict_one(s, live, f"{limit} models are already loaded (max_workers)")
        threads = threads_per_worker(os.cpu_count() or 1, limit, self.settings.worker_threads)
        weights = weights_bytes(mv)
        gpus = self._gpus()
        if gpus:
            backend = choose_backend(mv, on_gpu=True)
            need = worker_bytes(weights, backend)
            while (spot := place_on_gpu(gpus, need, self._placed(live))) is None:
                if not [r for r in live if r.gpu is not None]:
                    raise EngineError(
                        f"not enough GPU memory for {mv.name!r}: it needs about {need / GIB:.1f} GiB, the "
                        f"most any GPU has free is {largest_free(gpus, self._placed(live)) / GIB:.1f} GiB")
                self._evict_one(s, [r for r in live if r.gpu is not None], "the GPUs are full")
                live = [r for r in s.exec(select(ModelWorker)) if r.model_id != mv.id]
                gpus = self._gpus()  # the stopped worker's memory is free now
            return Placement(spot[0], spot[1], threads), backend, need
        backend = choose_backend(mv, on_gpu=False)
        need = worker_bytes(weights, backend)
        budget = self.settings.worker_memory_gib * GIB
        # One model always loads, even over the budget (as a single chat would).
        while live and sum(r.memory_bytes for r in live) + need > budget:
            self._evict_one(s, live, f"the model workers' memory budget ({budget / GIB:g} GiB) is used")
        return Placement(None, None, threads), backend, need

    @staticmethod
    def _placed(live: list[ModelWorker]) -> list[Placed]:
        return [Placed(r.gpu, r.memory_bytes) for r in live if r.gpu is not None]

    def _start(self, s: Session, mv: ModelVersion) -> ModelWorker:
        if self._closed.is_set():  # a late restart must not outlive the pool
            raise EngineError("the model workers are shutting down")
        placement, backend, need = self._place(s, mv)
        port = free_port()
        name = served_name(mv)
        idle_s = self.settings.worker_idle_minutes * 60
        config = {"served_name": name, "port": port, "host": "127.0.0.1", "threads": placement.threads,
                  "memory_fraction": placement.memory_fraction, "idle_s": idle_s or None,
                  "lf_args": lf_args(mv, backend, placement)}
        config_path = self.dir / f"model-{mv.id}.json"
        config_path.write_text(json.dumps(config, indent=1))
        log_path = self.dir / f"model-{mv.id}.log"
        env = dict(os.environ)
        env.update(self.settings.job_env)
        env["CUDA_VISIBLE_DEVICES"] = "" if placement.gpu is None else str(placement.gpu)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(placement.threads)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(log_path, "ab") as log:
            log.write(f"\n== {datetime.now(UTC).isoformat(timespec='seconds')} starting {name}\n".encode())
            log.flush()
            proc = subprocess.Popen([sys.executable, "-m", "app.inference.worker_main", str(config_path)],
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
        import psutil

        try:
            started = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            started = None
        row = ModelWorker(model_id=mv.id, served_name=name, port=port, pid=proc.pid, pid_started=started,
                          owner_pid=os.getpid(), backend=backend, gpu=placement.gpu,
                          memory_fraction=placement.memory_fraction, memory_bytes=need,
                          threads=placement.threads, log_path=str(log_path))
        s.add(row)
        s.commit()
        s.refresh(row)
        self._children[proc.pid] = proc
        return row

    # -- failures ----------------------------------------------------------------------------------

    def explain(self, row: ModelWorker, mv: ModelVersion, exc: EngineError) -> EngineError:
        """A clear message for a failed answer; a crashed worker is restarted in the background."""
        if self._alive(row):
            return exc
        tail = log_tail(row.log_path, 3)
        with self._guard() as s:
            self._forget(s, row)
        threading.Thread(target=self._restart, args=(mv,), daemon=True).start()
        last = tail.splitlines()[-1] if tail else "no log line"
        return EngineError(f"the worker serving {mv.name!r} stopped unexpectedly ({last}); it is being "
                           "restarted: send the message again in a moment")

    def _restart(self, mv: ModelVersion) -> None:
        with contextlib.suppress(Exception):  # the next request reports what goes wrong
            self.ensure(mv)

    def _watch(self) -> None:
        """Restart crashed workers, clear the rows of those that stopped when idle."""
        while not self._closed.wait(MONITOR_EVERY_S):
            with contextlib.suppress(Exception):
                self.check()

    def check(self) -> list[int]:
        """One health pass: rows of dead workers go; crashed ones (not idle-stopped) restart.
        The model ids restarted."""
        restarted = []
        for row in self.rows():
            if self._alive(row) or row.state != "ready":
                continue
            tail = log_tail(row.log_path, 1)
            with self._guard() as s:
                self._forget(s, row)
            if IDLE_MARK in tail or row.restarts >= MAX_RESTARTS:
                continue
            with Session(self.db) as s:
                mv = s.get(ModelVersion, row.model_id)
            if mv is None:
                continue
            try:
                fresh = self.ensure(mv)
            except Exception:  # noqa: BLE001 - recorded on the next try
                continue
            self._record_restart(fresh, row.restarts + 1, tail)
            restarted.append(mv.id)
        return restarted

    def _record_restart(self, row: ModelWorker, restarts: int, why: str) -> None:
        with Session(self.db) as s:
            found = s.get(ModelWorker, row.id)
            if found is not None and found.pid == row.pid:
                found.restarts, found.last_error = restarts, why[-500:] or None
                s.add(found)
                s.commit()

    # -- lifecycle ---------------------------------------------------------------------------------

    def adopt(self) -> dict[str, list[int]]:
        """After an app restart: keep the workers that still serve their model, clear the rest."""
        kept, cleared = [], []
        with self._guard() as s:
            for row in s.exec(select(ModelWorker)).all():
                owner_alive = row.owner_pid not in (None, os.getpid()) and _alive(row.owner_pid, None)
                if owner_alive:
                    continue  # a job process's worker, still in use
                mv = s.get(ModelVersion, row.model_id)
                if (self._alive(row) and mv is not None and row.served_name == served_name(mv)
                        and self._answers(row) == "ready"):
                    row.owner_pid, row.state = os.getpid(), "ready"
                    s.add(row)
                    s.commit()
                    kept.append(row.model_id)
                else:
                    self._stop(s, row)
                    cleared.append(row.model_id)
        return {"adopted": kept, "cleared": cleared}

    def unload(self, model_id: int) -> bool:
        """Stop the worker serving ``model_id``; False when none runs."""
        with self._guard() as s:
            row = s.exec(select(ModelWorker).where(ModelWorker.model_id == model_id)).first()
            if row is None:
                return False
            self._stop(s, row)
        return True

    def stop_all(self, only_own: bool = True, spare_busy: bool = False) -> None:
        with self._guard() as s:
            for row in s.exec(select(ModelWorker)).all():
                if only_own and row.owner_pid != os.getpid():
                    continue
                if spare_busy and self._alive(row) and self._busy(row):
                    continue  # another process is mid-answer; it exits by itself once idle
                self._stop(s, row)

    def close(self) -> None:
        """Stop the workers this process started or adopted, except those answering another
        process right now (a job that shares a model with another job may end first)."""
        self._closed.set()
        self.stop_all(only_own=True, spare_busy=True)
        if self._monitor is not None:
            self._monitor.join(timeout=1)

    # -- status ------------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every worker: its model, where it runs, memory, speed of its last answers."""
        out = []
        with Session(self.db) as s:
            names = {m.id: m.name for m in s.exec(select(ModelVersion))}
        for row in self.rows():
            alive = self._alive(row)
            live = self.health(row) if alive and row.state == "ready" else None
            out.append({
                "model_id": row.model_id, "model": names.get(row.model_id, f"#{row.model_id}"),
                "state": row.state if alive else "stopped",
                "device": "cpu" if row.gpu is None else f"cuda:{row.gpu}",
                "backend": row.backend, "threads": row.threads, "memory_fraction": row.memory_fraction,
                "planned_bytes": row.memory_bytes, "pid": row.pid, "port": row.port,
                "rss_bytes": (live or {}).get("rss_bytes"), "gpu_bytes": (live or {}).get("gpu_bytes"),
                "tokens_per_s": (live or {}).get("tokens_per_s"), "requests": (live or {}).get("requests"),
                "in_flight": (live or {}).get("in_flight"), "idle_s": (live or {}).get("idle_s"),
                "restarts": row.restarts, "last_error": row.last_error,
                "started_at": row.started_at.isoformat() if row.started_at else None,
                "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            })
        return out


def worker_pool(wb: Workbench) -> WorkerPool:
    """The workbench's pool (the app's own: it adopts, watches and restarts workers)."""
    return wb.service(WorkerPool, lambda w: WorkerPool(w.settings, w.engine, owner=True))


def load_model(wb: Workbench, model_id: int) -> dict[str, Any]:
    """Start (or keep) the worker for a local model; its status row."""
    from app.models.registry import get_model

    mv = get_model(wb, model_id)
    if mv.kind in ("ollama", "openai"):
        raise InvalidInput(f"model {mv.name!r} is served elsewhere; only local models get a worker")
    worker_pool(wb).ensure(mv)
    return worker_status(wb, model_id)


def unload_model(wb: Workbench, model_id: int) -> dict[str, Any]:
    if not worker_pool(wb).unload(model_id):
        raise NotFound(f"no worker is serving model {model_id}")
    return {"model_id": model_id, "unloaded": True}


def worker_status(wb: Workbench, model_id: int | None = None) -> Any:
    rows = worker_pool(wb).status()
    if model_id is None:
        return rows
    for row in rows:
        if row["model_id"] == model_id:
            return row
    raise NotFound(f"no worker is serving model {model_id}")
